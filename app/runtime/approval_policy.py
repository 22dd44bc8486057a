"""Who answers a tool call that waits for a person, when no person is asked.

An `ApprovalPolicy` sees each waiting call as it arrives and answers it at once
(`(approved, reason)`) or leaves it for a person (`None`: it waits for `approve`).
"""

from __future__ import annotations

from collections.abc import Callable

from devices.registry import ApprovalAsked

ApprovalPolicy = Callable[[ApprovalAsked], tuple[bool, str] | None]


def ask_a_person(asked: ApprovalAsked) -> None:
    """Every call waits for `approve` (the desktop app, `orrery serve`)."""
    return None


def approve_all(reason: str) -> ApprovalPolicy:
    """Allow every call at once (`--approve-all`), recording `reason`."""

    def decide(asked: ApprovalAsked) -> tuple[bool, str]:
        return True, reason

    return decide


def refuse_all(reason: str) -> ApprovalPolicy:
    """Refuse every call at once (a headless run with nobody to ask), saying `reason`."""

    def decide(asked: ApprovalAsked) -> tuple[bool, str]:
        return False, reason

    return decide
