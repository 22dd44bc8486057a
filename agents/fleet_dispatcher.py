"""`FleetDispatcher`: several dispatchers seen by the orchestrator as one fleet.

The desktop app uses this machine as an in-process device next to remote devices that
dial in over AIP; each kind has its own dispatcher, and this one joins them. A device
name belongs to the first dispatcher that offers it (a later one with the same name is
hidden, with a warning). Assignments go to the dispatcher of their device; callbacks
from every dispatcher go to the one sink the orchestrator attached; approvals are
listed across, and answered by, the dispatchers that ask them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from agents.dispatch import (
    ApprovalAsked,
    Approvals,
    DeviceChange,
    Dispatcher,
    TaskSink,
    UnknownApproval,
)
from devices.registry import DeviceInfo
from protocol.tasks import TaskAssignment, TaskProgress, TaskResult

log = logging.getLogger("orrery.fleet")


class FleetDispatcher:
    """A `Dispatcher` (and `Approvals`) over `dispatchers`, in priority order."""

    def __init__(self, dispatchers: Sequence[Dispatcher]) -> None:
        self.dispatchers: tuple[Dispatcher, ...] = tuple(dispatchers)
        self._sink: TaskSink | None = None
        self._owner: dict[str, Dispatcher] = {}
        self._hidden: set[str] = set()

    # ---------------------------------------------------------------- Dispatcher

    def attach(self, sink: TaskSink) -> None:
        self._sink = sink
        for dispatcher in self.dispatchers:
            dispatcher.attach(_MemberSink(self, dispatcher))
        self._map_devices()

    def devices(self) -> Sequence[DeviceInfo]:
        seen: set[str] = set()
        devices = []
        for dispatcher in self.dispatchers:
            for device in dispatcher.devices():
                if device.name not in seen:
                    seen.add(device.name)
                    devices.append(device)
        return devices

    def assign(self, assignment: TaskAssignment) -> None:
        owner = self._owner.get(assignment.device)
        if owner is None:
            self._map_devices()
            owner = self._owner.get(assignment.device)
        if owner is None:
            self.on_result(
                TaskResult.failure(assignment, f"device {assignment.device!r} is not connected")
            )
            return
        owner.assign(assignment)

    def adopt(self, assignment: TaskAssignment) -> bool:
        """Offer an attempt of an earlier orchestrator process to each dispatcher that can
        take such attempts back (`adopt`); whether one did."""
        for dispatcher in self.dispatchers:
            adopt = getattr(dispatcher, "adopt", None)
            if adopt is not None and adopt(assignment):
                return True
        return False

    def cancel(self, assignment: TaskAssignment, reason: str) -> None:
        owner = self._owner.get(assignment.device)
        if owner is not None:
            owner.cancel(assignment, reason)
            return
        for dispatcher in self.dispatchers:  # it left: whoever knew it may still hold it
            dispatcher.cancel(assignment, reason)

    def tool_schemas(self) -> dict[str, dict[str, Any]]:
        """Tool name -> argument schema, the first dispatcher's description winning."""
        return merged_tool_schemas(self.dispatchers)

    def silence(self) -> dict[str, float]:
        """Device -> seconds since it was last heard from, where a dispatcher knows."""
        quiet: dict[str, float] = {}
        for dispatcher in self.dispatchers:
            heard = getattr(dispatcher, "silence", None)
            if heard is not None:
                for name, seconds in heard().items():
                    quiet.setdefault(name, seconds)
        return quiet

    # ---------------------------------------------------------------- Approvals

    def pending_approvals(self) -> list[ApprovalAsked]:
        pending: list[ApprovalAsked] = []
        for dispatcher in self.dispatchers:
            if isinstance(dispatcher, Approvals):
                pending.extend(dispatcher.pending_approvals())
        return pending

    def decide(
        self, request: str, approved: bool, *, by: str = "", reason: str = ""
    ) -> ApprovalAsked:
        for dispatcher in self.dispatchers:
            if isinstance(dispatcher, Approvals) and any(
                p.request == request for p in dispatcher.pending_approvals()
            ):
                return dispatcher.decide(request, approved, by=by, reason=reason)
        raise UnknownApproval(request, [p.request for p in self.pending_approvals()])

    def on_result(self, result: TaskResult) -> None:
        if self._sink is not None:
            self._sink.on_result(result)

    # ---------------------------------------------------------------- helpers

    def _map_devices(self) -> None:
        owner: dict[str, Dispatcher] = {}
        hidden: set[str] = set()
        for dispatcher in self.dispatchers:
            for device in dispatcher.devices():
                if device.name in owner:
                    if owner[device.name] is not dispatcher and device.name not in self._hidden:
                        log.warning(
                            "device %s: a second device of that name is connected; "
                            "the first one keeps the name and this one gets no work",
                            device.name,
                        )
                    hidden.add(device.name)
                    continue
                owner[device.name] = dispatcher
        self._owner, self._hidden = owner, hidden

    def _owns(self, dispatcher: Dispatcher, device: str) -> bool:
        owner = self._owner.get(device)
        if owner is None:
            self._map_devices()
            owner = self._owner.get(device)
        return owner is None or owner is dispatcher


def merged_tool_schemas(dispatchers: Sequence[Dispatcher]) -> dict[str, dict[str, Any]]:
    """Tool name -> argument schema over `dispatchers` (those that describe their tools
    with a `tool_schemas()` method), the first one's description winning."""
    schemas: dict[str, dict[str, Any]] = {}
    for dispatcher in dispatchers:
        describe = getattr(dispatcher, "tool_schemas", None)
        if describe is not None:
            for tool, schema in describe().items():
                schemas.setdefault(tool, schema)
    return schemas


class _MemberSink:
    """The sink one member dispatcher reports to: forwards to the orchestrator's, hiding
    what a device shadowed by a namesake in an earlier dispatcher says."""

    def __init__(self, fleet: FleetDispatcher, dispatcher: Dispatcher) -> None:
        self._fleet = fleet
        self._dispatcher = dispatcher

    def on_progress(self, progress: TaskProgress) -> None:
        sink = self._fleet._sink
        if sink is not None:
            sink.on_progress(progress)

    def on_result(self, result: TaskResult) -> None:
        self._fleet.on_result(result)

    def on_devices_changed(self) -> None:
        self._fleet._map_devices()
        sink = self._fleet._sink
        if sink is not None:
            sink.on_devices_changed()

    def on_device_change(self, change: DeviceChange) -> None:
        sink = self._fleet._sink
        if sink is not None and self._fleet._owns(self._dispatcher, change.device):
            sink.on_device_change(change)

    def on_approval(self, asked: ApprovalAsked) -> None:
        sink = self._fleet._sink
        if sink is not None:
            sink.on_approval(asked)
