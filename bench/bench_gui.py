"""Does the constellation view keep the event loop responsive under a busy run?

A 1,000-star constellation (a random DAG, seeded) is shown in the real
`ConstellationView` (its scene, minimap and legend), on the offscreen platform, with a
qasync event loop and garbage collection as the desktop app runs them (what exists
before the constellation is frozen, cycles are collected on the UI thread by
`app.gui.collector.MainThreadCollector`). A coroutine then feeds it a simulated run
at 200 events a second (stars made ready, started on one of four devices, progress
messages, failed attempts that retry, approvals asked and given, stars finished), for
30 s or until the event budget is spent; every 10 s an edit adds stars, and the snapshot
is read again as the window does after `edit.applied`.

Lag is measured by a Qt timer that asks to fire every 10 ms: each time it fires, the
time since the last firing minus 10 ms is how late the loop was. The report gives the
layout time, the time to show the constellation and draw the first frame, the paint
time per frame, the garbage collector's pauses, the worst ticks with the CPU time the
loop's thread used in them (on a busy machine a late tick with little CPU is time spent
waiting for a core) and the load average; its last line is
`max_loop_lag_ms=<x> p99_loop_lag_ms=<y>`.

Usage: python bench/bench_gui.py [--stars 1000] [--rate 200] [--seconds 30]
                     [--events N] [--zoom fit|1.0] [--no-edits] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench the code next to it

import qasync
from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtGui import QPaintEvent
from PySide6.QtWidgets import QApplication

from agents.events import (
    ApprovalGiven,
    ApprovalNeeded,
    AttemptFailed,
    EditApplied,
    Event,
    StarFinished,
    StarProgress,
    StarReady,
    StarStarted,
)
from app.gui.collector import MainThreadCollector
from app.gui.constellation.layout import ConstellationLayout
from app.gui.constellation.view import ConstellationView

CID = "bench-gui"
DEVICES = ("laptop", "build-box", "gpu-rig", "pi")
PROBE_MS = 10


def random_plan(n: int, seed: int) -> tuple[list[str], dict[str, list[str]]]:
    """`n` stars; each after the first has one to three upstream stars among the 30
    before it (long and short lines, many crossings to reduce)."""
    rng = random.Random(seed)
    ids = [f"s{i:04d}" for i in range(n)]
    after: dict[str, list[str]] = {s: [] for s in ids}
    for b in range(1, n):
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            upstream = ids[rng.randrange(max(0, b - 30), b)]
            if upstream not in after[ids[b]]:
                after[ids[b]].append(upstream)
    return ids, after


def snapshot(run: SimulatedRun, version: int) -> dict[str, Any]:
    """The constellation now, as `Snapshot.constellation` carries it (the shape of
    `Constellation.model_dump(mode="json", by_alias=True)`, built directly: what the
    runtime spends serialising is not the view's cost)."""
    stars = {
        s: {
            "id": s,
            "title": f"step {s[1:]}",
            "tool": "shell.run",
            "args": {"cmd": "true"},
            "after": run.after[s],
            "retries": 2,
            "status": run.status[s],
            "attempts": [
                {"number": i + 1, "device": device, "started_at": 0.0, "status": status,
                 "finished_at": None, "error": None}
                for i, (device, status) in enumerate(run.attempts[s])
            ],
            "output": None,
            "error": None,
        }
        for s in run.ids
    }  # fmt: skip
    return {"id": CID, "name": "bench", "version": version, "status": "running",
            "stars": stars, "lines": [], "retry_of": None}  # fmt: skip


class SimulatedRun:
    """A plausible stream of events over a plan: up to `width` stars run at once."""

    def __init__(self, ids: list[str], after: dict[str, list[str]], seed: int, width: int = 40):
        self.rng = random.Random(seed)
        self.ids = ids
        self.after = after
        self.status = dict.fromkeys(ids, "pending")
        self.attempts: dict[str, list[tuple[str, str]]] = {s: [] for s in ids}
        self.width = width
        self.waiting = {s: set(after[s]) for s in ids}
        self.downstream: dict[str, list[str]] = {s: [] for s in ids}
        for s, ups in after.items():
            for u in ups:
                self.downstream[u].append(s)
        self.ready = [s for s in ids if not self.waiting[s]]
        self.status.update(dict.fromkeys(self.ready, "ready"))
        self.running: dict[str, int] = {}  # star -> attempt
        self.asking: dict[str, str] = {}  # star -> approval request
        self.step = 0

    def add(self, star: str, upstream: list[str]) -> None:
        self.ids.append(star)
        self.after[star] = upstream
        self.status[star] = "pending"
        self.attempts[star] = []
        self.downstream[star] = []
        unfinished = {u for u in upstream if u in self.waiting or u in self.running}
        for u in upstream:
            self.downstream.setdefault(u, []).append(star)
        self.waiting[star] = unfinished
        if not unfinished:
            self.ready.append(star)
            self.status[star] = "ready"

    def events(self) -> Iterator[Event]:
        rng = self.rng
        while True:
            self.step += 1
            if self.ready and len(self.running) < self.width:
                star = self.ready.pop(0)
                self.waiting.pop(star, None)
                self.running[star] = 1
                device = rng.choice(DEVICES)
                self.status[star] = "running"
                self.attempts[star].append((device, "running"))
                yield StarStarted(constellation_id=CID, star_id=star, attempt=1, device=device)
                continue
            if not self.running:
                return
            star = rng.choice(list(self.running))
            attempt = self.running[star]
            roll = rng.random()
            if star in self.asking:
                request = self.asking.pop(star)
                yield ApprovalGiven(
                    constellation_id=CID, star_id=star, request=request, approved=True
                )
            elif roll < 0.78:
                yield StarProgress(
                    constellation_id=CID,
                    star_id=star,
                    attempt=attempt,
                    message=f"[{self.step}] compiling unit {rng.randrange(999)}",
                )
            elif roll < 0.81 and attempt < 3:
                device = rng.choice(DEVICES)
                yield AttemptFailed(
                    constellation_id=CID,
                    star_id=star,
                    attempt=attempt,
                    device=device,
                    error="exit status 1",
                    will_retry=True,
                )
                self.running[star] = attempt + 1
                self.attempts[star][-1] = (self.attempts[star][-1][0], "failed")
                self.attempts[star].append((device, "running"))
                yield StarStarted(
                    constellation_id=CID, star_id=star, attempt=attempt + 1, device=device
                )
            elif roll < 0.83:
                request = f"r{self.step}"
                self.asking[star] = request
                yield ApprovalNeeded(
                    constellation_id=CID,
                    star_id=star,
                    attempt=attempt,
                    device="laptop",
                    request=request,
                    tool="shell.run",
                    summary="rm -rf build/",
                )
            else:
                del self.running[star]
                status = "failed" if roll > 0.985 else "succeeded"
                self.status[star] = status
                self.attempts[star][-1] = (self.attempts[star][-1][0], status)
                yield StarFinished(
                    constellation_id=CID, star_id=star, status=status, attempt=attempt
                )
                for down in self.downstream[star]:
                    pending = self.waiting.get(down)
                    if pending is not None:
                        pending.discard(star)
                        if not pending:
                            self.ready.append(down)
                            self.status[down] = "ready"
                            yield StarReady(constellation_id=CID, star_id=down)


class TimedView(ConstellationView):
    """The view, counting frames and the time spent painting them."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0
        self.paint_seconds: list[float] = []

    def paintEvent(self, event: QPaintEvent) -> None:
        started = time.perf_counter()
        super().paintEvent(event)
        self.paint_seconds.append(time.perf_counter() - started)
        self.frames += 1


class LagProbe:
    """A 10 ms precise Qt timer; each firing records how late it came, and how much CPU
    time this thread used meanwhile (a late tick with little CPU used means the process
    was waiting for a core, not working)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.cpu: list[float] = []
        self._cpu_last = 0.0
        self._clock = QElapsedTimer()
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(PROBE_MS)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0

    def start(self) -> None:
        self._clock.start()
        self._last = 0.0
        self._cpu_last = time.thread_time()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = self._clock.nsecsElapsed() / 1e6
        cpu = time.thread_time()
        self.lags.append(max(0.0, now - self._last - PROBE_MS))
        self.cpu.append((cpu - self._cpu_last) * 1000)
        self._last, self._cpu_last = now, cpu


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


class Collections:
    """How long each run of Python's cyclic garbage collector took (it stops the loop)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def __enter__(self) -> Collections:
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))


async def feed(view: TimedView, options: argparse.Namespace, plan: SimulatedRun) -> tuple[int, int]:
    """Feed events at the rate for the time (or event budget); an edit every 10 s.
    Returns (events applied, edits applied)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    stream = plan.events()
    sent = edits = 0
    version = 1
    outdated: list[str] = []
    view.snapshot_outdated.connect(outdated.append)
    next_edit = start + 10.0
    while sent < options.events:
        now = loop.time()
        if now - start >= options.seconds:
            break
        if options.edits and now >= next_edit:
            next_edit += 10.0
            version += 1
            for i in range(5):
                upstream = [plan.ids[plan.rng.randrange(len(plan.ids) // 2, len(plan.ids))]]
                plan.add(f"e{version}-{i}", upstream)
            view.apply_event(EditApplied(constellation_id=CID, version=version, rationale="more"))
            await asyncio.sleep(0)
            if outdated:  # as the window does: read the snapshot again, show it
                outdated.clear()
                view.set_snapshot(snapshot(plan, version))
                edits += 1
        due = start + sent / options.rate
        if due > now:
            await asyncio.sleep(due - now)
        try:
            event = next(stream)
        except StopIteration:
            break
        view.apply_event(event)
        sent += 1
    return sent, edits


async def run(options: argparse.Namespace) -> None:
    gc.collect()
    gc.freeze()  # as app/gui/main.py does once started: what startup made lives on
    collector = MainThreadCollector()
    collector.start()
    try:
        await measure(options)
    finally:
        collector.stop()


async def measure(options: argparse.Namespace) -> None:
    ids, after = random_plan(options.stars, options.seed)
    plan = SimulatedRun(ids, after, options.seed)
    data = snapshot(plan, 1)
    lines = sum(len(v) for v in after.values())
    started = time.perf_counter()
    layout = ConstellationLayout()
    layout.update(ids, [(u, s) for s in ids for u in after[s]])
    layout_s = time.perf_counter() - started
    print(
        f"plan: {options.stars} stars, {lines} lines; layout alone {layout_s * 1000:.0f} ms, "
        f"{layout.last_crossings} crossings"
    )

    view = TimedView()
    view.resize(1400, 900)
    view.show()
    started = time.perf_counter()
    view.set_snapshot(data)
    shown_s = time.perf_counter() - started
    if options.zoom != "fit":
        view.set_zoom(float(options.zoom))
        view.centerOn(view.constellation_scene.sceneRect().center())
    started = time.perf_counter()
    view.grab()  # draws the whole view once, now
    first_frame_s = time.perf_counter() - started
    print(
        f"set_snapshot (layout, {options.stars} star items, lines): {shown_s * 1000:.0f} ms; "
        f"first frame at zoom {view.zoom:.2f}: {first_frame_s * 1000:.0f} ms; "
        f"minimap {'shown' if view.minimap.isVisible() else 'hidden'}"
    )
    await asyncio.sleep(0.2)  # let the first frames settle before measuring

    refreshes: list[int] = [0]
    view.constellation_scene.refreshed.connect(lambda: refreshes.__setitem__(0, refreshes[0] + 1))
    view.frames, view.paint_seconds = 0, []
    probe = LagProbe()
    with Collections() as collections:
        probe.start()
        began = time.perf_counter()
        sent, edits = await feed(view, options, plan)
        await asyncio.sleep(0.1)  # the last batch is drawn
        probe.stop()
        elapsed = time.perf_counter() - began
    paints = view.paint_seconds or [0.0]
    lags = probe.lags or [0.0]
    counts = view.constellation_scene.model.counts()
    print(
        f"events: {sent} in {elapsed:.1f} s ({sent / elapsed:.0f}/s), edits: {edits}, "
        f"item refresh batches: {refreshes[0]}"
    )
    print("stars now: " + ", ".join(f"{n} {s.label}" for s, n in counts.items() if n))
    print(
        f"frames: {view.frames} ({view.frames / elapsed:.0f}/s), paint per frame: median "
        f"{statistics.median(paints) * 1000:.1f} ms, max {max(paints) * 1000:.1f} ms, "
        f"total {sum(paints):.2f} s ({100 * sum(paints) / elapsed:.0f}% of the time)"
    )
    full = [pause for generation, pause in collections.pauses if generation == 2]
    longest = max((pause for _, pause in collections.pauses), default=0.0)
    print(
        f"garbage collections: {len(collections.pauses)}, {len(full)} full; longest "
        f"{longest * 1000:.1f} ms"
    )
    over = sum(1 for lag in lags if lag > 50)
    print(
        f"lag probe: {len(lags)} ticks of {PROBE_MS} ms, median "
        f"{statistics.median(lags):.1f} ms, {over} over 50 ms"
    )
    worst = sorted(range(len(probe.lags)), key=lambda i: -probe.lags[i])[:5]
    print(
        "worst ticks (lag ms / CPU ms this thread used in that interval): "
        + ", ".join(f"{probe.lags[i]:.0f}/{probe.cpu[i]:.0f}" for i in worst)
    )
    print(
        f"most CPU the loop's thread used between two ticks: {max(probe.cpu or [0.0]):.1f} ms; "
        f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"max_loop_lag_ms={max(lags):.1f} p99_loop_lag_ms={percentile(lags, 0.99):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stars", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to feed events")
    parser.add_argument("--events", type=int, default=1_000_000, help="event budget")
    parser.add_argument("--zoom", default="fit", help="'fit' (default) or a scale, e.g. 1.0")
    parser.add_argument("--no-edits", dest="edits", action="store_false", help="no edit every 10 s")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    application = QApplication(sys.argv[:1])
    loop = qasync.QEventLoop(application)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(run(options))


if __name__ == "__main__":
    main()
