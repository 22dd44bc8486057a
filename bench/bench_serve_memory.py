"""Does a long-running `orrery serve` hold a steady resident memory? N requests in words.

A real `orrery serve` process (the embedded default planner model, task memory and recall
on) with two real `orrery device` processes, `laptop` and `nas` (label linux; their
shell.run and python.run inside bubblewrap without network, their files in their own
temporary workspaces), on 127.0.0.1. A client submits `--requests` requests in words
through the control API, one after the other, each waiting for its run to end, and reads
the server's resident memory (VmRSS of /proc/PID/status) after each. The requests come
from 14 templates (collect, write, copy, check, count, find ... on one device, on both,
from one to the other; about half need a command or a tool choice from the model), each
with its own file name or number, so each is planned anew (none is the same request as
one before: memory may show similar ones, never reuse them).

The model's prefix cache and the recall index fill during the first requests, so memory
is compared from the end of `--warmup` requests to the end: flat is the goal.

One line per request (seconds, outcome, the server's RSS), then
`requests=<n> rss_warm_mib=<x> rss_end_mib=<y> growth_mib=<y-x> peak_rss_mib=<z>
succeeded=<k>` (on one line).

Usage: python bench/bench_serve_memory.py [--requests 100] [--warmup 20]
                                          [--max-seconds 3600]

Linux only (it reads /proc); it needs bubblewrap (the README's set-up installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.client import Orrery  # noqa: E402
from tests.e2e.processes import served_fleet  # noqa: E402

POLICY = """\
[sandbox]
mode = "bwrap"
network = false
"""

TEMPLATES = [
    "collect the free disk space of every device and write a summary into disk-{n}.txt on nas",
    "write build {n} finished into a file named status-{n}.txt on laptop",
    "check how much memory is free on nas and save it in mem-{n}.txt on laptop",
    "count the lines of every text file on laptop and write the total into lines-{n}.txt",
    "copy notes.txt from laptop to nas as notes-{n}.txt",
    "list the files in the workspace of nas and write the list into files-{n}.txt on nas",
    "show the uptime of laptop and nas at the same time, then write a report-{n}.txt on laptop",
    "write the hostname of each device into host-{n}.txt on that device",
    "read notes.txt on laptop and write it into copy-{n}.txt on nas",
    "gather the system load of both machines and save it as load-{n}.txt on nas",
    "find the files bigger than {n} KB on laptop and write their names into big-{n}.txt",
    "show the kernel version of laptop and nas and write them into kernel-{n}.txt on nas",
    "count the words of notes.txt on nas and save the count in words-{n}.txt on laptop",
    "print the current date on laptop {n} times and save it in dates-{n}.txt",
]


def rss_mib(pid: int) -> float:
    """The resident memory of process `pid` now, in MiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def requests(count: int) -> Iterator[str]:
    for n in range(count):
        yield TEMPLATES[n % len(TEMPLATES)].format(n=n + 1)


def prepare(data_dir: Path) -> None:
    """A device's policy (bubblewrap, no network) and a notes.txt in its workspace."""
    (data_dir / "workspace").mkdir(parents=True)
    (data_dir / "workspace" / "notes.txt").write_text("one\ntwo\nthree\n")
    (data_dir / "device.toml").write_text(POLICY)


async def drive(
    serve: subprocess.Popen[str], control: str, home: Path, options: argparse.Namespace
) -> int:
    deadline = time.monotonic() + options.max_seconds
    samples: list[float] = []
    succeeded = 0
    print(
        f"serve pid {serve.pid}: rss {rss_mib(serve.pid):.0f} MiB with devices connected",
        flush=True,
    )
    async with Orrery(control, data_dir=home) as client:
        for index, request in enumerate(requests(options.requests), start=1):
            if time.monotonic() > deadline:
                print(f"stopped after {index - 1} requests: --max-seconds passed", flush=True)
                break
            started = time.perf_counter()
            try:
                run = await client.submit(request=request)
                result = await asyncio.wait_for(run.wait(), options.run_timeout)
                outcome = result.status
            except Exception as exc:
                outcome = f"refused: {type(exc).__name__}: {str(exc)[:80]}"
            succeeded += outcome == "succeeded"
            rss = rss_mib(serve.pid)
            samples.append(rss)
            print(
                f"[{index:3d}/{options.requests}] {time.perf_counter() - started:6.1f}s "
                f"rss={rss:6.0f}MiB {outcome:<10} {request}",
                flush=True,
            )
    if len(samples) <= options.warmup:
        print(f"only {len(samples)} requests: not enough past --warmup", file=sys.stderr)
        return 1
    warm, end = samples[options.warmup - 1] if options.warmup else samples[0], samples[-1]
    print(
        f"requests={len(samples)} rss_warm_mib={warm:.0f} rss_end_mib={end:.0f} "
        f"growth_mib={end - warm:.0f} peak_rss_mib={max(samples):.0f} succeeded={succeeded}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=3600)
    parser.add_argument("--run-timeout", type=float, default=300, help="per request")
    options = parser.parse_args()
    if options.requests < 1 or not 0 <= options.warmup < options.requests:
        parser.error("need --requests >= 1 and 0 <= --warmup < --requests")
    if shutil.which("bwrap") is None:
        parser.error("bubblewrap (bwrap) is needed: the devices run commands inside it")
    os.environ.pop("ORRERY_HOME", None)
    with (
        tempfile.TemporaryDirectory(prefix="orrery-bench-serve-") as root,
        served_fleet(Path(root), ("laptop", "nas"), "--labels", "linux", prepare=prepare) as (
            home,
            control,
            serve,
        ),
    ):
        return asyncio.run(drive(serve, control, home, options))


if __name__ == "__main__":
    raise SystemExit(main())
