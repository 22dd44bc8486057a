"""The seam between the orchestrator and whatever runs stars.

A `Dispatcher` owns a set of devices and carries assignments to them: the
in-process one (`devices.local.LocalDispatcher`) runs built-in tools right here,
the AIP one sends `task.assign` over WebSocket, `FleetDispatcher` joins several into
one fleet. It reports back through the `TaskSink` the orchestrator attaches. Every
method is called on the event-loop thread and must not block.

A dispatcher whose devices ask a person before some tool calls is also `Approvals`:
it reports each waiting call with `TaskSink.on_approval` and takes the answer through
`decide`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from devices.registry import ApprovalAsked, DeviceChange, DeviceInfo, UnknownApproval
from protocol.tasks import TaskAssignment, TaskProgress, TaskResult

__all__ = [
    "ApprovalAsked",
    "Approvals",
    "DeviceChange",
    "Dispatcher",
    "TaskSink",
    "UnknownApproval",
]


class TaskSink(Protocol):
    """What a dispatcher calls back; implemented by the orchestrator."""

    def on_progress(self, progress: TaskProgress) -> None: ...

    def on_result(self, result: TaskResult) -> None:
        """Report an attempt's outcome. Late or repeated results are ignored (fencing)."""

    def on_devices_changed(self) -> None:
        """Devices joined, left or changed their limits: the orchestrator re-reads `devices()`."""

    def on_device_change(self, change: DeviceChange) -> None:
        """A device connected, went busy or online, disconnected or was lost (for the
        event stream; scheduling reads `devices()` after `on_devices_changed`)."""

    def on_approval(self, asked: ApprovalAsked) -> None:
        """A tool call waits for a person; the answer goes to the dispatcher's `decide`."""


class Dispatcher(Protocol):
    def attach(self, sink: TaskSink) -> None:
        """Called once by the orchestrator before any assignment."""

    def devices(self) -> Sequence[DeviceInfo]:
        """The devices that can take work now."""

    def assign(self, assignment: TaskAssignment) -> None:
        """Start the attempt on `assignment.device`; return at once, report via the sink."""

    def cancel(self, assignment: TaskAssignment, reason: str) -> None:
        """Stop the attempt if it still runs; its result, if any arrives, will be ignored."""


@runtime_checkable
class Approvals(Protocol):
    """A dispatcher whose devices wait for a person's answer before some tool calls."""

    def pending_approvals(self) -> list[ApprovalAsked]:
        """The calls waiting now, oldest first."""
        ...

    def decide(
        self, request: str, approved: bool, *, by: str = "", reason: str = ""
    ) -> ApprovalAsked:
        """Answer one; `UnknownApproval` if nothing waits under `request`."""
        ...
