"""A simulated fleet for tests and benchmarks: devices whose work takes virtual time.

`SimulatedDispatcher` satisfies the `Dispatcher` seam. Each assignment is answered by a
`Behaviour` (how long it takes and how it ends), on a `VirtualClock`, so thousands of
stars or an hour-long timeout run in milliseconds and the same way every time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.clock import Timer, VirtualClock
from agents.dispatch import DeviceChange, TaskSink
from devices.registry import DeviceInfo
from protocol.tasks import TaskAssignment, TaskOutcome, TaskResult


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a simulated attempt ends. `duration=None` means it never answers (hangs)."""

    duration: float | None = 1.0
    status: TaskOutcome = TaskOutcome.SUCCEEDED
    output: Any = None
    error: str | None = None


Behaviour = Callable[[TaskAssignment], Outcome]


def always_succeed(assignment: TaskAssignment) -> Outcome:
    return Outcome(duration=1.0, output={"star": assignment.star_id})


@dataclass(slots=True)
class SimulatedDispatcher:
    clock: VirtualClock
    fleet: Sequence[DeviceInfo]
    behaviour: Behaviour = always_succeed
    deliver_after_cancel: bool = False
    """Keep delivering the result of a cancelled attempt (to exercise fencing)."""
    assigned: list[TaskAssignment] = field(default_factory=list)
    cancelled: list[tuple[TaskAssignment, str]] = field(default_factory=list)
    _sink: TaskSink | None = None
    _timers: dict[tuple[str, str, int], Timer] = field(default_factory=dict)

    def attach(self, sink: TaskSink) -> None:
        self._sink = sink

    def devices(self) -> Sequence[DeviceInfo]:
        return self.fleet

    def set_fleet(self, fleet: Sequence[DeviceInfo]) -> None:
        self.fleet = fleet
        if self._sink is not None:
            self._sink.on_devices_changed()

    def join(self, device: DeviceInfo) -> None:
        """`device` connects (or comes back): it is in `devices()`, and the sink hears
        that the devices changed, then that this one joined, as from a real dispatcher."""
        self.fleet = [known for known in self.fleet if known.name != device.name] + [device]
        if self._sink is not None:
            self._sink.on_devices_changed()
            self._sink.on_device_change(
                DeviceChange(
                    device=device.name, state="online", info=device, reason="connected", joined=True
                )
            )

    def leave(self, name: str) -> None:
        """Device `name` disconnects: it is no longer in `devices()`, and the sink hears it."""
        self.fleet = [known for known in self.fleet if known.name != name]
        if self._sink is not None:
            self._sink.on_devices_changed()
            self._sink.on_device_change(
                DeviceChange(device=name, state="offline", reason="disconnected", left=True)
            )

    def assign(self, assignment: TaskAssignment) -> None:
        self.assigned.append(assignment)
        outcome = self.behaviour(assignment)
        if outcome.duration is None:
            return
        key = (assignment.constellation_id, assignment.star_id, assignment.attempt)
        self._timers[key] = self.clock.call_later(
            outcome.duration, lambda: self._deliver(key, assignment, outcome)
        )

    def cancel(self, assignment: TaskAssignment, reason: str) -> None:
        self.cancelled.append((assignment, reason))
        key = (assignment.constellation_id, assignment.star_id, assignment.attempt)
        timer = self._timers.pop(key, None)
        if timer is not None and not self.deliver_after_cancel:
            timer.cancel()

    def deliver(self, result: TaskResult) -> None:
        """Hand a result to the orchestrator by hand (late, duplicate or forged ones too)."""
        assert self._sink is not None, "attach() was not called"
        self._sink.on_result(result)

    def _deliver(
        self, key: tuple[str, str, int], assignment: TaskAssignment, outcome: Outcome
    ) -> None:
        self._timers.pop(key, None)
        self.deliver(
            TaskResult(
                constellation_id=assignment.constellation_id,
                star_id=assignment.star_id,
                attempt=assignment.attempt,
                status=outcome.status,
                output=outcome.output,
                error=outcome.error,
            )
        )


def simulated_fleet(count: int, *, tools: Sequence[str], max_tasks: int = 1) -> list[DeviceInfo]:
    """`count` identical devices named dev0, dev1, ... offering `tools`."""
    return [
        DeviceInfo(name=f"dev{i}", tools=frozenset(tools), max_tasks=max_tasks)
        for i in range(count)
    ]
