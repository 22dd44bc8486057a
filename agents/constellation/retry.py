"""Running a finished constellation again from where it failed.

A star's status only moves forward, so a retry is a new constellation (`retry_of` names
the old one): the stars that succeeded keep their status, attempts and outputs (later
stars' `${...}` references still find them); the star asked for — or, without one,
every star that failed, was cancelled or was skipped — and every star downstream of it
that did not succeed start again from `pending`.
"""

from __future__ import annotations

from collections import deque

from agents.constellation.build import new_constellation_id
from agents.constellation.errors import UnknownStar
from agents.constellation.model import Constellation, ConstellationStatus, StarStatus


class NothingToRetry(ValueError):
    """The constellation (or the star) has nothing to run again; the message says why."""


def retry_plan(constellation: Constellation, star_id: str | None = None) -> Constellation:
    """The constellation that runs `constellation` again from `star_id` (or from every
    star that did not succeed); `UnknownStar` or `NothingToRetry` if there is nothing to
    retry there. `constellation` itself is not changed."""
    if not constellation.status.terminal:
        raise NothingToRetry(
            f"constellation {constellation.id!r} is still {constellation.status}; "
            "wait for it to finish or cancel it, then retry"
        )
    stars = constellation.stars
    if star_id is not None:
        star = stars.get(star_id)
        if star is None:
            known = ", ".join(sorted(stars)) or "none"
            raise UnknownStar(
                f"no star {star_id!r} in constellation {constellation.id!r} (stars: {known})",
                item=star_id,
            )
        if star.status is StarStatus.SUCCEEDED:
            raise NothingToRetry(
                f"star {star_id!r} of {constellation.id!r} succeeded; only a star that failed, "
                "was cancelled or was skipped can be retried"
            )
        seeds = [star_id]
    else:
        seeds = [sid for sid, s in stars.items() if s.status is not StarStatus.SUCCEEDED]
        if not seeds:
            raise NothingToRetry(
                f"every star of constellation {constellation.id!r} succeeded; nothing to retry"
            )
    rerun = _downstream_not_succeeded(constellation, seeds)
    again = constellation.model_copy(deep=True)
    again.id = new_constellation_id()
    again.version = 1
    again.status = ConstellationStatus.PENDING
    again.retry_of = constellation.id
    for sid in rerun:
        star = again.stars[sid]
        star.status = StarStatus.PENDING
        star.attempts = []
        star.output = None
        star.error = None
        star.skip_reason = None
    return again


def _downstream_not_succeeded(constellation: Constellation, seeds: list[str]) -> set[str]:
    outgoing: dict[str, list[str]] = {}
    for line in constellation.lines:
        outgoing.setdefault(line.source, []).append(line.target)
    chosen = set(seeds)
    queue = deque(seeds)
    while queue:
        for target in outgoing.get(queue.popleft(), ()):
            if target in chosen:
                continue
            if constellation.stars[target].status is StarStatus.SUCCEEDED:
                continue
            chosen.add(target)
            queue.append(target)
    return chosen
