"""Shared harness for the orchestrator tests: a simulated fleet on a virtual clock.

`Sim` wires an `Orchestrator` to a `SimulatedDispatcher` and a `VirtualClock` and records
every event. Each star's attempts follow a script (`sim.script("a", fail(), ok())`: attempt
1 fails, attempt 2 and later succeed); unscripted stars succeed after one virtual second
with output ``{"star": id}``. Nothing here sleeps or reads the real clock.

Test modules get `Sim` through the `sim` / `make_sim` fixtures and import the class only
for type checking (several test folders have a `conftest` module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest

from agents.clock import VirtualClock
from agents.constellation import (
    Constellation,
    Line,
    PlanSpec,
    Star,
    StarStatus,
    build_constellation,
)
from agents.events import Event, EventStream, StarStarted
from agents.orchestrator import Orchestrator, RunHandle
from agents.simulation import Outcome, SimulatedDispatcher
from devices.registry import DeviceInfo
from protocol.tasks import TaskAssignment

E = TypeVar("E", bound=Event)

TOOLS = frozenset({"shell.run", "python.run", "fs.write", "agent.do"})


def constellation(
    *stars: dict[str, Any],
    lines: Sequence[dict[str, Any] | Line] = (),
    cid: str = "c1",
    name: str = "test",
) -> Constellation:
    """Build a constellation from plan-style star and line dicts."""
    spec = PlanSpec.model_validate({"name": name, "stars": list(stars), "lines": list(lines)})
    return build_constellation(spec, constellation_id=cid)


class Sim:
    """An orchestrator on a scripted, simulated fleet; records every event in `log`."""

    def __init__(
        self,
        fleet: Sequence[DeviceInfo] | None = None,
        *,
        deliver_after_cancel: bool = False,
    ) -> None:
        self.clock = VirtualClock()
        self.outcomes: dict[str, list[Outcome | Callable[[TaskAssignment], Outcome]]] = {}
        self.dispatcher = SimulatedDispatcher(
            clock=self.clock,
            fleet=list(fleet)
            if fleet is not None
            else [DeviceInfo(name="dev0", tools=TOOLS, max_tasks=4)],
            behaviour=self._behave,
            deliver_after_cancel=deliver_after_cancel,
        )
        self.events = EventStream()
        self.log: list[Event] = []
        self.events.listen(self.log.append)
        self.orch = Orchestrator(self.dispatcher, clock=self.clock, events=self.events)

    # ------------------------------------------------------------ set-up

    def script(
        self, star_id: str, *outcomes: Outcome | Callable[[TaskAssignment], Outcome]
    ) -> None:
        """Attempt n of `star_id` gets `outcomes[n-1]`; the last one repeats."""
        self.outcomes[star_id] = list(outcomes)

    def _behave(self, assignment: TaskAssignment) -> Outcome:
        script = self.outcomes.get(assignment.star_id)
        if not script:
            return Outcome(duration=1.0, output={"star": assignment.star_id})
        chosen = script[min(assignment.attempt, len(script)) - 1]
        return chosen(assignment) if callable(chosen) else chosen

    build = staticmethod(constellation)

    def submit(
        self,
        *stars: dict[str, Any],
        lines: Sequence[dict[str, Any] | Line] = (),
        cid: str = "c1",
    ) -> RunHandle:
        return self.orch.submit(constellation(*stars, lines=lines, cid=cid))

    # ------------------------------------------------------------ inspection

    def of(self, kind: type[E], star_id: str | None = None, cid: str | None = None) -> list[E]:
        """Recorded events of one type, optionally of one star and/or constellation."""
        return [
            event
            for event in self.log
            if isinstance(event, kind)
            and (star_id is None or getattr(event, "star_id", None) == star_id)
            and (cid is None or event.constellation_id == cid)
        ]

    def started(self, cid: str | None = None) -> list[str]:
        """Star ids in the order their attempts started."""
        return [event.star_id for event in self.of(StarStarted, cid=cid)]

    def assignments(self, star_id: str) -> list[TaskAssignment]:
        return [a for a in self.dispatcher.assigned if a.star_id == star_id]

    @staticmethod
    def star(handle: RunHandle, star_id: str) -> Star:
        return handle.constellation.stars[star_id]

    @staticmethod
    def statuses(handle: RunHandle) -> dict[str, StarStatus]:
        return {sid: s.status for sid, s in handle.constellation.stars.items()}


@pytest.fixture
def sim() -> Sim:
    """A simulation with one device `dev0` (four slots) offering every test tool."""
    return Sim()


@pytest.fixture
def make_sim() -> Callable[..., Sim]:
    """`make_sim(fleet, deliver_after_cancel=...)` for a simulation on another fleet."""
    return Sim
