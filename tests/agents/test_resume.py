"""Taking a constellation up after the orchestrator restarted (`Orchestrator.resume` with
the WebSocket dispatcher's `adopt`), on a virtual clock and a real SQLite store: what
finished stays finished, an attempt out on a device keeps its number and is settled by
a stored result, by the device, or by the reconnect grace; one that no dispatcher can
take back fails as interrupted at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.aip_dispatcher import AipDispatcher
from agents.clock import VirtualClock
from agents.constellation import (
    Attempt,
    AttemptStatus,
    Constellation,
    ConstellationStatus,
    PlanSpec,
    StarStatus,
    build_constellation,
)
from agents.events import Event, StarStarted
from agents.fleet_store import StoreKeys, StoreLedger
from agents.orchestrator import Orchestrator
from app.runtime.recovery import catch_up
from memory import Store
from protocol.auth import enroll
from protocol.session import ServerConfig
from protocol.tasks import TaskAssignment, TaskResult

GRACE = ServerConfig().heartbeat_interval * ServerConfig().heartbeat_misses


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        _, key = enroll("box")
        opened.enroll_device("box", salt=key.salt, key=key.key)
        yield opened


def crashed_run(device: str = "box") -> Constellation:
    """first (succeeded) -> second (attempt 1 running on `device`) -> third (pending)."""
    spec = {
        "name": "crashed",
        "stars": [
            {"id": "first", "tool": "shell.run", "args": {"cmd": "echo 1"}},
            {"id": "second", "tool": "shell.run", "args": {"cmd": "echo 2"}, "after": ["first"]},
            {"id": "third", "tool": "shell.run", "args": {"cmd": "echo 3"}, "after": ["second"]},
        ],
    }
    constellation = build_constellation(PlanSpec.model_validate(spec))
    first, second = constellation.stars["first"], constellation.stars["second"]
    for star in (first, second):
        star.move_to(StarStatus.READY)
        star.move_to(StarStatus.RUNNING)
        star.attempts.append(Attempt(number=1, device=device, started_at=0.0))
    first.attempts[0].status = AttemptStatus.SUCCEEDED
    first.output = {"stdout": "1\n"}
    first.move_to(StarStatus.SUCCEEDED)
    constellation.status = ConstellationStatus.RUNNING
    return constellation


def orchestrator(store: Store, clock: VirtualClock) -> tuple[Orchestrator, AipDispatcher]:
    dispatcher = AipDispatcher(keys=StoreKeys(store), ledger=StoreLedger(store), clock=clock)
    return Orchestrator(dispatcher, clock=clock), dispatcher


def test_a_stored_result_settles_the_adopted_attempt_and_nothing_finished_runs_again(
    store: Store,
) -> None:
    clock = VirtualClock()
    orchestra, _ = orchestrator(store, clock)
    started: list[Event] = []
    orchestra.events.listen(lambda e: started.append(e) if isinstance(e, StarStarted) else None)
    constellation = crashed_run()
    result = TaskResult(
        constellation_id=constellation.id,
        star_id="second",
        attempt=1,
        status="succeeded",  # type: ignore[arg-type]
        output={"stdout": "2\n"},
    )

    orchestra.be_patient(GRACE)  # as after a restart: the devices get time to come back
    orchestra.resume(constellation, [result])

    stars = orchestra.constellation(constellation.id).stars
    assert stars["first"].status is StarStatus.SUCCEEDED
    assert len(stars["first"].attempts) == 1
    assert stars["second"].status is StarStatus.SUCCEEDED
    assert [a.number for a in stars["second"].attempts] == [1]
    assert stars["third"].status is StarStatus.READY  # waits for a device
    assert started == []  # nothing went out again
    clock.advance(GRACE + 0.1)  # no device came back: now it fails for want of one
    assert "no devices are connected" in (stars["third"].error or "")


def test_an_adopted_attempt_whose_device_stays_away_fails_over_after_the_grace(
    store: Store,
) -> None:
    clock = VirtualClock()
    orchestra, _ = orchestrator(store, clock)
    constellation = crashed_run()
    constellation.stars["second"].retries = 1
    orchestra.be_patient(GRACE)
    orchestra.resume(constellation)
    second = orchestra.constellation(constellation.id).stars["second"]
    assert second.status is StarStatus.RUNNING  # adopted: the device may still report it

    clock.advance(GRACE + 0.1)

    assert second.attempts[0].status is AttemptStatus.FAILED
    assert "did not reconnect" in (second.attempts[0].error or "")
    assert second.status is not StarStatus.SUCCEEDED
    assert orchestra.constellation(constellation.id).stars["first"].attempts[0].number == 1


def test_an_attempt_no_dispatcher_can_take_back_is_interrupted_at_once(store: Store) -> None:
    clock = VirtualClock()
    orchestra, _ = orchestrator(store, clock)
    constellation = crashed_run(device="this-machine")  # not an enrolled AIP device

    orchestra.resume(constellation)

    second = orchestra.constellation(constellation.id).stars["second"]
    assert "interrupted: the orchestrator restarted" in (second.attempts[0].error or "")
    assert second.status is StarStatus.FAILED  # no retries left
    assert orchestra.constellation(constellation.id).status is ConstellationStatus.FAILED


def test_catch_up_adds_the_attempts_started_after_the_snapshot() -> None:
    constellation = crashed_run()
    started = StarStarted(constellation_id=constellation.id, star_id="third", attempt=1, device="x")
    started.ts = 5.0

    catch_up(constellation, [started])

    third = constellation.stars["third"]
    assert third.status is StarStatus.RUNNING
    assert [(a.number, a.device, a.status) for a in third.attempts] == [
        (1, "x", AttemptStatus.RUNNING)
    ]
    catch_up(constellation, [started])  # the same event again changes nothing
    assert len(third.attempts) == 1


def test_the_device_reconnecting_with_the_attempt_keeps_it(store: Store) -> None:
    clock = VirtualClock()
    _, dispatcher = orchestrator(store, clock)
    assignment = TaskAssignment(
        constellation_id="c1", star_id="s", attempt=3, device="box", tool="shell.run", args={}
    )
    assert dispatcher.adopt(assignment)
    assert dispatcher._owns("box", assignment.key)  # its result will be taken
    assert not dispatcher.adopt(assignment.model_copy(update={"device": "stranger"}))
