"""The seam between the orchestrator and whatever runs stars.

A `Dispatcher` owns a set of devices and carries assignments to them: the
in-process one (`devices.local.LocalDispatcher`) runs built-in tools right here,
the AIP one sends `task.assign` over WebSocket. It reports back through the
`TaskSink` the orchestrator attaches. Every method is called on the event-loop
thread and must not block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from devices.registry import DeviceInfo
from protocol.tasks import TaskAssignment, TaskProgress, TaskResult


class TaskSink(Protocol):
    """What a dispatcher calls back; implemented by the orchestrator."""

    def on_progress(self, progress: TaskProgress) -> None: ...

    def on_result(self, result: TaskResult) -> None:
        """Report an attempt's outcome. Late or repeated results are ignored (fencing)."""

    def on_devices_changed(self) -> None:
        """Devices joined, left or changed their limits: the orchestrator re-reads `devices()`."""


class Dispatcher(Protocol):
    def attach(self, sink: TaskSink) -> None:
        """Called once by the orchestrator before any assignment."""

    def devices(self) -> Sequence[DeviceInfo]:
        """The devices that can take work now."""

    def assign(self, assignment: TaskAssignment) -> None:
        """Start the attempt on `assignment.device`; return at once, report via the sink."""

    def cancel(self, assignment: TaskAssignment, reason: str) -> None:
        """Stop the attempt if it still runs; its result, if any arrives, will be ignored."""
