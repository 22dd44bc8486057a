"""The scheduling state of one running constellation: in-degree counters and line outcomes.

`RunState` knows, for every star that has not started, how many incoming lines are still
undecided, and turns an upstream star's final status into the next ready or skipped stars.
It owns no devices and no clock; the orchestrator drives it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agents.constellation import (
    Constellation,
    ConstellationEditor,
    ConstellationStatus,
    Line,
    LineKind,
    Star,
    StarStatus,
)
from agents.constellation.lines import line_outcome
from agents.constellation.references import iter_references

DEFAULT_ESTIMATE = 1.0


@dataclass(slots=True)
class RunState:
    editor: ConstellationEditor
    cid: str = ""
    stars: dict[str, Star] = field(default_factory=dict)  # the current version's stars
    outgoing: dict[str, list[Line]] = field(default_factory=dict)
    incoming: dict[str, list[Line]] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    bottom_level: dict[str, float] = field(default_factory=dict)
    referencing: set[str] = field(default_factory=set)  # args or instruction hold ${...}
    unfinished: int = 0
    cancelling: bool = False
    cancel_reason: str | None = None
    giving_up: bool = False  # cancelling because the run cannot succeed: it ends failed
    first_failure: tuple[str, str] | None = None
    holds: int = 0  # while > 0 (a planner reviews the plan) the run does not finish
    waiters: list[asyncio.Future[Constellation]] = field(default_factory=list)

    @property
    def constellation(self) -> Constellation:
        return self.editor.constellation

    @property
    def finished(self) -> bool:
        return self.constellation.status.terminal

    def rebuild(self) -> list[tuple[str, str | None]]:
        """Recompute adjacency, counters and priorities from the constellation.

        Returns the stars whose fate is already decided, as (star id, skip reason or
        None for ready), for the orchestrator to act on.
        """
        constellation = self.constellation
        self.cid = constellation.id
        self.stars = stars = constellation.stars
        outgoing: dict[str, list[Line]] = {star_id: [] for star_id in stars}
        incoming: dict[str, list[Line]] = {star_id: [] for star_id in stars}
        for line in constellation.lines:
            outgoing[line.source].append(line)
            incoming[line.target].append(line)
        self.outgoing, self.incoming = outgoing, incoming
        self.bottom_level = _bottom_levels(stars, outgoing, incoming)
        self.referencing = {
            star_id
            for star_id, star in stars.items()
            if (star.args or star.instruction)
            and next(iter_references(star.effective_args), None) is not None
        }

        decided: list[tuple[str, str | None]] = []
        self.waiting = {}
        unfinished = 0
        for star_id, star in stars.items():
            if not star.status.terminal:
                unfinished += 1
            if star.status is not StarStatus.PENDING:
                continue
            undecided = 0
            skip_reason: str | None = None
            for line in incoming[star_id]:
                upstream = stars[line.source]
                if not upstream.status.terminal:
                    undecided += 1
                    continue
                outcome = line_outcome(line, upstream)
                if not outcome.satisfied and skip_reason is None:
                    skip_reason = outcome.reason
            if skip_reason is not None:
                # Decided: will be skipped, as in `downstream_decisions`. Skipping another
                # star decided here may complete one of its lines first; that must not
                # count it down to ready.
                self.waiting[star_id] = -1
                decided.append((star_id, skip_reason))
            else:
                self.waiting[star_id] = undecided
                if undecided == 0:
                    decided.append((star_id, None))
        self.unfinished = unfinished
        return decided

    def downstream_decisions(self, star_id: str) -> list[tuple[str, str | None]]:
        """After `star_id` became terminal: each downstream star now decided (skip or ready)."""
        stars = self.stars
        upstream = stars[star_id]
        succeeded = upstream.status is StarStatus.SUCCEEDED
        waiting = self.waiting
        decided: list[tuple[str, str | None]] = []
        for line in self.outgoing.get(star_id, ()):
            target_id = line.target
            if stars[target_id].status is not StarStatus.PENDING or waiting[target_id] < 0:
                continue  # already finished, or already decided (to be skipped) by another line
            if not (succeeded and line.kind is LineKind.SUCCESS):  # the common case is cheap
                outcome = line_outcome(line, upstream)
                if not outcome.satisfied:
                    waiting[target_id] = -1  # decided: will be skipped
                    decided.append((target_id, outcome.reason))
                    continue
            remaining = waiting[target_id] - 1
            waiting[target_id] = remaining
            if remaining == 0:
                decided.append((target_id, None))
        return decided

    def final_status(self) -> tuple[ConstellationStatus, str | None, str | None]:
        """(status, reason, failed star) once every star is terminal."""
        if self.cancelling:
            status = ConstellationStatus.FAILED if self.giving_up else ConstellationStatus.CANCELLED
            return status, self.cancel_reason or "cancelled", None
        if self.first_failure is not None:
            star_id, error = self.first_failure
            return ConstellationStatus.FAILED, error, star_id
        return ConstellationStatus.SUCCEEDED, None, None


def _bottom_levels(
    stars: dict[str, Star], outgoing: dict[str, list[Line]], incoming: dict[str, list[Line]]
) -> dict[str, float]:
    """Longest remaining path (by estimated run time) from each star to the end of the DAG.

    Kahn's algorithm from the sinks upwards; the graph is known to be acyclic.
    """
    unsettled = {star_id: len(lines) for star_id, lines in outgoing.items()}
    frontier = [star_id for star_id, count in unsettled.items() if count == 0]
    levels: dict[str, float] = {}
    while frontier:
        star_id = frontier.pop()
        below = max((levels[line.target] for line in outgoing[star_id]), default=0.0)
        levels[star_id] = (stars[star_id].estimate or DEFAULT_ESTIMATE) + below
        for line in incoming[star_id]:
            unsettled[line.source] -= 1
            if unsettled[line.source] == 0:
                frontier.append(line.source)
    return levels
