"""Star estimates from history: how long a tool took on a device before.

The orchestrator orders ready stars by the longest remaining path, measured in each
star's `estimate` (seconds; a default when a plan gives none). `fill_estimates` gives a
star that has no estimate the remembered run time of its tool (`memory.tree.Duration`,
an exponentially weighted mean over the attempts that succeeded): on the device the star
names, else the count-weighted mean over every device that ran the tool. A star the
memory knows nothing about keeps no estimate.
"""

from __future__ import annotations

from collections.abc import Iterable

from agents.constellation import Constellation
from memory.tree import Duration

MIN_ESTIMATE = 0.001
"""Estimates must be positive; a tool that took no measurable time gets this."""


def estimate_for(tool: str, device: str | None, durations: Iterable[Duration]) -> float | None:
    """The remembered run time of `tool` on `device` (any device when None or unknown)."""
    known = [d for d in durations if d.tool == tool and d.count > 0]
    if device is not None:
        for duration in known:
            if duration.device == device:
                return max(MIN_ESTIMATE, duration.mean_seconds)
    total = sum(d.count for d in known)
    if not total:
        return None
    mean = sum(d.mean_seconds * d.count for d in known) / total
    return max(MIN_ESTIMATE, mean)


def fill_estimates(constellation: Constellation, durations: Iterable[Duration]) -> dict[str, float]:
    """Set the estimate of every star of `constellation` that has none and whose tool
    the memory knows; returns the estimates set, by star id."""
    known = list(durations)
    filled: dict[str, float] = {}
    for star in constellation.stars.values():
        if star.estimate is not None or star.status.started:
            continue
        device = star.on.name if star.on is not None else None
        estimate = estimate_for(star.effective_tool, device, known)
        if estimate is not None:
            star.estimate = estimate
            filled[star.id] = estimate
    return filled
