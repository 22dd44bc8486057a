"""The runtime's task memory: the tree in the store, semantic recall, browsing.

`RuntimeMemory` holds the task memory tree (`memory.tree.TaskTree`, in the runtime's
store) and, when given a directory, the recall index (`memory.recall.TaskRecall`,
ChromaDB in DATA_DIR/recall with local embeddings). Everything that touches the index —
opening it (chromadb is imported then, never by the light commands), indexing finished
requests, searching — runs on one worker thread of its own, so the event loop never
waits for an embedding and ChromaDB is used by one thread at a time.

The runtime records runs into the tree (`agents.remember.MemoryRecorder`) and calls
`index_soon` when a request was consolidated; the planner calls `recall` for a request's
nearest past plans; front ends browse with `search`, `show` and `forget` (the runtime's
`memory_*` methods). Without a recall directory, or when the index cannot be used (a
missing model package, a read-only directory), recall finds nothing and says why once in
the log, and `search` raises `RecallUnavailable`; the tree is kept either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agents.constellation import Constellation
from agents.estimates import fill_estimates
from app.control.messages import (
    MemoryHit,
    MemoryNodeInfo,
    MemoryRevisionInfo,
    MemoryTree,
)
from memory import Store, StoreError
from memory.errors import RecallUnavailable
from memory.tree import RequestTree, TaskTree

if TYPE_CHECKING:
    from memory.recall import Recollection, TaskRecall

log = logging.getLogger("orrery.memory")

T = TypeVar("T")

RECALL_DIR = "recall"
PLAN_RECALL_LIMIT = 8
"""How many remembered requests the planner looks at (it keeps the best few)."""


class RuntimeMemory:
    """See the module docstring. Close it with `aclose` (the runtime does)."""

    def __init__(self, store: Store, recall_dir: Path | None = None) -> None:
        self.tree = TaskTree(store)
        self.recall_dir = recall_dir
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="orrery-recall"
        )
        self._recall: TaskRecall | None = None
        self._unavailable: RecallUnavailable | None = None
        self._jobs: set[concurrent.futures.Future[object]] = set()
        self._planned_from: dict[str, str] = {}
        self._closed = False

    # -- the recall index, on the worker thread -------------------------------------------------

    def _index(self) -> TaskRecall:
        """The recall index (worker thread only); `RecallUnavailable` if there is none."""
        if self._recall is not None:
            return self._recall
        if self._unavailable is not None:
            raise self._unavailable
        if self.recall_dir is None:
            self._unavailable = RecallUnavailable(
                "this runtime has no recall index (it was built without a data directory)"
            )
            raise self._unavailable
        try:
            from memory.recall import TaskRecall

            self._recall = TaskRecall(self.tree, self.recall_dir)
        except RecallUnavailable as exc:
            self._unavailable = exc
            log.warning("recall is off: %s", exc)
            raise
        except ImportError as exc:
            self._unavailable = RecallUnavailable(
                f"recall needs chromadb ({exc}); reinstall Orrery (`make test`)"
            )
            log.warning("recall is off: %s", self._unavailable)
            raise self._unavailable from None
        return self._recall

    def _submit(self, work: Callable[[], T]) -> concurrent.futures.Future[T]:
        future = self._worker.submit(work)
        self._jobs.add(future)  # type: ignore[arg-type]
        future.add_done_callback(self._jobs.discard)
        return future

    async def _run(self, work: Callable[[], T]) -> T:
        if self._closed:
            raise RecallUnavailable("the task memory is closed")
        return await asyncio.wrap_future(self._submit(work))

    def index_soon(self) -> None:
        """Bring the recall index up to the tree on the worker thread (a request was
        consolidated, or the runtime starts with requests left to index)."""
        if self._closed or self.recall_dir is None or self._unavailable is not None:
            return

        def catch_up() -> None:
            try:
                self._index().catch_up()
            except StoreError as exc:
                log.warning("recall indexing failed: %s", exc)

        self._submit(catch_up)

    def index_if_behind(self) -> None:
        """`index_soon`, if some finished request is not indexed yet (a cheap query)."""
        try:
            behind = bool(self.tree.to_index(limit=1))
        except StoreError as exc:
            log.warning("cannot read the task memory: %s", exc)
            return
        if behind:
            self.index_soon()

    # -- for the planner ------------------------------------------------------------------------

    async def recall(self, request: str) -> list[Recollection]:
        """The remembered requests nearest to `request` (none if recall is off)."""
        recall_dir = self.recall_dir
        if recall_dir is None or self._unavailable is not None:
            return []

        def search() -> list[Recollection]:
            if self._recall is None and not (recall_dir / "chroma.sqlite3").exists():
                return []  # nothing indexed yet: do not load chromadb and the model for it
            return self._index().search(request, PLAN_RECALL_LIMIT)

        try:
            return await self._run(search)
        except StoreError as exc:
            log.warning("recall failed, planning without memory: %s", exc)
            return []

    def note_plan(self, constellation_id: str, request_id: str) -> None:
        """The planner made `constellation_id` from the memory of `request_id`."""
        self._planned_from[constellation_id] = request_id

    def planned_from(self, constellation_id: str) -> str | None:
        return self._planned_from.pop(constellation_id, None)

    def fill_estimates(self, constellation: Constellation) -> dict[str, float]:
        """Give stars without an estimate their tool's remembered run time."""
        tools = {star.effective_tool for star in constellation.stars.values()}
        try:
            durations = self.tree.durations(tools)
        except StoreError as exc:
            log.warning("c=%s no estimates from memory: %s", constellation.id, exc)
            return {}
        filled = fill_estimates(constellation, durations)
        if filled:
            log.info("c=%s estimates from memory: %s", constellation.id, filled)
        return filled

    # -- browsing -------------------------------------------------------------------------------

    async def search(self, text: str, limit: int) -> list[Recollection]:
        """Remembered requests nearest in meaning to `text`; `RecallUnavailable` if
        recall cannot be used here."""
        return await self._run(lambda: self._index().search(text, limit))

    async def show(self, wanted: str) -> RequestTree:
        """One request's tree (`UnknownMemory` if none): an id, a prefix, a constellation."""

        def read() -> RequestTree:
            return self.tree.tree(self.tree.resolve(wanted))

        return await asyncio.to_thread(read)

    async def forget(self, wanted: str) -> tuple[str, bool]:
        """Take a request out of recall: (its id, whether it was remembered before)."""
        request_id = await asyncio.to_thread(self.tree.resolve, wanted)

        def forget() -> bool:
            record = self.tree.request(request_id)
            self.tree.forget(request_id)  # search never returns it from now on
            if self.recall_dir is not None and self._unavailable is None:
                try:
                    self._index().catch_up()  # and the index drops it (if this one writes)
                except StoreError as exc:
                    log.warning(
                        "the recall index keeps %s until it can catch up: %s", request_id, exc
                    )
            return record is not None and not record.forgotten

        return request_id, await self._run(forget)

    # -- lifecycle ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Finish what is queued (indexing the last runs), then close the index."""
        if self._closed:
            return
        self._closed = True
        pending = list(self._jobs)
        if pending:
            await asyncio.wait([asyncio.wrap_future(job) for job in pending])

        def close() -> None:
            if self._recall is not None:
                self._recall.close()

        await asyncio.wrap_future(self._worker.submit(close))
        self._worker.shutdown(wait=False)


# ------------------------------------------------------------------------------ replies


def memory_hit(found: Recollection) -> MemoryHit:
    """A recalled request as the interface shows it."""
    record = found.request
    summary = record.summary or {}
    plan = summary.get("plan") or {}
    stars = [
        {
            "id": star.get("id"),
            "title": star.get("title", ""),
            "tool": star.get("tool") or "agent.do",
            "on": _device_of(star.get("on")),
            "after": star.get("after") or [],
        }
        for star in plan.get("stars") or []
        if isinstance(star, dict)
    ]
    failures = [f for f in summary.get("failures") or [] if isinstance(f, dict)]
    return MemoryHit(
        request=record.id,
        similarity=found.similarity,
        text=record.text,
        status=record.status,
        source=record.source,
        created_at=record.created_at,
        finished_at=record.finished_at,
        constellation=record.constellation_id,
        plan=stars,
        outcome=outcome_words(summary, record.status),
        failures=len(failures),
        repaired=sum(1 for f in failures if f.get("repaired")),
        fleet=[str(d.get("name")) for d in summary.get("fleet") or [] if isinstance(d, dict)],
    )


def outcome_words(summary: dict[str, Any], status: str) -> str:
    """`succeeded`, or `failed at s2 (fs.write): timed out`."""
    outcome = summary.get("outcome") or {}
    failed = outcome.get("failed_star")
    if status == "succeeded" or not failed:
        return status
    tools = {
        star.get("id"): star.get("tool")
        for star in (summary.get("plan") or {}).get("stars") or []
        if isinstance(star, dict)
    }
    tool = f" ({tools[failed]})" if tools.get(failed) else ""
    return f"{status} at {failed}{tool}: {outcome.get('error') or status}"


def memory_tree(tree: RequestTree) -> MemoryTree:
    """A request's memory tree as the interface shows it."""
    record = tree.request
    return MemoryTree(
        id="",
        request=record.id,
        text=record.text,
        status=record.status,
        source=record.source,
        created_at=record.created_at,
        finished_at=record.finished_at,
        constellation=record.constellation_id,
        forgotten=record.forgotten,
        summary=record.summary,
        nodes=[
            MemoryNodeInfo(
                id=node.id,
                kind=node.kind,
                parent=node.parent_id,
                name=node.name,
                status=node.status,
                inputs=node.inputs,
                output=node.output,
                created_at=node.created_at,
                started_at=node.started_at,
                finished_at=node.finished_at,
                revision=node.revision,
                stale=node.stale,
                revisions=[
                    MemoryRevisionInfo(revision=r.revision, ts=r.ts, kind=r.kind, detail=r.detail)
                    for r in tree.revisions.get(node.id, [])
                ],
            )
            for node in tree.nodes
        ],
    )


def _device_of(on: Any) -> str:
    if isinstance(on, str):
        return on
    if isinstance(on, dict):
        if isinstance(on.get("name"), str):
            return str(on["name"])
        if on.get("labels"):
            return "labels " + ",".join(str(label) for label in on["labels"])
    return "any"
