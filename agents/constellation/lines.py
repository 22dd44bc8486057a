"""How a line is decided once its upstream star has finished."""

from __future__ import annotations

from dataclasses import dataclass

from agents.constellation.model import Line, LineKind, Star, StarStatus
from agents.constellation.predicate import evaluate_condition


@dataclass(slots=True)
class LineOutcome:
    satisfied: bool
    reason: str = ""


def line_outcome(line: Line, upstream: Star) -> LineOutcome:
    """Decide a line whose upstream star has reached a terminal status."""
    if line.kind is LineKind.SUCCESS:
        if upstream.status is StarStatus.SUCCEEDED:
            return LineOutcome(True)
        return LineOutcome(False, f"upstream star {upstream.id!r} {upstream.status}")
    if line.kind is LineKind.COMPLETION:
        return LineOutcome(True)
    assert line.when is not None
    if evaluate_condition(line.when, upstream.status.value, upstream.output, upstream.error):
        return LineOutcome(True)
    return LineOutcome(False, f"condition on line {line.source}->{line.target} is false")


def settled(line: Line, upstream: Star | None) -> bool:
    """True when the line's upstream has finished and the line is satisfied: such a line
    no longer changes whether its downstream star may run."""
    return (
        upstream is not None and upstream.status.terminal and line_outcome(line, upstream).satisfied
    )
