"""Fan-outs that take joining devices (`on: {each: true, joining: true}`): the plan-file
option, and the branch a device that joins mid-run gets, on a simulated fleet and a
virtual clock (`Orchestrator.branch_joined_device`; the runtime's listener that calls it
on every `device.joined` is tested in tests/app/test_joining_devices.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from agents.constellation import (
    ConstellationStatus,
    DeviceSelector,
    EditBatch,
    StarChanges,
    StarStatus,
    UpdateStar,
)
from agents.constellation.fanout import expand_fan_out
from agents.constellation.joining import branches_for, takes_joining
from agents.constellation.plan_file import PlanFileError, parse_plan, parse_plan_spec, plan_to_yaml
from agents.events import EditApplied, StarFinished, StarStarted
from agents.orchestrator import ConstellationFinishedError, RunHandle
from agents.simulation import Outcome
from devices.registry import DeviceInfo
from protocol.tasks import TaskOutcome

if TYPE_CHECKING:
    from conftest import Sim

    MakeSim = Callable[..., Sim]

TOOLS = frozenset({"shell.run", "python.run", "fs.write", "agent.do"})
ATLAS = DeviceInfo(name="atlas", tools=TOOLS, max_tasks=4)
WORKERS = frozenset({"workers"})
BOREALIS = DeviceInfo(name="borealis", tools=TOOLS, labels=WORKERS)
CYGNUS = DeviceInfo(name="cygnus", tools=TOOLS, labels=WORKERS)
DORADO = DeviceInfo(name="dorado", tools=TOOLS, labels=frozenset({"storage"}))

# `gate` holds what waits for all branches until the test lets it finish.
PLAN = """
name: hosts
stars:
  - id: gate
    tool: shell.run
    on: atlas
    args: {cmd: "true"}
  - id: host
    tool: shell.run
    on: {each: true, labels: [workers], joining: true}
    args: {cmd: hostname}
  - id: summary
    tool: fs.write
    on: atlas
    args: {path: hosts.txt, content: "hosts:\\n${host.output.stdout}"}
    after: [gate, host]
  - id: listed
    tool: python.run
    on: atlas
    args: {code: "print(1)", hosts: "${host.output.stdout}"}
    after: [gate, host]
"""
GATE = 10.0


def hosts_sim(make_sim: MakeSim, *, cygnus_takes: float = 1.0) -> Sim:
    """atlas and borealis connected; every host branch outputs its device's name."""
    sim = make_sim([ATLAS, BOREALIS])
    sim.script("gate", Outcome(duration=GATE))
    for device in ("borealis", "cygnus", "dorado"):
        duration = cygnus_takes if device == "cygnus" else 1.0
        sim.script(f"host-{device}", Outcome(duration=duration, output={"stdout": device}))
    return sim


def submitted(sim: Sim, plan: str = PLAN) -> RunHandle:
    return sim.orch.submit(parse_plan(plan))


def assigned_args(sim: Sim, star_id: str) -> dict[str, object]:
    (assignment,) = sim.assignments(star_id)
    return assignment.args


# ------------------------------------------------------------------ the plan-file option


def test_joining_is_a_fan_out_option_that_round_trips() -> None:
    spec = parse_plan_spec(PLAN)
    host = spec.stars[1]
    assert host.on == DeviceSelector(labels=("workers",), each=True, joining=True)
    assert parse_plan_spec(plan_to_yaml(spec)) == spec
    assert "joining: true" in plan_to_yaml(spec)


@pytest.mark.parametrize(
    ("selector", "where", "message"),
    [
        (
            "{labels: [workers], joining: true}",
            "5:38",
            "on.joining: only a fan-out takes joining devices: add 'each: true' next to "
            "'joining: true'",
        ),
        ("{each: true, joining: 3}", "5:31", "on.joining: Input should be a valid boolean"),
        ("{each: true, joinng: true}", "5:22", "unknown field 'joinng' in 'on'; did you mean"),
    ],
)
def test_a_wrong_joining_option_is_refused_where_it_is_written(
    selector: str, where: str, message: str
) -> None:
    text = (
        "name: p\nstars:\n  - id: host\n    tool: shell.run\n"
        f"    on: {selector}\n    args: {{cmd: hostname}}\n"
    )
    with pytest.raises(PlanFileError) as caught:
        parse_plan(text, source="p.yaml")
    assert str(caught.value).startswith(f"p.yaml:{where}: star 'host': ")
    assert message in str(caught.value)


def test_expansion_keeps_the_written_plan_only_when_a_fan_out_takes_joining_devices() -> None:
    joining = parse_plan(PLAN)
    expand_fan_out(joining, [ATLAS, BOREALIS])
    assert takes_joining(joining)
    record = joining.fan_out
    assert record is not None
    assert record.accepted == {"host": ["borealis"]}
    assert [star.id for star in record.stars] == ["gate", "host", "summary", "listed"]
    # A whole reference to a fan-out that takes joining devices is a list even of one
    # branch, so its type does not change when a device joins.
    assert joining.stars["listed"].args["hosts"] == ["${host-borealis.output.stdout}"]

    fixed = parse_plan(PLAN.replace(", joining: true", ""))
    expand_fan_out(fixed, [ATLAS, BOREALIS])
    assert fixed.fan_out is None
    assert not takes_joining(fixed)
    assert fixed.stars["listed"].args["hosts"] == "${host-borealis.output.stdout}"


# ------------------------------------------------------------------ joining mid-run


def test_a_device_joining_mid_run_gets_a_branch_the_downstream_waits_for(
    make_sim: MakeSim,
) -> None:
    sim = hosts_sim(make_sim, cygnus_takes=30.0)  # its branch ends well after the gate opens
    run = submitted(sim)
    sim.clock.advance(2.0)  # host-borealis is done; gate still runs
    assert sim.statuses(run)["host-borealis"] is StarStatus.SUCCEEDED

    sim.dispatcher.join(CYGNUS)
    version = sim.orch.branch_joined_device(run.id, "cygnus")

    assert version == 2
    stars = run.constellation.stars
    assert stars["host-cygnus"].on == DeviceSelector(name="cygnus")
    assert stars["host-cygnus"].title == "host on cygnus"
    lines = {line.key for line in run.constellation.lines}
    assert {("host-cygnus", "summary"), ("host-cygnus", "listed")} <= lines
    assert stars["summary"].args["content"] == (
        "hosts:\n${host-borealis.output.stdout}\n${host-cygnus.output.stdout}"
    )
    assert stars["listed"].args["hosts"] == [
        "${host-borealis.output.stdout}",
        "${host-cygnus.output.stdout}",
    ]
    (edit,) = sim.of(EditApplied)
    assert (edit.version, edit.rationale) == (2, "device cygnus joined: host-cygnus of host")
    assert [e["op"] for e in edit.edits] == [
        "add_star",
        "add_line",
        "add_line",
        "update_star",
        "update_star",
    ]
    record = run.constellation.fan_out
    assert record is not None
    assert record.joined == {"host": ["cygnus"]}

    sim.clock.run_until_idle()
    assert all(status is StarStatus.SUCCEEDED for status in sim.statuses(run).values())
    (cygnus_started,) = sim.of(StarStarted, "host-cygnus")
    assert cygnus_started.device == "cygnus"
    # The downstream waited for the new branch (it ended long after the gate) and got
    # its output in the list, in device-name order.
    (cygnus_done,) = sim.of(StarFinished, "host-cygnus")
    (summary_started,) = sim.of(StarStarted, "summary")
    assert summary_started.ts >= cygnus_done.ts > GATE
    assert assigned_args(sim, "summary")["content"] == "hosts:\nborealis\ncygnus"
    assert assigned_args(sim, "listed")["hosts"] == ["borealis", "cygnus"]


def test_a_device_joining_after_the_downstream_started_gets_no_branch(
    make_sim: MakeSim, caplog: pytest.LogCaptureFixture
) -> None:
    sim = hosts_sim(make_sim)
    run = submitted(sim)
    sim.clock.advance(GATE + 0.5)  # the gate and host-borealis are done: the rest runs
    assert sim.statuses(run)["summary"] is StarStatus.RUNNING

    sim.dispatcher.join(CYGNUS)
    with caplog.at_level(logging.INFO, logger="orrery.orchestrator"):
        assert sim.orch.branch_joined_device(run.id, "cygnus") is None

    assert "host-cygnus" not in run.constellation.stars
    assert run.constellation.version == 1
    assert not sim.of(EditApplied)
    assert f"c={run.id} device cygnus gets no branch of host: 'summary'" in caplog.text
    assert "is already running" in caplog.text
    sim.clock.run_until_idle()
    assert assigned_args(sim, "summary")["content"] == "hosts:\nborealis"


def test_a_device_that_rejoins_gets_no_second_branch(
    make_sim: MakeSim, caplog: pytest.LogCaptureFixture
) -> None:
    sim = hosts_sim(make_sim)
    run = submitted(sim)
    sim.dispatcher.join(CYGNUS)
    assert sim.orch.branch_joined_device(run.id, "cygnus") == 2
    sim.dispatcher.leave("cygnus")
    sim.dispatcher.join(CYGNUS)  # back after a disconnect, under the same name

    with caplog.at_level(logging.INFO, logger="orrery.orchestrator"):
        assert sim.orch.branch_joined_device(run.id, "cygnus") is None
    assert "already has branch 'host-cygnus'" in caplog.text
    # One accepted device rejoining is no new device either.
    assert sim.orch.branch_joined_device(run.id, "borealis") is None

    sim.clock.run_until_idle()
    assert [s for s in run.constellation.stars if s.startswith("host-")] == [
        "host-borealis",
        "host-cygnus",
    ]
    assert len(sim.of(EditApplied)) == 1
    assert assigned_args(sim, "listed")["hosts"] == ["borealis", "cygnus"]


def test_only_matching_devices_of_fan_outs_that_take_them_get_branches(
    make_sim: MakeSim,
) -> None:
    sim = hosts_sim(make_sim)
    run = submitted(sim)
    sim.dispatcher.join(DORADO)  # not labelled workers
    assert sim.orch.branch_joined_device(run.id, "dorado") is None
    sim.dispatcher.join(DeviceInfo(name="eridanus", tools=frozenset({"fs.write"}), labels=WORKERS))
    assert sim.orch.branch_joined_device(run.id, "eridanus") is None  # lacks shell.run

    fixed = hosts_sim(make_sim)
    run = submitted(fixed, PLAN.replace(", joining: true", ""))
    fixed.dispatcher.join(CYGNUS)
    assert fixed.orch.branch_joined_device(run.id, "cygnus") is None
    assert "host-cygnus" not in run.constellation.stars


def test_a_fan_out_nothing_waits_for_takes_devices_until_the_run_ends(
    make_sim: MakeSim,
) -> None:
    sim = make_sim([ATLAS, BOREALIS])
    sim.script("slow", Outcome(duration=100.0))
    run = submitted(
        sim,
        "name: leaf\nstars:\n"
        "  - {id: slow, tool: shell.run, on: atlas, args: {cmd: 'true'}}\n"
        "  - {id: ping, tool: shell.run, on: {each: true, labels: [workers], joining: true},"
        " args: {cmd: 'true'}}\n",
    )
    sim.clock.advance(50.0)  # ping-borealis finished long ago
    sim.dispatcher.join(CYGNUS)
    assert sim.orch.branch_joined_device(run.id, "cygnus") == 2
    sim.clock.run_until_idle()
    assert sim.statuses(run)["ping-cygnus"] is StarStatus.SUCCEEDED
    sim.dispatcher.join(DeviceInfo(name="dorado", tools=TOOLS, labels=WORKERS))
    with pytest.raises(ConstellationFinishedError, match="has already succeeded"):
        sim.orch.branch_joined_device(run.id, "dorado")


def test_two_fan_outs_joined_branch_by_branch_stay_so_for_a_joining_device(
    make_sim: MakeSim,
) -> None:
    sim = make_sim([ATLAS, BOREALIS])
    sim.script("gate", Outcome(duration=GATE))
    plan = """
name: build
stars:
  - id: gate
    tool: shell.run
    on: atlas
    args: {cmd: "true"}
  - id: clean
    tool: shell.run
    on: {each: true, labels: [workers], joining: true}
    args: {cmd: "rm -rf build"}
  - id: make
    tool: shell.run
    on: {each: true, labels: [workers], joining: true}
    args: {cmd: make, note: "${clean.output.star}"}
    after: [clean]
  - id: report
    tool: fs.write
    on: atlas
    args: {path: r.txt, content: "${make.output.star}"}
    after: [gate, make]
"""
    run = submitted(sim, plan)
    sim.clock.advance(5.0)
    sim.dispatcher.join(CYGNUS)
    assert sim.orch.branch_joined_device(run.id, "cygnus") == 2
    constellation = run.constellation
    lines = {line.key for line in constellation.lines}
    assert lines == {
        ("clean-borealis", "make-borealis"),
        ("clean-cygnus", "make-cygnus"),
        ("make-borealis", "report"),
        ("make-cygnus", "report"),
        ("gate", "report"),
    }
    # A branch's reference to the other fan-out names its own device's branch.
    assert constellation.stars["make-cygnus"].args["note"] == "${clean-cygnus.output.star}"
    assert constellation.stars["report"].args["content"] == [
        "${make-borealis.output.star}",
        "${make-cygnus.output.star}",
    ]
    assert constellation.fan_out is not None
    assert constellation.fan_out.joined == {"clean": ["cygnus"], "make": ["cygnus"]}
    sim.clock.run_until_idle()
    assert all(status is StarStatus.SUCCEEDED for status in sim.statuses(run).values())
    order = sim.started()
    assert order.index("clean-cygnus") < order.index("make-cygnus") < order.index("report")
    assert assigned_args(sim, "report")["content"] == ["make-borealis", "make-cygnus"]


def test_a_joined_branch_that_fails_skips_what_waits_for_all_and_fails_the_run(
    make_sim: MakeSim,
) -> None:
    sim = hosts_sim(make_sim)
    sim.script("host-cygnus", Outcome(duration=1.0, status=TaskOutcome.FAILED, error="no host"))
    run = submitted(sim)
    sim.dispatcher.join(CYGNUS)
    assert sim.orch.branch_joined_device(run.id, "cygnus") == 2
    sim.clock.run_until_idle()
    statuses = sim.statuses(run)
    assert statuses["host-borealis"] is StarStatus.SUCCEEDED
    assert statuses["host-cygnus"] is StarStatus.FAILED
    assert statuses["summary"] is statuses["listed"] is StarStatus.SKIPPED
    assert run.constellation.status is ConstellationStatus.FAILED


def test_a_join_is_declined_when_what_refers_to_the_branches_was_edited(
    make_sim: MakeSim,
) -> None:
    sim = hosts_sim(make_sim)
    run = submitted(sim)
    edit = EditBatch(
        edits=[UpdateStar(id="listed", changes=StarChanges(args={"code": "print(2)"}))],
        rationale="a person simplified it",
    )
    sim.orch.apply_edits(run.id, edit)
    joined = branches_for(run.constellation, CYGNUS)
    assert joined.batch is None
    assert joined.declined == {
        "host": "'listed', which refers to its outputs, was edited since the plan was accepted"
    }
