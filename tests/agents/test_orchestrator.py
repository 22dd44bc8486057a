"""The orchestrator on a simulated fleet and a virtual clock.

Line kinds, retries and fencing, timeouts, cancellation, scheduling order and device
limits, `${...}` references, `allow_failure`, the event stream and a few edge cases.
Everything is driven synchronously through `VirtualClock.advance` / `run_until_idle`;
async tests exist only for `await handle.wait()` and `events.subscribe()`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pytest

from agents.constellation import (
    AttemptStatus,
    ConstellationStatus,
    StarStatus,
    UnknownStar,
)
from agents.events import (
    AttemptFailed,
    ConstellationFinished,
    ConstellationSubmitted,
    Event,
    StaleResultIgnored,
    StarFinished,
    StarProgress,
    StarReady,
    StarStarted,
    Subscription,
)
from agents.orchestrator import (
    ConstellationFinishedError,
    DuplicateConstellation,
    Orchestrator,
    UnknownConstellation,
)
from agents.simulation import Outcome
from devices.registry import DeviceInfo
from protocol.tasks import TaskAssignment, TaskOutcome, TaskProgress, TaskResult

if TYPE_CHECKING:
    from conftest import Sim

    MakeSim = Callable[..., Sim]

TOOLS = frozenset({"shell.run", "python.run", "fs.write", "agent.do"})
HANG = Outcome(duration=None)
WAIT = 5.0  # a safety net for awaits that should complete at once, never a delay

PENDING = StarStatus.PENDING
READY = StarStatus.READY
RUNNING = StarStatus.RUNNING
SUCCEEDED = StarStatus.SUCCEEDED
FAILED = StarStatus.FAILED
CANCELLED = StarStatus.CANCELLED
SKIPPED = StarStatus.SKIPPED


def ok(output: Any = None, duration: float = 1.0) -> Outcome:
    return Outcome(duration=duration, output=output)


def fail(error: str = "boom", duration: float = 1.0, output: Any = None) -> Outcome:
    return Outcome(duration=duration, status=TaskOutcome.FAILED, error=error, output=output)


def device(
    name: str,
    *,
    max_tasks: int = 1,
    labels: Iterable[str] = (),
    tools: Iterable[str] = TOOLS,
    platform: str = "linux",
    gpu: bool = False,
) -> DeviceInfo:
    return DeviceInfo(
        name=name,
        max_tasks=max_tasks,
        labels=frozenset(labels),
        tools=frozenset(tools),
        platform=platform,
        gpu=gpu,
    )


def star(star_id: str, *after: str, **fields: Any) -> dict[str, Any]:
    """A plan star (`shell.run` unless told otherwise); `after` gives success lines."""
    spec: dict[str, Any] = {"id": star_id, "tool": "shell.run", "args": {"cmd": star_id}}
    spec.update(fields)
    if after:
        spec["after"] = list(after)
    return spec


def line(source: str, target: str, kind: str = "success", **fields: Any) -> dict[str, Any]:
    return {"from": source, "to": target, "kind": kind, **fields}


def finished(sim: Sim, cid: str = "c1") -> ConstellationFinished:
    [event] = sim.of(ConstellationFinished, cid=cid)
    return event


async def collect(subscription: Subscription) -> list[Event]:
    async def drain() -> list[Event]:
        return [event async for event in subscription]

    return await asyncio.wait_for(drain(), WAIT)


# --------------------------------------------------------------------------- line kinds


def test_success_line_runs_downstream_only_after_upstream_succeeded(sim: Sim) -> None:
    handle = sim.submit(star("a"), star("b", "a"))
    assert sim.statuses(handle) == {"a": RUNNING, "b": PENDING}

    sim.clock.run_until_idle()

    assert sim.statuses(handle) == {"a": SUCCEEDED, "b": SUCCEEDED}
    [a_done] = sim.of(StarFinished, "a")
    [b_start] = sim.of(StarStarted, "b")
    assert b_start.ts == 1.0
    assert a_done.seq < b_start.seq
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_failure_skips_success_downstream_transitively_but_not_through_completion(
    sim: Sim,
) -> None:
    sim.script("a", fail("disk full"))
    handle = sim.submit(
        star("a"),
        star("b", "a"),
        star("c", "b"),
        star("d"),
        star("e", "d"),
        lines=[line("b", "d", "completion")],
    )
    sim.clock.run_until_idle()

    assert sim.statuses(handle) == {
        "a": FAILED,
        "b": SKIPPED,
        "c": SKIPPED,
        "d": SUCCEEDED,
        "e": SUCCEEDED,
    }
    stars = handle.constellation.stars
    assert stars["b"].skip_reason == "upstream star 'a' failed"
    assert stars["c"].skip_reason == "upstream star 'b' skipped"
    [b_finished] = sim.of(StarFinished, "b")
    assert b_finished.status == "skipped"
    assert b_finished.error == "upstream star 'a' failed"
    assert b_finished.attempt is None
    assert [a.star_id for a in sim.dispatcher.assigned] == ["a", "d", "e"]
    # skipping happens the moment the upstream fails, not later
    assert sim.of(StarFinished, "c")[0].ts == 1.0

    end = finished(sim)
    assert handle.constellation.status is ConstellationStatus.FAILED
    assert (end.status, end.failed_star, end.reason) == ("failed", "a", "attempt 1/1: disk full")


@pytest.mark.parametrize("join_first", [True, False], ids=["join-listed-first", "join-listed-last"])
def test_skip_reaching_a_star_along_two_paths_skips_it_once(sim: Sim, join_first: bool) -> None:
    # a -> b -> join and a -> join: when `a` fails, `join` is skipped via `a` and via `b`
    # (which order depends on the order of a's lines); it must be decided only once.
    sim.script("a", fail())
    join = star("join", "a", "b")
    stars = [star("a"), join, star("b", "a")] if join_first else [star("a"), star("b", "a"), join]
    handle = sim.submit(*stars, star("tail", "join"))
    sim.clock.run_until_idle()

    assert sim.statuses(handle) == {"a": FAILED, "b": SKIPPED, "join": SKIPPED, "tail": SKIPPED}
    assert Counter(e.star_id for e in sim.of(StarFinished)) == {
        "a": 1,
        "b": 1,
        "join": 1,
        "tail": 1,
    }
    assert handle.constellation.status is ConstellationStatus.FAILED
    assert len(sim.of(ConstellationFinished)) == 1


@pytest.mark.parametrize("upstream", [ok({"x": 1}), fail("nope")], ids=["success", "failure"])
def test_completion_line_runs_downstream_after_either_outcome(sim: Sim, upstream: Outcome) -> None:
    sim.script("a", upstream)
    handle = sim.submit(star("a"), star("b"), lines=[line("a", "b", "completion")])
    assert sim.star(handle, "b").status is PENDING

    sim.clock.run_until_idle()

    assert sim.star(handle, "b").status is SUCCEEDED
    assert sim.of(StarStarted, "b")[0].ts == 1.0


def test_completion_line_runs_downstream_of_a_skipped_star(sim: Sim) -> None:
    sim.script("a", fail())
    handle = sim.submit(
        star("a"), star("b", "a"), star("report"), lines=[line("b", "report", "completion")]
    )
    sim.clock.run_until_idle()

    assert sim.statuses(handle) == {"a": FAILED, "b": SKIPPED, "report": SUCCEEDED}


@pytest.mark.parametrize(("returncode", "runs"), [(0, True), (1, False)])
def test_condition_line_follows_its_predicate(sim: Sim, returncode: int, runs: bool) -> None:
    sim.script("check", ok({"returncode": returncode}))
    when = {"path": "output.returncode", "op": "eq", "value": 0}
    handle = sim.submit(
        star("check"),
        star("deploy"),
        star("announce", "deploy"),
        lines=[line("check", "deploy", "condition", when=when)],
    )
    sim.clock.run_until_idle()

    deploy = sim.star(handle, "deploy")
    if runs:
        assert deploy.status is SUCCEEDED
        assert sim.star(handle, "announce").status is SUCCEEDED
    else:
        assert deploy.status is SKIPPED
        assert deploy.skip_reason == "condition on line check->deploy is false"
        assert sim.star(handle, "announce").skip_reason == "upstream star 'deploy' skipped"
        assert sim.assignments("deploy") == []
    # a false condition is a decision, not a failure
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


@pytest.mark.parametrize("work_fails", [True, False])
def test_condition_over_status_runs_cleanup_only_when_upstream_failed(
    sim: Sim, work_fails: bool
) -> None:
    sim.script("work", fail("crashed") if work_fails else ok())
    when = {"path": "status", "op": "eq", "value": "failed"}
    handle = sim.submit(
        star("work"), star("cleanup"), lines=[line("work", "cleanup", "condition", when=when)]
    )
    sim.clock.run_until_idle()

    cleanup = sim.star(handle, "cleanup")
    if work_fails:
        assert cleanup.status is SUCCEEDED
        assert handle.constellation.status is ConstellationStatus.FAILED
        assert finished(sim).failed_star == "work"
    else:
        assert cleanup.status is SKIPPED
        assert cleanup.skip_reason == "condition on line work->cleanup is false"
        assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_condition_over_nested_output_fields(sim: Sim) -> None:
    report = {
        "hosts": [{"name": "web", "open": [22, 80]}, {"name": "db", "open": []}],
        "summary": {"critical": 2},
    }
    sim.script("scan", ok({"report": report}))
    critical = {"path": "output.report.summary.critical", "op": "gt", "value": 0}
    ssh_open = {"path": "output.report.hosts.0.open", "op": "contains", "value": 22}
    handle = sim.submit(
        star("scan"),
        star("alert"),
        star("quiet"),
        star("db_closed"),
        star("missing"),
        star("after_quiet", "quiet"),
        lines=[
            line("scan", "alert", "condition", when={"all": [critical, ssh_open]}),
            line(
                "scan",
                "quiet",
                "condition",
                when={"path": "output.report.summary.critical", "op": "eq", "value": 0},
            ),
            line(
                "scan",
                "db_closed",
                "condition",
                when={"not": {"path": "output.report.hosts.1.open", "op": "truthy"}},
            ),
            line(
                "scan",
                "missing",
                "condition",
                when={"path": "output.report.nothing.here", "op": "ne", "value": 1},
            ),
        ],
    )
    sim.clock.run_until_idle()

    assert sim.statuses(handle) == {
        "scan": SUCCEEDED,
        "alert": SUCCEEDED,
        "quiet": SKIPPED,
        "db_closed": SUCCEEDED,
        "missing": SKIPPED,  # a path that does not resolve is false, not an error
        "after_quiet": SKIPPED,
    }
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


# --------------------------------------------------------------------------- retries, fencing


def test_retries_fail_twice_then_succeed(sim: Sim) -> None:
    sim.script("s", fail("first"), fail("second"), ok({"n": 3}))
    handle = sim.submit(star("s", retries=2), star("next", "s"))
    sim.clock.run_until_idle()

    s = sim.star(handle, "s")
    assert s.status is SUCCEEDED
    assert s.output == {"n": 3}
    assert s.error is None
    assert [a.number for a in s.attempts] == [1, 2, 3]
    assert [a.status for a in s.attempts] == [
        AttemptStatus.FAILED,
        AttemptStatus.FAILED,
        AttemptStatus.SUCCEEDED,
    ]
    assert [a.error for a in s.attempts] == ["first", "second", None]
    assert [(a.started_at, a.finished_at) for a in s.attempts] == [
        (0.0, 1.0),
        (1.0, 2.0),
        (2.0, 3.0),
    ]
    assert [a.attempt for a in sim.assignments("s")] == [1, 2, 3]
    assert [e.attempt for e in sim.of(StarStarted, "s")] == [1, 2, 3]
    assert [(e.attempt, e.error, e.will_retry) for e in sim.of(AttemptFailed, "s")] == [
        (1, "first", True),
        (2, "second", True),
    ]
    [done] = sim.of(StarFinished, "s")
    assert (done.status, done.attempt, done.output) == ("succeeded", 3, {"n": 3})
    assert sim.star(handle, "next").status is SUCCEEDED
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_late_result_of_an_older_attempt_is_ignored(sim: Sim) -> None:
    sim.script("s", HANG)
    handle = sim.submit(star("s", retries=1), star("after", "s"))
    first = sim.assignments("s")[0]
    sim.dispatcher.deliver(TaskResult.failure(first, "device lost"))
    assert [a.attempt for a in sim.assignments("s")] == [1, 2]

    before = handle.constellation.canonical_json()
    events_before = len(sim.log)
    sim.dispatcher.deliver(TaskResult.success(first, {"late": True}))

    [stale] = sim.of(StaleResultIgnored, "s")
    assert (stale.attempt, stale.current_attempt) == (1, 2)
    assert len(sim.log) == events_before + 1  # the stale notice and nothing else
    assert handle.constellation.canonical_json() == before
    s = sim.star(handle, "s")
    assert s.status is RUNNING
    assert s.attempts[-1].status is AttemptStatus.RUNNING
    assert s.output is None
    assert sim.star(handle, "after").status is PENDING

    second = sim.assignments("s")[1]
    sim.dispatcher.deliver(TaskResult.success(second, {"attempt": 2}))
    sim.clock.run_until_idle()
    assert s.output is not None  # same object: `s` was not replaced (no edits)
    assert sim.star(handle, "s").output == {"attempt": 2}
    assert sim.statuses(handle) == {"s": SUCCEEDED, "after": SUCCEEDED}


def test_duplicate_result_after_the_attempt_finished_is_ignored(sim: Sim) -> None:
    sim.script("b", HANG)
    handle = sim.submit(star("a"), star("b", "a"), star("c", "a", "b"))
    sim.clock.advance(1)
    assert sim.statuses(handle) == {"a": SUCCEEDED, "b": RUNNING, "c": PENDING}

    a_assignment = sim.assignments("a")[0]
    before = handle.constellation.canonical_json()
    sim.dispatcher.deliver(TaskResult.success(a_assignment, {"again": True}))
    sim.dispatcher.deliver(TaskResult.failure(a_assignment, "contradicting"))

    stale = sim.of(StaleResultIgnored, "a")
    assert [(e.attempt, e.current_attempt) for e in stale] == [(1, 1), (1, 1)]
    assert handle.constellation.canonical_json() == before
    assert sim.star(handle, "a").output == {"star": "a"}
    # `c` still waits for `b`: the duplicate did not count `a` a second time
    assert sim.star(handle, "c").status is PENDING
    assert sim.of(StarReady, "c") == []

    sim.dispatcher.deliver(TaskResult.success(sim.assignments("b")[0], {"b": 1}))
    sim.clock.run_until_idle()
    assert sim.statuses(handle) == {"a": SUCCEEDED, "b": SUCCEEDED, "c": SUCCEEDED}
    assert Counter(e.star_id for e in sim.of(StarFinished)) == {"a": 1, "b": 1, "c": 1}


def test_duplicate_result_after_the_constellation_finished_changes_nothing(sim: Sim) -> None:
    handle = sim.submit(star("a"))
    sim.clock.run_until_idle()
    before = handle.constellation.canonical_json()

    sim.dispatcher.deliver(TaskResult.failure(sim.assignments("a")[0], "too late"))

    assert handle.constellation.canonical_json() == before
    assert len(sim.of(StaleResultIgnored, "a")) == 1
    assert len(sim.of(StarFinished)) == 1
    assert len(sim.of(ConstellationFinished)) == 1


def test_results_for_unknown_constellation_star_or_attempt_are_ignored(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"))
    count = len(sim.log)

    sim.dispatcher.deliver(
        TaskResult(constellation_id="nope", star_id="a", attempt=1, status=TaskOutcome.SUCCEEDED)
    )
    assert len(sim.log) == count  # nothing to report about a constellation we do not own

    sim.dispatcher.deliver(
        TaskResult(constellation_id="c1", star_id="ghost", attempt=1, status=TaskOutcome.SUCCEEDED)
    )
    sim.dispatcher.deliver(
        TaskResult(constellation_id="c1", star_id="a", attempt=7, status=TaskOutcome.FAILED)
    )
    assert [(e.star_id, e.attempt, e.current_attempt) for e in sim.of(StaleResultIgnored)] == [
        ("ghost", 1, None),
        ("a", 7, 1),
    ]
    assert sim.star(handle, "a").status is RUNNING
    assert "ghost" not in handle.constellation.stars

    sim.dispatcher.deliver(TaskResult.success(sim.assignments("a")[0], {"fine": True}))
    assert sim.star(handle, "a").status is SUCCEEDED
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


@pytest.mark.parametrize("retries", [0, 2])
def test_exhausted_retries_fail_the_star_with_the_last_error(sim: Sim, retries: int) -> None:
    sim.script("s", fail("exit 3"))
    handle = sim.submit(star("s", retries=retries), star("t", "s"))
    sim.clock.run_until_idle()

    total = retries + 1
    s = sim.star(handle, "s")
    assert s.status is FAILED
    assert s.error == f"attempt {total}/{total}: exit 3"
    assert [a.number for a in s.attempts] == list(range(1, total + 1))
    assert {a.status for a in s.attempts} == {AttemptStatus.FAILED}
    assert [e.will_retry for e in sim.of(AttemptFailed, "s")] == [True] * retries + [False]
    assert sim.star(handle, "t").status is SKIPPED
    end = finished(sim)
    assert (end.status, end.failed_star, end.reason) == ("failed", "s", s.error)


def test_results_reported_synchronously_from_assign_are_handled(make_sim: MakeSim) -> None:
    # A dispatcher may refuse work at once (e.g. a tool disabled by the device's policy),
    # calling back into the orchestrator while it is still handing out stars.
    sim = make_sim([device("d1"), device("d2")])

    def refuse_at_once(assignment: TaskAssignment) -> Outcome:
        sim.dispatcher.deliver(TaskResult.failure(assignment, "tool disabled by policy"))
        return HANG

    sim.script("a", refuse_at_once, refuse_at_once, ok({"third": True}))
    sim.script("b", refuse_at_once)
    handle = sim.submit(
        star("a", retries=2), star("b", allow_failure=True), star("c", "a"), star("d")
    )

    a = sim.star(handle, "a")
    assert [(x.number, x.status) for x in a.attempts] == [
        (1, AttemptStatus.FAILED),
        (2, AttemptStatus.FAILED),
        (3, AttemptStatus.RUNNING),
    ]
    assert sim.star(handle, "b").error == "attempt 1/1: tool disabled by policy"
    sim.clock.run_until_idle()
    assert sim.statuses(handle) == {"a": SUCCEEDED, "b": FAILED, "c": SUCCEEDED, "d": SUCCEEDED}
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_progress_of_the_current_attempt_only_is_reported(sim: Sim) -> None:
    sim.script("s", HANG)
    sim.submit(star("s", retries=1))
    first = sim.assignments("s")[0]
    sim.orch.on_progress(TaskProgress(constellation_id="c1", star_id="s", attempt=1, message="1"))
    sim.dispatcher.deliver(TaskResult.failure(first, "lost"))
    sim.orch.on_progress(TaskProgress(constellation_id="c1", star_id="s", attempt=1, message="x"))
    sim.orch.on_progress(TaskProgress(constellation_id="c1", star_id="s", attempt=2, message="2"))
    sim.orch.on_progress(TaskProgress(constellation_id="zz", star_id="s", attempt=2, message="?"))

    assert [(e.attempt, e.message) for e in sim.of(StarProgress)] == [(1, "1"), (2, "2")]


# --------------------------------------------------------------------------- timeouts


def test_hanging_star_times_out_exactly_at_its_timeout(sim: Sim) -> None:
    sim.script("s", HANG)
    handle = sim.submit(star("s", timeout=30))
    [assignment] = sim.assignments("s")
    assert assignment.timeout == 30

    sim.clock.advance(29.5)
    assert sim.star(handle, "s").status is RUNNING
    assert sim.of(AttemptFailed) == []
    assert sim.dispatcher.cancelled == []

    sim.clock.advance(0.5)
    s = sim.star(handle, "s")
    assert s.status is FAILED
    assert s.error == "attempt 1/1: timed out after 30s"
    [attempt] = s.attempts
    assert (attempt.status, attempt.finished_at) == (AttemptStatus.TIMED_OUT, 30.0)
    [failed] = sim.of(AttemptFailed, "s")
    assert (failed.ts, failed.timed_out, failed.will_retry) == (30.0, True, False)
    assert failed.error == "timed out after 30s"
    assert sim.of(StarFinished, "s")[0].ts == 30.0
    assert sim.dispatcher.cancelled == [(assignment, "timed out after 30s")]
    end = finished(sim)
    assert (end.ts, end.status) == (30.0, "failed")


def test_timed_out_attempt_is_retried(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0"), device("dev1")])
    sim.script("s", HANG, ok({"n": 2}, duration=5))
    handle = sim.submit(star("s", timeout=30, retries=1))

    sim.clock.advance(30)
    assert [(e.attempt, e.ts) for e in sim.of(StarStarted, "s")] == [(1, 0.0), (2, 30.0)]
    [failed] = sim.of(AttemptFailed, "s")
    assert (failed.attempt, failed.timed_out, failed.will_retry) == (1, True, True)
    assert [(a.attempt, reason) for a, reason in sim.dispatcher.cancelled] == [
        (1, "timed out after 30s")
    ]
    assert sim.star(handle, "s").status is RUNNING

    sim.clock.run_until_idle()
    s = sim.star(handle, "s")
    assert s.status is SUCCEEDED
    assert s.output == {"n": 2}
    assert [a.status for a in s.attempts] == [AttemptStatus.TIMED_OUT, AttemptStatus.SUCCEEDED]
    assert sim.of(StarFinished, "s")[0].ts == 35.0


def test_timer_of_an_earlier_attempt_does_not_time_out_the_retry(sim: Sim) -> None:
    sim.script("s", fail("early", duration=25), HANG)
    handle = sim.submit(star("s", timeout=30, retries=1))

    sim.clock.advance(50)  # attempt 1's deadline (30) has passed; attempt 2's (55) has not
    assert sim.star(handle, "s").status is RUNNING
    assert [e.timed_out for e in sim.of(AttemptFailed, "s")] == [False]

    sim.clock.advance(5)
    [_, timed_out] = sim.of(AttemptFailed, "s")
    assert (timed_out.attempt, timed_out.timed_out, timed_out.ts) == (2, True, 55.0)
    assert sim.star(handle, "s").status is FAILED


def test_result_arriving_after_the_timeout_is_ignored(make_sim: MakeSim) -> None:
    sim = make_sim(deliver_after_cancel=True)
    sim.script("s", ok({"late": True}, duration=45))
    handle = sim.submit(star("s", timeout=30), star("t", "s"))

    sim.clock.advance(30)
    assert sim.statuses(handle) == {"s": FAILED, "t": SKIPPED}
    before = handle.constellation.canonical_json()

    sim.clock.run_until_idle()
    assert sim.clock.now() == 45.0
    [stale] = sim.of(StaleResultIgnored, "s")
    assert (stale.attempt, stale.current_attempt, stale.ts) == (1, 1, 45.0)
    assert handle.constellation.canonical_json() == before
    assert sim.star(handle, "s").output is None
    assert len(sim.of(StarFinished, "s")) == 1
    assert len(sim.of(ConstellationFinished)) == 1


def test_late_result_of_a_timed_out_attempt_does_not_finish_its_retry(make_sim: MakeSim) -> None:
    sim = make_sim(deliver_after_cancel=True)
    sim.script("s", ok({"attempt": 1}, duration=45), ok({"attempt": 2}, duration=20))
    handle = sim.submit(star("s", timeout=30, retries=1))

    sim.clock.advance(45)
    [stale] = sim.of(StaleResultIgnored, "s")
    assert (stale.attempt, stale.current_attempt) == (1, 2)
    s = sim.star(handle, "s")
    assert s.status is RUNNING
    assert s.output is None

    sim.clock.run_until_idle()
    s = sim.star(handle, "s")
    assert s.status is SUCCEEDED
    assert s.output == {"attempt": 2}
    assert sim.of(StarFinished, "s")[0].ts == 50.0


def test_star_finishing_before_its_timeout_is_unaffected(sim: Sim) -> None:
    sim.script("s", ok({"done": True}, duration=5))
    handle = sim.submit(star("s", timeout=30))

    sim.clock.advance(5)
    assert sim.star(handle, "s").status is SUCCEEDED
    assert sim.clock.pending == 0  # the timeout timer went with the result

    sim.clock.advance(100)
    s = sim.star(handle, "s")
    assert s.status is SUCCEEDED
    assert s.attempts[0].status is AttemptStatus.SUCCEEDED
    assert sim.of(AttemptFailed) == []
    assert sim.dispatcher.cancelled == []
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


# --------------------------------------------------------------------------- cancellation


def test_cancel_a_pending_star(sim: Sim) -> None:
    sim.script("a", ok(duration=10))
    handle = sim.submit(
        star("a"),
        star("b", "a"),
        star("c", "b"),
        star("d"),
        lines=[line("b", "d", "completion")],
    )
    sim.clock.advance(2)

    assert sim.orch.cancel_star("c1", "b", "not needed") is True

    b = sim.star(handle, "b")
    assert (b.status, b.error) == (CANCELLED, "not needed")
    assert sim.star(handle, "c").status is SKIPPED
    assert sim.star(handle, "c").skip_reason == "upstream star 'b' cancelled"
    assert sim.star(handle, "d").status is RUNNING
    assert sim.of(StarStarted, "d")[0].ts == 2.0
    assert sim.dispatcher.cancelled == []

    sim.clock.run_until_idle()
    assert sim.statuses(handle) == {
        "a": SUCCEEDED,
        "b": CANCELLED,
        "c": SKIPPED,
        "d": SUCCEEDED,
    }
    assert sim.assignments("b") == sim.assignments("c") == []
    assert handle.constellation.status.terminal
    assert len(sim.of(ConstellationFinished)) == 1


def test_cancel_a_running_star(make_sim: MakeSim) -> None:
    sim = make_sim(deliver_after_cancel=True)
    sim.script("a", ok({"v": 1}, duration=10))
    handle = sim.submit(
        star("a", retries=3), star("b", "a"), star("c"), lines=[line("a", "c", "completion")]
    )
    sim.clock.advance(2)

    assert sim.orch.cancel_star("c1", "a", "operator said stop") is True

    [assignment] = sim.assignments("a")
    assert sim.dispatcher.cancelled == [(assignment, "operator said stop")]
    a = sim.star(handle, "a")
    assert a.status is CANCELLED
    [attempt] = a.attempts
    assert (attempt.status, attempt.finished_at) == (AttemptStatus.CANCELLED, 2.0)
    assert sim.star(handle, "b").status is SKIPPED
    assert sim.star(handle, "c").status is RUNNING

    sim.clock.run_until_idle()  # the cancelled attempt still answers at t=10
    [stale] = sim.of(StaleResultIgnored, "a")
    assert stale.ts == 10.0
    a = sim.star(handle, "a")
    assert a.status is CANCELLED
    assert a.output is None
    assert len(sim.assignments("a")) == 1  # a cancel is not retried
    assert sim.star(handle, "c").status is SUCCEEDED


def test_cancel_star_on_a_finished_or_unknown_star(sim: Sim) -> None:
    sim.script("b", HANG)
    handle = sim.submit(star("a"), star("b"))
    sim.clock.advance(1)
    count = len(sim.log)

    assert sim.orch.cancel_star("c1", "a") is False
    assert sim.star(handle, "a").status is SUCCEEDED
    assert len(sim.log) == count
    with pytest.raises(UnknownStar):
        sim.orch.cancel_star("c1", "zzz")
    with pytest.raises(UnknownConstellation):
        sim.orch.cancel_star("nope", "a")


async def test_cancel_the_whole_constellation(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.script("a", HANG)
    handle = sim.submit(star("a", retries=2), star("b", "a"), star("c"), star("d", "c"))
    waiter = asyncio.ensure_future(handle.wait())
    await asyncio.sleep(0)  # let the waiter register; no time passes
    assert not waiter.done()
    assert sim.statuses(handle) == {"a": RUNNING, "b": PENDING, "c": READY, "d": PENDING}

    handle.cancel("user pressed stop")

    final = await asyncio.wait_for(waiter, WAIT)
    assert final is handle.constellation
    assert final.status is ConstellationStatus.CANCELLED
    assert set(sim.statuses(handle).values()) == {CANCELLED}
    end = finished(sim)
    assert (end.status, end.reason, end.failed_star) == ("cancelled", "user pressed stop", None)
    [assignment] = sim.dispatcher.assigned
    assert sim.dispatcher.cancelled == [(assignment, "user pressed stop")]
    assert Counter(e.star_id for e in sim.of(StarFinished)) == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert sim.of(AttemptFailed) == []

    sim.clock.run_until_idle()
    assert sim.dispatcher.assigned == [assignment]  # nothing started afterwards
    assert await handle.wait() is final


def test_cancel_after_the_end_is_a_no_op(sim: Sim) -> None:
    handle = sim.submit(star("a"))
    sim.clock.run_until_idle()
    count = len(sim.log)
    before = handle.constellation.canonical_json()

    handle.cancel()
    sim.orch.cancel("c1", "again")

    assert len(sim.log) == count
    assert handle.constellation.canonical_json() == before
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED
    with pytest.raises(ConstellationFinishedError):
        sim.orch.cancel_star("c1", "a")


def test_cancelling_a_queued_constellation_dispatches_nothing(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.script("blocker", ok(duration=10))
    first = sim.submit(star("blocker"), cid="c1")
    second = sim.submit(star("x"), star("y", "x"), star("z"), cid="c2")
    assert sim.statuses(second) == {"x": READY, "y": PENDING, "z": READY}

    second.cancel()

    assert second.constellation.status is ConstellationStatus.CANCELLED
    assert set(sim.statuses(second).values()) == {CANCELLED}
    sim.clock.run_until_idle()
    assert [a.star_id for a in sim.dispatcher.assigned] == ["blocker"]
    assert first.constellation.status is ConstellationStatus.SUCCEEDED


# --------------------------------------------------------------------------- scheduling


def test_higher_priority_ready_star_starts_first(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.submit(
        star("low", priority=-5),
        star("plain"),
        star("high", priority=10),
        star("higher_than_plain", priority=1),
    )
    sim.clock.run_until_idle()

    assert sim.started() == ["high", "higher_than_plain", "plain", "low"]


def test_star_heading_a_longer_chain_starts_before_a_lone_star(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.submit(star("lone"), star("head"), star("middle", "head"), star("tail", "middle"))
    assert sim.started() == ["head"]

    sim.clock.run_until_idle()
    assert sim.started()[:2] == ["head", "middle"]  # middle (2 left) before lone (1 left)


def test_remaining_path_is_weighed_by_estimates(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.submit(
        star("head"),
        star("middle", "head"),
        star("tail", "middle"),
        star("long_lone", estimate=10),
    )
    assert sim.started() == ["long_lone"]


def test_priority_beats_remaining_path(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.submit(
        star("head"), star("middle", "head"), star("tail", "middle"), star("urgent", priority=1)
    )
    assert sim.started() == ["urgent"]


def test_per_device_concurrency_limits_hold_at_every_moment(make_sim: MakeSim) -> None:
    limits = {"small": 1, "mid": 2, "big": 3}
    sim = make_sim([device(name, max_tasks=n) for name, n in limits.items()])
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    where: dict[str, str] = {}
    violations: list[str] = []

    def track(event: Event) -> None:
        # listeners' exceptions are swallowed by the stream, so record violations instead
        if isinstance(event, StarStarted):
            running[event.device] += 1
            where[event.star_id] = event.device
            peak[event.device] = max(peak[event.device], running[event.device])
            if running[event.device] > limits[event.device]:
                violations.append(f"{event.device} ran {running[event.device]} at {event.ts}")
        elif isinstance(event, AttemptFailed | StarFinished) and event.star_id in where:
            # an attempt ends with AttemptFailed (failure, timeout) or StarFinished
            running[where.pop(event.star_id)] -= 1

    sim.events.listen(track)
    stars = []
    for i in range(40):
        sid = f"s{i}"
        duration = 1 + (i * 7) % 5
        fields: dict[str, Any] = {}
        if i % 5 == 0:
            sim.script(sid, fail(duration=duration), ok(duration=duration))
            fields["retries"] = 1
        elif i % 7 == 0:
            sim.script(sid, HANG, ok(duration=2))
            fields.update(timeout=4, retries=1)
        else:
            sim.script(sid, ok(duration=duration))
        after = (f"s{i - 1}",) if i % 4 == 3 else ()
        stars.append(star(sid, *after, **fields))
    handle = sim.submit(*stars)
    sim.clock.run_until_idle()

    assert violations == []
    assert dict(peak) == limits  # every device was filled to, and never beyond, its limit
    assert set(running.values()) == {0}
    assert set(sim.statuses(handle).values()) == {SUCCEEDED}
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_load_is_spread_across_devices(make_sim: MakeSim) -> None:
    sim = make_sim([device(f"d{i}", max_tasks=4) for i in range(4)])
    for i in range(8):
        sim.script(f"s{i}", HANG)
    sim.submit(*(star(f"s{i}") for i in range(8)))

    assert Counter(e.device for e in sim.of(StarStarted)) == {"d0": 2, "d1": 2, "d2": 2, "d3": 2}


def test_selectors_route_stars_to_matching_devices_only(make_sim: MakeSim) -> None:
    sim = make_sim(
        [
            device("laptop", max_tasks=8, labels={"desk"}, platform="darwin"),
            device("server", max_tasks=8, labels={"linux", "rack"}, gpu=True),
            device("pi", max_tasks=8, labels={"linux", "arm"}),
        ]
    )
    allowed = {
        "by_label": {"server", "pi"},
        "by_two_labels": {"pi"},
        "by_name": {"laptop"},
        "by_platform": {"laptop"},
        "by_gpu": {"server"},
    }
    selectors: dict[str, Any] = {
        "by_label": {"labels": ["linux"]},
        "by_two_labels": {"labels": ["linux", "arm"]},
        "by_name": "laptop",
        "by_platform": {"platform": "darwin"},
        "by_gpu": {"gpu": True},
    }
    stars = [
        star(f"{kind}{i}", on=selectors[kind], estimate=1 + i) for kind in allowed for i in range(4)
    ]
    handle = sim.submit(*stars)
    sim.clock.run_until_idle()

    for event in sim.of(StarStarted):
        kind = event.star_id.rstrip("0123456789")
        assert event.device in allowed[kind], event
    assert {e.device for e in sim.of(StarStarted) if e.star_id.startswith("by_label")} == {
        "server",
        "pi",
    }
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("fields", "needs", "why"),
    [
        ({"on": {"labels": ["gpu"]}}, '"labels":["gpu"]', "lacks label(s) gpu"),
        ({"on": "nowhere"}, '"name":"nowhere"', "is not 'nowhere'"),
        ({"tool": "fs.read"}, "tool 'fs.read'", "lacks tool 'fs.read'"),
    ],
    ids=["label", "name", "tool"],
)
def test_star_no_device_can_run_fails_fast(
    make_sim: MakeSim, fields: dict[str, Any], needs: str, why: str
) -> None:
    sim = make_sim([device("laptop", labels={"desk"}), device("server", labels={"rack"})])
    handle = sim.submit(star("train", **fields), star("report", "train"), star("other"))

    # decided at once, without waiting for any device or any time to pass
    train = sim.star(handle, "train")
    assert train.status is FAILED
    assert train.attempts == []
    assert sim.assignments("train") == []
    assert sim.star(handle, "report").status is SKIPPED
    assert sim.of(StarFinished, "train")[0].ts == 0.0
    error = train.error or ""
    assert "'train'" in error
    assert needs in error
    assert f"laptop {why}" in error
    assert f"server {why}" in error

    sim.clock.run_until_idle()
    assert sim.star(handle, "other").status is SUCCEEDED
    end = finished(sim)
    assert (end.status, end.failed_star, end.reason) == ("failed", "train", error)


def test_star_fails_fast_when_no_device_is_connected(make_sim: MakeSim) -> None:
    sim = make_sim([])
    handle = sim.submit(star("a"))

    assert handle.constellation.status is ConstellationStatus.FAILED
    assert "no devices are connected" in (sim.star(handle, "a").error or "")


def test_retry_prefers_another_free_device(make_sim: MakeSim) -> None:
    sim = make_sim([device("d1"), device("d2"), device("d3")])
    sim.script("s", fail(), fail(), ok())
    handle = sim.submit(star("s", retries=2))
    sim.clock.run_until_idle()

    devices = [a.device for a in sim.star(handle, "s").attempts]
    assert len(devices) == 3
    assert devices[0] != devices[1] != devices[2]
    assert sim.star(handle, "s").status is SUCCEEDED


def test_retry_falls_back_to_the_same_device_when_no_other_is_free(make_sim: MakeSim) -> None:
    sim = make_sim([device("d1"), device("d2")])
    sim.script("busy", HANG)
    sim.script("s", fail(), ok())
    handle = sim.submit(star("busy", priority=1), star("s", retries=1))
    busy_device = sim.of(StarStarted, "busy")[0].device
    sim.clock.run_until_idle()

    devices = [a.device for a in sim.star(handle, "s").attempts]
    assert devices[0] == devices[1] != busy_device
    assert sim.star(handle, "s").status is SUCCEEDED


# --------------------------------------------------------------------------- devices change


def test_device_joining_picks_up_queued_stars(make_sim: MakeSim) -> None:
    sim = make_sim([device("d1")])
    sim.script("a", HANG)
    handle = sim.submit(star("a"), star("b"))
    assert sim.star(handle, "b").status is READY

    sim.dispatcher.set_fleet([device("d1"), device("d2")])

    assert sim.star(handle, "b").status is RUNNING
    assert sim.of(StarStarted, "b")[0].device == "d2"


def test_queued_star_fails_when_its_only_capable_device_leaves(make_sim: MakeSim) -> None:
    sim = make_sim([device("gpu_box", labels={"gpu"}), device("cpu_box")])
    sim.script("g1", HANG)
    gpu = {"labels": ["gpu"]}
    handle = sim.submit(star("g1", on=gpu), star("g2", on=gpu), star("plain"))
    assert sim.star(handle, "g2").status is READY

    sim.dispatcher.set_fleet([device("cpu_box")])

    g2 = sim.star(handle, "g2")
    assert g2.status is FAILED
    assert "cpu_box lacks label(s) gpu" in (g2.error or "")


def test_star_runs_once_a_capable_device_has_joined(make_sim: MakeSim) -> None:
    sim = make_sim([device("cpu_box")])
    first = sim.submit(star("g", on={"labels": ["gpu"]}), cid="c1")
    assert sim.star(first, "g").status is FAILED

    sim.dispatcher.set_fleet([device("cpu_box"), device("gpu_box", labels={"gpu"})])
    second = sim.submit(star("g", on={"labels": ["gpu"]}), cid="c2")
    sim.clock.run_until_idle()

    assert sim.star(second, "g").status is SUCCEEDED
    assert sim.of(StarStarted, "g", cid="c2")[0].device == "gpu_box"


def test_device_that_leaves_and_returns_keeps_its_load(make_sim: MakeSim) -> None:
    sim = make_sim([device("d1"), device("d2")])
    sim.script("a", ok(duration=10))
    sim.script("b", HANG)
    handle = sim.submit(star("a", priority=2), star("b", priority=1), star("c"), star("d"))
    assert sim.of(StarStarted, "a")[0].device == "d1"

    sim.dispatcher.set_fleet([device("d2")])  # d1 drops out while `a` is still out on it
    sim.dispatcher.set_fleet([device("d1"), device("d2")])  # ... and comes back

    assert sim.started() == ["a", "b"]  # d1 still runs `a`: no second task on it
    sim.clock.advance(10)  # `a` answers; d1 is free for one star, not two
    assert sim.started() == ["a", "b", "c"]
    assert sim.statuses(handle)["d"] is READY
    sim.clock.run_until_idle()
    assert sim.started() == ["a", "b", "c", "d"]
    assert sim.of(StarStarted, "d")[0].ts == 11.0


def test_changed_device_limits_apply_to_work_already_out(make_sim: MakeSim) -> None:
    sim = make_sim([device("d1", max_tasks=3)])
    for i in range(6):
        sim.script(f"s{i}", HANG)
    handle = sim.submit(*(star(f"s{i}") for i in range(6)))
    assert sim.started() == ["s0", "s1", "s2"]

    sim.dispatcher.set_fleet([device("d1", max_tasks=1)])  # three out, one allowed
    finish_first = [sim.assignments(f"s{i}")[0] for i in range(2)]
    for assignment in finish_first:
        sim.dispatcher.deliver(TaskResult.success(assignment, None))
    assert sim.started() == ["s0", "s1", "s2"]  # still one out: nothing new may start

    sim.dispatcher.deliver(TaskResult.success(sim.assignments("s2")[0], None))
    assert sim.started() == ["s0", "s1", "s2", "s3"]

    sim.dispatcher.set_fleet([device("d1", max_tasks=4)])  # room for everything left
    assert sim.started() == ["s0", "s1", "s2", "s3", "s4", "s5"]
    assert sim.statuses(handle)["s5"] is RUNNING


# --------------------------------------------------------------------------- references


def test_references_are_resolved_at_dispatch_time(sim: Sim) -> None:
    produced = {"value": 42, "name": "disk", "nested": {"list": [1, 2]}, "flag": False}
    sim.script("a", fail("flaky", output={"value": 1}), ok(produced))
    args = {
        "n": "${a.output.value}",
        "msg": "value=${a.output.value} on ${a.output.name}",
        "obj": "${a.output.nested}",
        "text": "cfg=${a.output.nested}",
        "deep": ["x", {"y": "${a.output.nested.list.1}"}],
        "flag": "${a.output.flag}",
        "plain": "no refs",
    }
    handle = sim.submit(star("a", retries=1), star("b", "a", tool="python.run", args=args))
    sim.clock.run_until_idle()

    [assignment] = sim.assignments("b")
    assert assignment.args == {
        "n": 42,
        "msg": "value=42 on disk",
        "obj": {"list": [1, 2]},
        "text": 'cfg={"list": [1, 2]}',
        "deep": ["x", {"y": 2}],
        "flag": False,
        "plain": "no refs",
    }
    assert type(assignment.args["n"]) is int
    # the value of the attempt that succeeded, not of the failed one
    assert sim.star(handle, "b").args == args  # the constellation keeps the template
    assert sim.star(handle, "b").status is SUCCEEDED


def test_reference_to_a_field_the_upstream_did_not_produce_fails_the_star(sim: Sim) -> None:
    sim.script("a", ok({"value": 1}))
    handle = sim.submit(
        star("a"),
        star("b", "a", args={"cmd": "echo ${a.output.stdout}"}),
        star("c", "b"),
    )
    sim.clock.run_until_idle()

    b = sim.star(handle, "b")
    assert b.status is FAILED
    assert "${a.output.stdout}" in (b.error or "")
    assert "produced no 'output.stdout'" in (b.error or "")
    assert sim.assignments("b") == []
    assert sim.star(handle, "c").status is SKIPPED
    assert finished(sim).failed_star == "b"


def test_reference_to_the_error_of_a_failed_upstream(sim: Sim) -> None:
    sim.script("a", fail("disk full"))
    handle = sim.submit(
        star("a"),
        star("report", args={"cmd": "echo ${a.error}"}),
        lines=[line("a", "report", "completion")],
    )
    sim.clock.run_until_idle()

    [assignment] = sim.assignments("report")
    assert assignment.args["cmd"].startswith("echo ")
    assert "disk full" in assignment.args["cmd"]
    assert sim.star(handle, "report").status is SUCCEEDED


# --------------------------------------------------------------------------- allow_failure


def test_allow_failure_star_does_not_fail_the_constellation(sim: Sim) -> None:
    sim.script("optional", fail("no coffee"))
    handle = sim.submit(
        star("optional", allow_failure=True),
        star("main"),
        star("needs_optional", "optional"),
        star("always"),
        lines=[line("optional", "always", "completion")],
    )
    sim.clock.run_until_idle()

    assert sim.statuses(handle) == {
        "optional": FAILED,
        "main": SUCCEEDED,
        "needs_optional": SKIPPED,
        "always": SUCCEEDED,
    }
    end = finished(sim)
    assert (end.status, end.reason, end.failed_star) == ("succeeded", None, None)


def test_real_failure_after_an_allowed_one_still_fails_the_constellation(sim: Sim) -> None:
    sim.script("optional", fail("meh", duration=1))
    sim.script("must", fail("fatal", duration=2))
    sim.submit(star("optional", allow_failure=True), star("must"))
    sim.clock.run_until_idle()

    end = finished(sim)
    assert (end.status, end.failed_star, end.reason) == ("failed", "must", "attempt 1/1: fatal")


# --------------------------------------------------------------------------- event stream


def busy_scenario(sim: Sim) -> None:
    """Retries, a timeout, a skip, a condition, a cancel and a stale result, all at once."""
    sim.script("flaky", fail("once"), ok({"ok": True}))
    sim.script("slow", HANG, ok())
    sim.script("doomed", fail("always"))
    sim.script("victim", ok(duration=10))
    sim.script("long", ok(duration=15))  # still running when victim's late result lands
    sim.submit(
        star("long"),
        star("flaky", retries=1),
        star("slow", timeout=3, retries=1),
        star("doomed", allow_failure=True),
        star("skipped", "doomed"),
        star("cleanup"),
        star("victim"),
        star("after_victim", "victim"),
        star("nowhere", on="no_such_device", allow_failure=True),
        lines=[
            line(
                "doomed",
                "cleanup",
                "condition",
                when={"path": "status", "op": "eq", "value": "failed"},
            )
        ],
    )
    sim.clock.advance(2)
    sim.orch.cancel_star("c1", "victim")
    sim.clock.run_until_idle()


async def test_subscription_yields_events_in_order_and_ends(make_sim: MakeSim) -> None:
    sim = make_sim([device("d1", max_tasks=2), device("d2")], deliver_after_cancel=True)
    subscription = sim.events.subscribe("c1")
    other = sim.events.subscribe("c2")
    busy_scenario(sim)
    sim.orch.submit(sim.build(star("x"), cid="c2"))
    sim.clock.run_until_idle()

    received = await collect(subscription)  # ends by itself after ConstellationFinished

    assert received == [e for e in sim.log if e.constellation_id == "c1"]
    assert isinstance(received[0], ConstellationSubmitted)
    assert isinstance(received[-1], ConstellationFinished)
    assert sum(isinstance(e, ConstellationFinished) for e in received) == 1
    seqs = [e.seq for e in received]
    assert seqs == sorted(set(seqs))
    assert any(isinstance(e, StaleResultIgnored) for e in received)
    assert {e.constellation_id for e in await collect(other)} == {"c2"}


async def test_subscriber_reads_while_the_constellation_runs(sim: Sim) -> None:
    subscription = sim.events.subscribe("c1")
    reader = asyncio.ensure_future(collect(subscription))
    handle = sim.submit(star("a"), star("b", "a"))
    for _ in range(3):
        await asyncio.sleep(0)  # hand the loop to the reader; virtual time only
        sim.clock.advance(1)
    received = await asyncio.wait_for(reader, WAIT)

    assert [type(e) for e in received] == [
        ConstellationSubmitted,
        StarReady,
        StarStarted,
        StarFinished,
        StarReady,
        StarStarted,
        StarFinished,
        ConstellationFinished,
    ]
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_sequence_numbers_increase_and_every_star_finishes_once(make_sim: MakeSim) -> None:
    sim = make_sim([device("d1", max_tasks=2), device("d2")], deliver_after_cancel=True)
    busy_scenario(sim)

    seqs = [e.seq for e in sim.log]
    assert seqs == list(range(1, len(seqs) + 1))
    stamps = [e.ts for e in sim.log]
    assert stamps == sorted(stamps)
    stars = sim.orch.constellation("c1").stars
    assert Counter(e.star_id for e in sim.of(StarFinished)) == dict.fromkeys(stars, 1)
    for event in sim.of(StarFinished):
        assert event.status == stars[event.star_id].status.value
    assert isinstance(sim.log[-1], ConstellationFinished)
    assert len(sim.of(ConstellationFinished)) == 1
    assert {sid: s.status for sid, s in stars.items()} == {
        "long": SUCCEEDED,
        "flaky": SUCCEEDED,
        "slow": SUCCEEDED,
        "doomed": FAILED,
        "skipped": SKIPPED,
        "cleanup": SUCCEEDED,
        "victim": CANCELLED,
        "after_victim": SKIPPED,
        "nowhere": FAILED,
    }


async def test_wait_returns_the_final_constellation(sim: Sim) -> None:
    handle = sim.submit(star("a"), star("b", "a"))
    waiter = asyncio.ensure_future(handle.wait())
    await asyncio.sleep(0)
    assert not waiter.done()

    sim.clock.run_until_idle()
    final = await asyncio.wait_for(waiter, WAIT)

    assert final is handle.constellation
    assert final.status is ConstellationStatus.SUCCEEDED
    assert await handle.wait() is final  # after the end it answers at once


async def test_run_submits_and_waits(sim: Sim) -> None:
    task = asyncio.ensure_future(sim.orch.run(sim.build(star("a"))))
    await asyncio.sleep(0)
    sim.clock.run_until_idle()

    final = await asyncio.wait_for(task, WAIT)
    assert final.status is ConstellationStatus.SUCCEEDED
    assert final is sim.orch.constellation("c1")


# --------------------------------------------------------------------------- edges


def test_single_star_constellation(sim: Sim) -> None:
    handle = sim.submit(star("only"))
    sim.clock.run_until_idle()

    assert [type(e) for e in sim.log] == [
        ConstellationSubmitted,
        StarReady,
        StarStarted,
        StarFinished,
        ConstellationFinished,
    ]
    [done] = sim.of(StarFinished)
    assert (done.status, done.attempt, done.output) == ("succeeded", 1, {"star": "only"})
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED
    assert sim.orch.constellations() == [handle.constellation]


def test_constellation_finishes_when_every_star_is_cancelled_or_skipped(sim: Sim) -> None:
    sim.script("root", HANG)
    handle = sim.submit(star("root"), star("b", "root"), star("c", "b"))

    sim.orch.cancel_star("c1", "root")

    assert sim.statuses(handle) == {"root": CANCELLED, "b": SKIPPED, "c": SKIPPED}
    assert handle.constellation.status.terminal
    assert len(sim.of(ConstellationFinished)) == 1
    assert sim.clock.pending == 0


def test_duplicate_and_unknown_constellations_are_refused(sim: Sim) -> None:
    constellation = sim.build(star("a"))
    sim.orch.submit(constellation)
    with pytest.raises(DuplicateConstellation):
        sim.orch.submit(sim.build(star("a")))
    with pytest.raises(UnknownConstellation):
        sim.orch.constellation("nope")
    with pytest.raises(UnknownConstellation):
        sim.orch.cancel("nope")


def test_only_the_newest_finished_constellations_stay_in_memory(sim: Sim) -> None:
    # A long-running orchestrator must not grow with its history: beyond `keep_finished`
    # the oldest finished runs are dropped (the store keeps them), running ones never.
    sim.orch.keep_finished = 2
    sim.script("slow", HANG)
    running = sim.submit(star("slow"), star("after", "slow"), cid="running")
    for n in range(4):
        sim.submit(star("a"), star("b", "a"), cid=f"done{n}")
    sim.clock.run_until_idle()

    assert {c.id for c in sim.orch.constellations()} == {"running", "done2", "done3"}
    with pytest.raises(UnknownConstellation):
        sim.orch.constellation("done0")
    assert [e.constellation_id for e in sim.of(ConstellationFinished)] == [
        "done0",
        "done1",
        "done2",
        "done3",
    ]
    # the dropped ones leave nothing behind that scheduling would trip over
    sim.orch.on_devices_changed()
    sim.orch.cancel("running", "enough")
    assert running.constellation.status is ConstellationStatus.CANCELLED
    assert {c.id for c in sim.orch.constellations()} == {"running", "done3"}


def test_keep_finished_must_be_positive(sim: Sim) -> None:
    with pytest.raises(ValueError, match="keep_finished must be at least 1"):
        Orchestrator(sim.dispatcher, clock=sim.clock, keep_finished=0)
