"""Task memory: how fast runs are recorded, and how fast recall answers at scale.

1. Event append: constellations of 10 stars (a chain and a fan, some attempts failing and
   retried) run on a simulated fleet on a virtual clock, and every event goes to the
   memory recorder (`agents.remember.MemoryRecorder`) writing the tree into a real
   SQLite file (WAL, in a temporary directory). `append_per_s` is events recorded per
   second of the recorder's own time (its buffering, the tree writes and the
   consolidation of each request), beside the events the run produced per second in all.
2. Recall: the memory is filled with N remembered requests (rows in the tree, vectors in
   the persistent ChromaDB index) and `TaskRecall.search` answers 200 new requests, each
   embedded on the spot (all-MiniLM-L6-v2 int8 on one thread), searched in the index
   and joined with the tree: p50 and p95 milliseconds at 10,000 and 100,000 requests.
   The request texts are generated from templates (verb, object, device, detail), all
   different; `--embed` of them (10,000 by default) are embedded for real, and the
   others get the normalised mixture of two of those vectors (embedding 100,000 texts
   one by one would take over ten minutes on two cores; the index and the search do not
   care where a vector came from). `--embed 100000` embeds them all.

The last line is `append_per_s=<x> recall_p95_ms_100k=<y>`; the goal is p95 <= 50 ms at
100,000 requests on a 2-core machine.

Usage: python bench/bench_memory.py [--constellations N] [--sizes 10000,100000]
                                    [--embed N] [--queries N] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agents.clock import VirtualClock
from agents.constellation import Constellation, Line, Star
from agents.events import Event, EventStream
from agents.orchestrator import Orchestrator
from agents.remember import MemoryRecorder
from agents.simulation import Outcome, SimulatedDispatcher, simulated_fleet
from memory import Store
from memory.recall import TaskRecall, pattern_entries, request_entry
from memory.recall_entries import PATTERNS, REQUESTS
from memory.tree import OpenRequest, TaskTree, UpdateRequest
from protocol.tasks import TaskAssignment, TaskOutcome

TOOLS = ["shell.run", "fs.read", "fs.write", "sys.info"]

VERBS = ["copy", "back up", "archive", "list", "compress", "check", "delete", "sync", "move",
         "measure", "report", "collect", "restart", "update", "scan", "count", "find", "clean",
         "rotate", "verify"]  # fmt: skip
OBJECTS = ["the photos", "the logs", "the build folder", "the database dump", "the invoices",
           "the nginx config", "the disk usage", "the home directory", "the test results",
           "the certificates", "the downloads", "the music library", "the sensor readings",
           "the backups", "the mail archive", "the crash reports", "the screenshots",
           "the shared documents", "the temperature data", "the release notes"]  # fmt: skip
DEVICES = ["the laptop", "the nas", "the pi", "web1", "web2", "the vault", "the build server",
           "the imac", "the till", "the gpu box", "the admin pc", "the storage server"]  # fmt: skip
DETAILS = ["every night", "before the weekend", "older than 30 days", "bigger than 1 GB",
           "and email me a summary", "into a dated folder", "and keep seven copies",
           "with a checksum", "if the disk is almost full", "and write the result to a file",
           "as a tarball", "and tell me how long it took", "on Mondays", "for last month",
           "in parallel", "one machine at a time", "quietly", "and compare with yesterday",
           "from both sites", "after the build"]  # fmt: skip
QUERIES = [
    "back up my photos to the NAS",
    "how much space is left on the servers",
    "clean up old log files",
    "run the tests on the build machine",
    "copy the documents folder to the storage box",
    "check that the certificates are not expiring",
    "restart the web servers one by one",
    "collect the temperature readings from the pi",
]


def request_texts(count: int, seed: int) -> list[str]:
    """`count` distinct request texts (verb, object, device, detail, in random order)."""
    combos = [
        (v, o, d, x) for v in VERBS for o in OBJECTS for d in DEVICES for x in DETAILS
    ]  # 96,000 of them; more get a numbered project
    random.Random(seed).shuffle(combos)
    texts = []
    for index in range(count):
        verb, obj, device, detail = combos[index % len(combos)]
        suffix = f" for project {index // len(combos)}" if index >= len(combos) else ""
        texts.append(f"{verb} {obj} on {device} {detail}{suffix}")
    return texts


# --------------------------------------------------------------------------- append


def constellation(index: int) -> Constellation:
    """Ten stars: a chain of four, then a fan of five, then one that joins them."""
    stars = {
        f"s{k}": Star(id=f"s{k}", tool=TOOLS[k % len(TOOLS)], args={"k": k}, title=f"step {k}")
        for k in range(10)
    }
    lines = [Line(source=f"s{k}", target=f"s{k + 1}") for k in range(3)]
    lines += [Line(source="s3", target=f"s{k}") for k in range(4, 9)]
    lines += [Line(source=f"s{k}", target="s9") for k in range(4, 9)]
    for star in stars.values():
        star.retries = 1
    return Constellation(id=f"bench{index:05d}", name=f"bench run {index}", stars=stars,
                         lines=lines)  # fmt: skip


def bench_append(count: int, seed: int, home: Path) -> tuple[int, float, float]:
    """(events, recorder seconds, whole-run seconds) for `count` constellations."""
    rng = random.Random(seed)
    clock = VirtualClock()

    def behave(assignment: TaskAssignment) -> Outcome:
        if assignment.attempt == 1 and rng.random() < 0.1:
            return Outcome(duration=1.0, status=TaskOutcome.FAILED, error="exit 1")
        return Outcome(duration=rng.uniform(0.5, 3.0), output={"stdout": "x" * 200, "exit_code": 0})

    fleet = simulated_fleet(8, tools=TOOLS, max_tasks=4)
    dispatcher = SimulatedDispatcher(clock=clock, fleet=fleet, behaviour=behave)
    events = EventStream()
    orchestrator = Orchestrator(dispatcher, clock=clock, events=events)
    spent = 0.0
    seen = 0
    with Store.open_path(home / "append.db") as store:
        recorder = MemoryRecorder(TaskTree(store), orchestrator.constellation, dispatcher.devices)

        def timed(event: Event) -> None:
            nonlocal spent, seen
            started = time.perf_counter()
            recorder(event)
            spent += time.perf_counter() - started
            seen += 1

        events.listen(timed)
        started = time.perf_counter()
        for index in range(count):
            recorder.note_request(f"bench{index:05d}", f"bench request {index}")
            orchestrator.submit(constellation(index))
            clock.run_until_idle()
        whole = time.perf_counter() - started
        if recorder.failure is not None:
            raise SystemExit(f"recording failed: {recorder.failure}")
    return seen, spent, whole


# --------------------------------------------------------------------------- recall


def summary(text: str, rng: random.Random) -> dict[str, Any]:
    device = rng.choice(["laptop", "nas", "pi", "web1"])
    stars = [
        {"id": f"s{k}", "title": f"step {k}", "tool": rng.choice(TOOLS), "on": {"name": device},
         "args": {}, "after": [f"s{k - 1}"] if k else []}
        for k in range(rng.randint(1, 4))
    ]  # fmt: skip
    return {
        "asked": text,
        "plan": {"name": text[:80], "stars": stars, "lines": []},
        "outcome": {"status": "succeeded", "stars": {}},
        "failures": [],
        "fleet": [{"name": device, "platform": "linux", "labels": [], "tools": TOOLS}],
    }


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Filler:
    """Fills one memory (tree and index) with remembered requests, in steps."""

    def __init__(self, home: Path, texts: list[str], embed: int, seed: int) -> None:
        self.store = Store.open_path(home / "orrery.db")
        self.tree = TaskTree(self.store)
        self.recall = TaskRecall(self.tree, home / "recall")
        if not self.recall.index.try_write():
            raise SystemExit("cannot write the recall index")
        self.texts = texts
        self.embed = embed
        self.rng = random.Random(seed)
        self.done = 0
        self.vectors = np.zeros((0, 384), dtype=np.float32)
        self.seconds_embedding = 0.0
        self.seconds_indexing = 0.0

    def fill_to(self, total: int) -> None:
        embedder = self.recall.index.embedding.embedder
        while self.done < total:
            batch_ids = range(self.done, min(total, self.done + 2000))
            texts = [self.texts[i] for i in batch_ids]
            real = [i for i in batch_ids if i < self.embed]
            started = time.perf_counter()
            parts = []
            if real:
                parts.append(embedder.embed([self.texts[i] for i in real]))
            mixed = len(batch_ids) - len(real)
            if mixed:
                known = self.vectors if len(self.vectors) else parts[0]
                a = known[self.rng.choices(range(len(known)), k=mixed)]
                b = known[self.rng.choices(range(len(known)), k=mixed)]
                weight = np.array([[self.rng.uniform(0.3, 0.7)] for _ in range(mixed)], "f4")
                blend = weight * a + (1 - weight) * b
                parts.append(blend / np.linalg.norm(blend, axis=1, keepdims=True))
            vectors = np.concatenate(parts).astype(np.float32)
            if real:
                self.vectors = np.concatenate([self.vectors, vectors[: len(real)]])
            self.seconds_embedding += time.perf_counter() - started
            started = time.perf_counter()
            operations: list[Any] = []
            for i, text in zip(batch_ids, texts, strict=True):
                rid = f"r-bench{i:07d}"
                operations += [
                    OpenRequest(rid, text, "request"),
                    UpdateRequest(
                        rid, status="succeeded", summary=summary(text, self.rng), finished=True
                    ),
                ]
            self.tree.apply(operations)
            records = self.tree.requests([f"r-bench{i:07d}" for i in batch_ids])
            ordered = [records[f"r-bench{i:07d}"] for i in batch_ids]
            self.recall.index.upsert_vectors(
                REQUESTS, [request_entry(r) for r in ordered], vectors.tolist()
            )
            patterns = [entry for r in ordered[:200] for entry in pattern_entries(r)]
            self.recall.index.upsert(PATTERNS, patterns)  # some star patterns, embedded
            self.tree.mark_indexed([r.id for r in ordered])
            self.seconds_indexing += time.perf_counter() - started
            self.done = batch_ids[-1] + 1

    def close(self) -> None:
        self.recall.close()
        self.store.close()


def measure_recall(
    recall: TaskRecall, queries: int, seed: int
) -> tuple[float, float, float, float, str]:
    """Over `queries` new requests: p50 and p95 ms of a whole search, p50 and p95 ms of
    its embedding alone, and the top hit of the first query. A search is the query's
    embedding and then `search_vector` (the ChromaDB query and the join with the tree),
    which is what `search(text)` does."""
    rng = random.Random(seed)
    asked = [f"{q} {rng.choice(DETAILS)}" for q in QUERIES]
    embedder = recall.index.embedding.embedder
    recall.search(asked[0], 5)  # warm: the model and the index are loaded once
    times, embedding = [], []
    for index in range(queries):
        text = asked[index % len(asked)] + ("" if index < len(asked) else f" #{index}")
        started = time.perf_counter()
        vector = embedder.embed([text])[0]
        embedded = time.perf_counter()
        found = recall.search_vector(vector.tolist(), 5)
        times.append((time.perf_counter() - started) * 1000)
        embedding.append((embedded - started) * 1000)
        assert found, "recall found nothing"
    top = recall.search(QUERIES[0], 1)[0].request.text
    p95 = statistics.quantiles(times, n=20)[18]
    embed_p95 = statistics.quantiles(embedding, n=20)[18]
    return statistics.median(times), p95, statistics.median(embedding), embed_p95, top


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--constellations", type=int, default=300, help="for the append part")
    parser.add_argument("--sizes", default="10000,100000", help="remembered requests")
    parser.add_argument("--embed", type=int, default=10_000, help="texts embedded for real")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    sizes = sorted(int(size) for size in options.sizes.split(","))

    with tempfile.TemporaryDirectory(prefix="orrery-bench-memory-") as home:
        events, spent, whole = bench_append(options.constellations, options.seed, Path(home))
        append_per_s = events / spent
        print(
            f"append: {events} events of {options.constellations} constellations "
            f"(10 stars each, ~10% of first attempts failing), recorder {spent:.2f}s of "
            f"{whole:.2f}s: {append_per_s:,.0f} events/s recorded, "
            f"{events / whole:,.0f} events/s run and recorded",
            flush=True,
        )

        texts = request_texts(max(sizes), options.seed)
        filler = Filler(Path(home), texts, options.embed, options.seed)
        p95_at: dict[int, float] = {}
        try:
            for size in sizes:
                filler.fill_to(size)
                p50, p95, e50, e95, top = measure_recall(
                    filler.recall, options.queries, options.seed
                )
                p95_at[size] = p95
                real = min(size, options.embed)
                print(
                    f"recall at {size:,} requests ({real:,} embedded, {size - real:,} mixed; "
                    f"filling so far: embedding {filler.seconds_embedding:.0f}s, index "
                    f"{filler.seconds_indexing:.0f}s): p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                    f"over {options.queries} searches (embedding the query alone: p50 "
                    f"{e50:.1f} ms, p95 {e95:.1f} ms); nearest to {QUERIES[0]!r}: {top!r}",
                    flush=True,
                )
        finally:
            filler.close()
    largest = max(sizes)
    label = "100k" if largest == 100_000 else f"{largest}"
    print(f"append_per_s={append_per_s:.0f} recall_p95_ms_{label}={p95_at[largest]:.1f}")


if __name__ == "__main__":
    main()
