"""Errors of the planner.

PlanningError
├── PlanRejected      no valid plan (or edit) after the bounded repair attempts
└── NoCapableDevice   nothing is connected that offers a tool the planner could use
"""

from __future__ import annotations

from collections.abc import Sequence


class PlanningError(Exception):
    """Base of the planner's errors."""


class PlanRejected(PlanningError):
    """The model's output stayed invalid after every repair attempt.

    `reasons` holds one line per attempt: what was wrong with that attempt's output.
    """

    def __init__(self, what: str, reasons: Sequence[str]) -> None:
        self.what = what
        self.reasons = list(reasons)
        last = self.reasons[-1] if self.reasons else "no output"
        super().__init__(
            f"no valid {what} after {len(self.reasons)} attempt(s); last problem: {last}. "
            "Rephrase the request more concretely, or point the planner at a larger model "
            "(`[models] roles.planner` in orrery.toml)"
        )


class NoCapableDevice(PlanningError):
    """No connected device offers any tool, so there is nothing a plan could run on."""

    def __init__(self, connected: Sequence[str]) -> None:
        self.connected = list(connected)
        names = ", ".join(self.connected) or "none"
        super().__init__(
            f"no connected device offers a usable tool (connected: {names}); start a device "
            "with `orrery device` or check its policy"
        )
