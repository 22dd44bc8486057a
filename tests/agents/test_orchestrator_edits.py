"""Edits to a running constellation: atomic batches, the read-only rule, versions and undo.

Driven on a simulated fleet and a virtual clock (see conftest.py). Always read the
constellation through the handle: an accepted batch replaces the object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from agents.constellation import (
    AddLine,
    AddStar,
    Constellation,
    ConstellationStatus,
    CycleDetected,
    DanglingLine,
    EditBatch,
    Line,
    NothingToUndo,
    RemoveLine,
    RemoveStar,
    StarChanges,
    StarNotEditable,
    StarSpec,
    StarStatus,
    UpdateStar,
)
from agents.events import EditApplied, StarFinished, StarReady, StarStarted
from agents.orchestrator import ConstellationFinishedError, UnknownConstellation
from agents.simulation import Outcome
from devices.registry import DeviceInfo
from protocol.tasks import TaskOutcome, TaskResult

if TYPE_CHECKING:
    from conftest import Sim

    MakeSim = Callable[..., Sim]

TOOLS = frozenset({"shell.run", "python.run", "fs.write", "agent.do"})
HANG = Outcome(duration=None)

PENDING = StarStatus.PENDING
READY = StarStatus.READY
RUNNING = StarStatus.RUNNING
SUCCEEDED = StarStatus.SUCCEEDED
FAILED = StarStatus.FAILED
SKIPPED = StarStatus.SKIPPED


def ok(output: Any = None, duration: float = 1.0) -> Outcome:
    return Outcome(duration=duration, output=output)


def fail(error: str = "boom", duration: float = 1.0) -> Outcome:
    return Outcome(duration=duration, status=TaskOutcome.FAILED, error=error)


def device(name: str, *, max_tasks: int = 1) -> DeviceInfo:
    return DeviceInfo(name=name, max_tasks=max_tasks, tools=TOOLS)


def star(star_id: str, *after: str, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"id": star_id, "tool": "shell.run", "args": {"cmd": star_id}}
    spec.update(fields)
    if after:
        spec["after"] = list(after)
    return spec


def spec(star_id: str, *after: str, **fields: Any) -> StarSpec:
    return StarSpec.model_validate(star(star_id, *after, **fields))


def line(source: str, target: str, kind: str = "success", **fields: Any) -> Line:
    return Line.model_validate({"from": source, "to": target, "kind": kind, **fields})


def batch(*edits: Any, rationale: str = "") -> EditBatch:
    return EditBatch(edits=list(edits), rationale=rationale)


def remove_line(source: str, target: str) -> RemoveLine:
    return RemoveLine(source=source, target=target)


def shape(constellation: Constellation) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The editable structure: star specs and lines, independent of order and runtime state."""
    stars = {sid: s.spec().model_dump(mode="json") for sid, s in constellation.stars.items()}
    lines = sorted((ln.source, ln.target, str(ln.kind)) for ln in constellation.lines)
    return stars, lines


def finish(sim: Sim, star_id: str, output: Any = None) -> None:
    """Deliver a success for the latest attempt of a hanging star."""
    sim.dispatcher.deliver(TaskResult.success(sim.assignments(star_id)[-1], output))


# --------------------------------------------------------------------------- adding


def test_star_added_after_a_finished_star_is_ready_at_once(sim: Sim) -> None:
    sim.script("b", HANG)
    handle = sim.submit(star("a"), star("b"))
    sim.clock.advance(5)
    old = handle.constellation
    assert old.stars["a"].status is SUCCEEDED

    version = sim.orch.apply_edits("c1", batch(AddStar(star=spec("c", "a")), rationale="more"))

    assert version == 2 == handle.constellation.version
    assert handle.constellation is not old  # edits replace the object
    assert old.version == 1  # ... and leave the old one alone
    assert sim.star(handle, "c").status is RUNNING
    assert sim.of(StarReady, "c")[0].ts == 5.0
    assert sim.of(StarStarted, "c")[0].ts == 5.0
    sim.clock.advance(1)
    assert sim.star(handle, "c").status is SUCCEEDED
    assert sim.star(handle, "b").status is RUNNING
    assert handle.constellation.status is ConstellationStatus.RUNNING


def test_stars_and_lines_added_while_running_wait_for_their_upstreams(sim: Sim) -> None:
    sim.script("a", ok({"count": 5}, duration=10))
    handle = sim.submit(star("a"))
    sim.clock.advance(2)

    sim.orch.apply_edits(
        "c1",
        batch(
            AddStar(star=spec("b", "a")),
            AddStar(star=spec("c", args={"cmd": "echo ${a.output.count}"})),
            AddLine(
                line=line(
                    "a", "c", "condition", when={"path": "output.count", "op": "ge", "value": 5}
                )
            ),
            AddStar(star=spec("d")),
            AddLine(line=line("b", "d", "completion")),
        ),
    )
    assert sim.statuses(handle) == {"a": RUNNING, "b": PENDING, "c": PENDING, "d": PENDING}

    sim.clock.run_until_idle()
    assert set(sim.statuses(handle).values()) == {SUCCEEDED}
    assert [(e.star_id, e.ts) for e in sim.of(StarStarted)] == [
        ("a", 0.0),
        ("b", 10.0),
        ("c", 10.0),
        ("d", 11.0),
    ]
    assert sim.assignments("c")[0].args == {"cmd": "echo 5"}
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_new_success_line_from_a_failed_star_skips_its_target_at_once(sim: Sim) -> None:
    sim.script("a", fail("nope"))
    sim.script("b", HANG)
    handle = sim.submit(star("a", allow_failure=True), star("b"), star("c", "b"))
    sim.clock.advance(1)
    assert sim.star(handle, "a").status is FAILED

    sim.orch.apply_edits("c1", batch(AddLine(line=line("a", "c"))))

    c = sim.star(handle, "c")
    assert c.status is SKIPPED
    assert c.skip_reason == "upstream star 'a' failed"
    finish(sim, "b")
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED
    assert sim.assignments("c") == []


def test_a_star_skipped_by_an_edit_stays_skipped_when_another_skip_completes_it(
    sim: Sim,
) -> None:
    """One edit gives c and d each a success line from a failed star; d also waits for c
    to complete. Skipping c completes d's completion line, but d must stay skipped, not
    start. (Found by test_properties.test_orchestrated_runs.)"""
    sim.script("a", fail("nope"))
    sim.script("b", HANG)
    handle = sim.submit(
        star("a", allow_failure=True), star("b"), star("c", "b"), star("d"),
        lines=[line("c", "d", "completion")],
    )  # fmt: skip
    sim.clock.advance(1)
    assert sim.star(handle, "a").status is FAILED

    sim.orch.apply_edits("c1", batch(AddLine(line=line("a", "c")), AddLine(line=line("a", "d"))))
    sim.clock.advance(5)

    assert sim.star(handle, "c").status is SKIPPED
    d = sim.star(handle, "d")
    assert d.status is SKIPPED
    assert d.skip_reason == "upstream star 'a' failed"
    assert sim.of(StarReady, "d") == []
    assert sim.assignments("d") == []


def test_added_star_no_device_can_run_fails_fast(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"))

    sim.orch.apply_edits("c1", batch(AddStar(star=spec("gpu", on={"labels": ["gpu"]}))))

    gpu = sim.star(handle, "gpu")
    assert gpu.status is FAILED
    assert "dev0 lacks label(s) gpu" in (gpu.error or "")


# --------------------------------------------------------------------------- removing


def test_remove_a_pending_star(sim: Sim) -> None:
    sim.script("a", ok(duration=10))
    handle = sim.submit(star("a"), star("b", "a"), star("c", "b"))
    sim.clock.advance(1)

    sim.orch.apply_edits(
        "c1",
        batch(
            remove_line("a", "b"),
            remove_line("b", "c"),
            RemoveStar(id="b"),
            AddLine(line=line("a", "c")),
        ),
    )

    assert set(handle.constellation.stars) == {"a", "c"}
    assert shape(handle.constellation)[1] == [("a", "c", "success")]
    assert sim.star(handle, "c").status is PENDING  # still waits for a

    sim.clock.run_until_idle()
    assert sim.statuses(handle) == {"a": SUCCEEDED, "c": SUCCEEDED}
    assert sim.of(StarStarted, "c")[0].ts == 10.0
    assert sim.assignments("b") == []
    assert sim.of(StarFinished, "b") == []
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_remove_a_ready_star_withdraws_it_from_the_queue(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.script("a", HANG)
    handle = sim.submit(star("a", priority=1), star("b"))
    assert sim.star(handle, "b").status is READY

    sim.orch.apply_edits("c1", batch(RemoveStar(id="b")))
    finish(sim, "a")
    sim.clock.run_until_idle()

    assert sim.started() == ["a"]
    assert sim.statuses(handle) == {"a": SUCCEEDED}
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


def test_removing_the_line_a_star_waits_on_makes_it_ready(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"), star("b", "a"))

    sim.orch.apply_edits("c1", batch(remove_line("a", "b")))

    assert sim.star(handle, "b").status is RUNNING


def test_removing_a_star_but_not_its_lines_is_rejected(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"), star("b", "a"))
    before = handle.constellation.canonical_json()

    with pytest.raises(DanglingLine) as caught:
        sim.orch.apply_edits("c1", batch(RemoveStar(id="b")))

    assert "a->b" in str(caught.value)
    assert handle.constellation.canonical_json() == before
    assert sim.of(EditApplied) == []


# --------------------------------------------------------------------------- updating


def test_updating_the_priority_of_ready_stars_changes_dispatch_order(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.script("blocker", ok(duration=5))
    handle = sim.submit(star("blocker", priority=9), star("x"), star("y"), star("z"))
    assert sim.statuses(handle) == {"blocker": RUNNING, "x": READY, "y": READY, "z": READY}

    sim.orch.apply_edits(
        "c1",
        batch(
            UpdateStar(id="z", changes=StarChanges(priority=10)),
            UpdateStar(id="x", changes=StarChanges(priority=-1)),
        ),
    )
    assert sim.star(handle, "z").priority == 10
    assert sim.star(handle, "z").status is READY

    sim.clock.run_until_idle()
    assert sim.started() == ["blocker", "z", "y", "x"]


def test_updated_args_of_a_ready_star_are_what_gets_dispatched(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.script("blocker", HANG)
    handle = sim.submit(star("blocker", priority=1), star("x", args={"cmd": "old"}))

    sim.orch.apply_edits("c1", batch(UpdateStar(id="x", changes=StarChanges(args={"cmd": "new"}))))
    finish(sim, "blocker")

    assert [a.args for a in sim.assignments("x")] == [{"cmd": "new"}]
    assert sim.star(handle, "x").status is RUNNING


# --------------------------------------------------------------------------- read-only rule


def started_mix(make_sim: MakeSim) -> tuple[Sim, Any]:
    """One slot: `done` has succeeded, `running` runs, `ready` waits, `src` is pending."""
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.script("running", HANG)
    handle = sim.submit(
        star("done", priority=3),
        star("running", priority=2),
        star("ready", priority=1),
        star("src", "running"),
    )
    sim.clock.advance(1)
    assert sim.statuses(handle) == {
        "done": SUCCEEDED,
        "running": RUNNING,
        "ready": READY,
        "src": PENDING,
    }
    return sim, handle


@pytest.mark.parametrize("target", ["running", "ready", "done"])
def test_adding_a_line_into_a_star_that_is_not_pending_is_rejected(
    make_sim: MakeSim, target: str
) -> None:
    sim, handle = started_mix(make_sim)
    before = handle.constellation.canonical_json()

    with pytest.raises(StarNotEditable) as caught:
        sim.orch.apply_edits(
            "c1",
            batch(AddStar(star=spec("new")), AddLine(line=line("new", target))),
        )

    assert caught.value.edit_index == 1
    assert caught.value.item == target
    assert repr(target) in str(caught.value)
    assert handle.constellation.canonical_json() == before  # the whole batch, not just edit 1
    assert "new" not in handle.constellation.stars
    assert handle.constellation.version == 1
    assert sim.of(EditApplied) == []

    finish(sim, "running")
    sim.clock.run_until_idle()
    assert set(sim.statuses(handle).values()) == {SUCCEEDED}


@pytest.mark.parametrize(
    "edit",
    [
        UpdateStar(id="running", changes=StarChanges(priority=5)),
        UpdateStar(id="done", changes=StarChanges(args={"cmd": "again"})),
        RemoveStar(id="running"),
        RemoveStar(id="done"),
    ],
    ids=["update-running", "update-finished", "remove-running", "remove-finished"],
)
def test_edits_of_started_stars_are_rejected(make_sim: MakeSim, edit: Any) -> None:
    sim, handle = started_mix(make_sim)
    before = handle.constellation.canonical_json()

    with pytest.raises(StarNotEditable) as caught:
        sim.orch.apply_edits("c1", batch(edit))

    assert caught.value.item == edit.id
    assert "only stars that have not started may change" in str(caught.value)
    assert handle.constellation.canonical_json() == before
    assert sim.of(EditApplied) == []


def test_batch_that_would_form_a_cycle_is_rejected_whole(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"), star("b", "a"), star("c", "b"))
    before = handle.constellation.canonical_json()

    with pytest.raises(CycleDetected) as caught:
        sim.orch.apply_edits(
            "c1",
            batch(AddStar(star=spec("d", "c")), AddLine(line=line("c", "b")), rationale="loop"),
        )

    cycle = caught.value.item.split(" -> ")
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"b", "c"}
    assert caught.value.item in str(caught.value)
    assert handle.constellation.canonical_json() == before
    assert "d" not in handle.constellation.stars
    assert sim.of(EditApplied) == []

    finish(sim, "a")
    sim.clock.run_until_idle()
    assert set(sim.statuses(handle).values()) == {SUCCEEDED}
    assert handle.constellation.version == 1


# --------------------------------------------------------------------------- versions, undo


def test_each_accepted_batch_increments_the_version_and_emits_edit_applied(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"), star("b", "a"))
    sim.clock.advance(3)
    assert handle.constellation.version == 1

    v2 = sim.orch.apply_edits(
        "c1", batch(UpdateStar(id="b", changes=StarChanges(priority=3)), rationale="hurry")
    )
    v3 = sim.orch.apply_edits("c1", batch(AddStar(star=spec("c", "b")), rationale="more"))

    assert (v2, v3, handle.constellation.version) == (2, 3, 3)
    first, second = sim.of(EditApplied)
    assert (first.version, first.rationale, first.undo, first.ts) == (2, "hurry", False, 3.0)
    assert (second.version, second.rationale, second.undo) == (3, "more", False)
    [update] = first.edits
    assert (update["op"], update["id"], update["changes"]["priority"]) == ("update_star", "b", 3)
    [add] = second.edits
    assert (add["op"], add["star"]["id"]) == ("add_star", "c")


def test_undo_restores_the_structure_as_a_new_version(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"), star("b", "a", priority=1))
    before = shape(handle.constellation)

    sim.orch.apply_edits(
        "c1",
        batch(
            AddStar(star=spec("x", "a")),
            UpdateStar(id="b", changes=StarChanges(priority=7, args={"cmd": "changed"})),
            AddLine(line=line("x", "b", "completion")),
            rationale="try x",
        ),
    )
    assert shape(handle.constellation) != before

    assert sim.orch.undo("c1") == 3
    assert handle.constellation.version == 3
    assert shape(handle.constellation) == before
    undo = sim.of(EditApplied)[-1]
    assert (undo.version, undo.undo, undo.rationale) == (3, True, "undo: try x")
    with pytest.raises(NothingToUndo):
        sim.orch.undo("c1")

    finish(sim, "a")
    sim.clock.run_until_idle()
    assert sim.statuses(handle) == {"a": SUCCEEDED, "b": SUCCEEDED}
    assert sim.assignments("x") == []
    assert sim.assignments("b")[0].args == {"cmd": "b"}


def test_undo_of_a_removal_brings_the_star_back(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"), star("b", "a"))
    before = shape(handle.constellation)

    sim.orch.apply_edits("c1", batch(remove_line("a", "b"), RemoveStar(id="b")))
    sim.orch.undo("c1")

    assert shape(handle.constellation) == before
    assert sim.star(handle, "b").status is PENDING
    finish(sim, "a")
    sim.clock.run_until_idle()
    assert sim.statuses(handle) == {"a": SUCCEEDED, "b": SUCCEEDED}


def test_undo_is_rejected_once_a_star_it_added_has_started(sim: Sim) -> None:
    sim.script("a", HANG)
    sim.script("x", HANG)
    handle = sim.submit(star("a"))
    sim.orch.apply_edits("c1", batch(AddStar(star=spec("x"))))
    assert sim.star(handle, "x").status is RUNNING
    before = handle.constellation.canonical_json()
    edits = len(sim.of(EditApplied))

    with pytest.raises(StarNotEditable) as caught:
        sim.orch.undo("c1")

    assert "'x'" in str(caught.value)
    assert handle.constellation.canonical_json() == before
    assert handle.constellation.version == 2
    assert len(sim.of(EditApplied)) == edits
    assert sim.star(handle, "x").status is RUNNING


def test_undo_of_a_star_that_is_only_ready_withdraws_it(make_sim: MakeSim) -> None:
    sim = make_sim([device("dev0", max_tasks=1)])
    sim.script("a", HANG)
    handle = sim.submit(star("a"))
    sim.orch.apply_edits("c1", batch(AddStar(star=spec("x"))))
    assert sim.star(handle, "x").status is READY

    sim.orch.undo("c1")
    finish(sim, "a")
    sim.clock.run_until_idle()

    assert sim.started() == ["a"]
    assert sim.statuses(handle) == {"a": SUCCEEDED}
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED


# --------------------------------------------------------------------------- finished runs


def test_edits_on_a_finished_constellation_are_refused(sim: Sim) -> None:
    handle = sim.submit(star("a"))
    sim.orch.apply_edits("c1", batch(AddStar(star=spec("b"))))
    sim.clock.run_until_idle()
    assert handle.constellation.status is ConstellationStatus.SUCCEEDED
    before = handle.constellation.canonical_json()

    with pytest.raises(ConstellationFinishedError) as caught:
        sim.orch.apply_edits("c1", batch(AddStar(star=spec("late"))))
    assert caught.value.status is ConstellationStatus.SUCCEEDED
    assert "'c1'" in str(caught.value)
    with pytest.raises(ConstellationFinishedError):
        sim.orch.undo("c1")
    assert handle.constellation.canonical_json() == before


def test_edits_on_a_cancelled_constellation_are_refused(sim: Sim) -> None:
    sim.script("a", HANG)
    handle = sim.submit(star("a"))
    handle.cancel()

    with pytest.raises(ConstellationFinishedError) as caught:
        sim.orch.apply_edits("c1", batch(AddStar(star=spec("b"))))
    assert caught.value.status is ConstellationStatus.CANCELLED
    with pytest.raises(UnknownConstellation):
        sim.orch.apply_edits("nope", batch(AddStar(star=spec("b"))))
