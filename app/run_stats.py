"""How parallel a run was: counts by state, elapsed time, critical path, width, speed-up.

Computed from a constellation's snapshot (`Constellation.model_dump(mode="json")`), so the
desktop app's header and `orrery show` say the same. Times are the orchestrator's clock.

- `work`: the total time stars spent running (every attempt).
- `critical_path`: the longest chain of dependent stars, by the time they took.
- `parallelism`: work ÷ critical path (Galaxy's P = W/L): the speed-up the plan allows.
- `width`: the most attempts that ran at the same moment.
- `speedup`: work ÷ wall time: the speed-up the run achieved.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RunStats:
    counts: dict[str, int]
    elapsed: float
    work: float
    critical_path: float
    critical_stars: tuple[str, ...]
    width: int
    speedup: float
    parallelism: float

    def line(self) -> str:
        """One line for a terminal or a status bar."""
        order = ("running", "ready", "pending", "succeeded", "failed", "skipped", "cancelled")
        counts = ", ".join(f"{self.counts[s]} {s}" for s in order if self.counts.get(s))
        return (
            f"{counts}; elapsed {self.elapsed:.1f}s; critical path {self.critical_path:.1f}s "
            f"({len(self.critical_stars)} stars); width {self.width}; "
            f"speed-up {self.speedup:.2f}x of {self.parallelism:.2f}x possible"
        )


def run_stats(snapshot: Mapping[str, Any], now: float | None = None) -> RunStats:
    """The stats of one constellation; `now` (the orchestrator's clock) closes attempts
    that still run (without it they count up to the latest time seen)."""
    stars: Mapping[str, Mapping[str, Any]] = snapshot.get("stars") or {}
    counts = Counter(str(star.get("status", "pending")) for star in stars.values())
    intervals: list[tuple[float, float]] = []
    took: dict[str, float] = {}
    latest = max(
        (
            float(a.get("finished_at") or a.get("started_at") or 0.0)
            for star in stars.values()
            for a in star.get("attempts") or []
        ),
        default=0.0,
    )
    end_of_open = now if now is not None else latest
    for star_id, star in stars.items():
        total = 0.0
        for attempt in star.get("attempts") or []:
            start = float(attempt.get("started_at") or 0.0)
            finished = attempt.get("finished_at")
            stop = float(finished) if finished is not None else max(start, end_of_open)
            intervals.append((start, stop))
            total += max(0.0, stop - start)
        took[star_id] = total
    work = sum(took.values())
    elapsed = (max(e for _, e in intervals) - min(s for s, _ in intervals)) if intervals else 0.0
    path, chain = _critical_path(stars, snapshot.get("lines") or [], took)
    return RunStats(
        counts=dict(counts),
        elapsed=elapsed,
        work=work,
        critical_path=path,
        critical_stars=chain,
        width=_width(intervals),
        speedup=work / elapsed if elapsed > 0 else 0.0,
        parallelism=work / path if path > 0 else 0.0,
    )


def _critical_path(
    stars: Mapping[str, Any], lines: list[Mapping[str, Any]], took: dict[str, float]
) -> tuple[float, tuple[str, ...]]:
    incoming: dict[str, list[str]] = {sid: [] for sid in stars}
    for line in lines:
        source, target = line.get("from"), line.get("to")
        if source in incoming and target in incoming:
            incoming[str(target)].append(str(source))
    best: dict[str, tuple[float, tuple[str, ...]]] = {}

    def longest(star_id: str) -> tuple[float, tuple[str, ...]]:
        if star_id not in best:
            before = max(
                (longest(up) for up in incoming[star_id]), default=(0.0, ()), key=lambda x: x[0]
            )
            best[star_id] = (before[0] + took.get(star_id, 0.0), (*before[1], star_id))
        return best[star_id]

    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, len(stars) * 2 + 100))
    try:
        found = [longest(sid) for sid in stars]
    finally:
        sys.setrecursionlimit(limit)
    return max(found, default=(0.0, ()), key=lambda x: x[0])


def _width(intervals: list[tuple[float, float]]) -> int:
    moments = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = widest = 0
    for _, step in moments:
        running += step
        widest = max(widest, running)
    return widest
