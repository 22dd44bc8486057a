"""A review is announced, told how it ended, and bounded by a deadline on the orchestrator's
clock: past it the run goes on by its plan and a late answer is discarded. The model is
scripted (`SlowModel` answers only when the test opens its gate); time is virtual."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from agents.constellation import ConstellationStatus
from agents.events import (
    ConstellationFinished,
    EditApplied,
    ReviewFinished,
    ReviewStarted,
    event_from_dict,
    event_to_dict,
)
from agents.models.errors import GenerationFailed
from agents.planner.context import PlanningContext
from agents.planner.planner import Planner
from agents.planner.review import EditPolicy, PlanReviewer
from agents.simulation import Outcome
from devices.tools import default_tools
from protocol.tasks import TaskOutcome
from tests.agents.planner.scripted import ScriptedModel, SlowModel, star

if TYPE_CHECKING:
    from agents.planner.planner import ChatBackend
    from tests.agents.conftest import Sim

REQUEST = "say hello on dev0, then say goodbye"
WAIT = 10.0  # real seconds a test waits for the reviewer's task, at most
REVIEW_TYPES = ("review.started", "edit.applied", "review.finished", "constellation.finished")


def decision(action: str, *add: dict[str, Any], why: str = "r") -> str:
    return json.dumps({"decision": {"action": action, "rationale": why, "add": list(add)}})


def reviewer(sim: Sim, model: ChatBackend, deadline_s: float = 10.0) -> PlanReviewer:
    def context() -> PlanningContext:
        return PlanningContext.from_devices(sim.dispatcher.devices(), default_tools().schemas())

    return PlanReviewer(
        sim.orch,
        Planner(model),
        "c1",
        request=REQUEST,
        context=context,
        policy=EditPolicy.ON_FAILURE,
        deadline_s=deadline_s,
    )


def second_step_fails(sim: Sim) -> None:
    sim.script("s2", Outcome(status=TaskOutcome.FAILED, error="exit code 1"))
    sim.submit(
        {"id": "s1", "tool": "shell.run", "args": {"cmd": "echo hello"}},
        {"id": "s2", "tool": "shell.run", "args": {"cmd": "echo bye"}, "after": ["s1"]},
    )
    sim.clock.advance(1.0)
    sim.clock.advance(1.0)  # s2 fails: a review starts


def review_types(sim: Sim) -> list[str]:
    return [str(getattr(e, "type", "")) for e in sim.log if getattr(e, "type", "") in REVIEW_TYPES]


@pytest.mark.parametrize("stubborn", [False, True], ids=["model-stops", "model-answers-late"])
async def test_past_the_deadline_the_run_goes_on_by_its_plan_and_a_late_answer_is_dropped(
    sim: Sim, stubborn: bool
) -> None:
    late_edit = decision("edit", star("v2s1", on="dev0", after=["s1"], cmd="echo again"))
    model = SlowModel([late_edit], stubborn=stubborn)
    review = reviewer(sim, model, deadline_s=10.0)
    second_step_fails(sim)
    await asyncio.wait_for(model.asked.wait(), WAIT)
    (started,) = sim.of(ReviewStarted)
    assert (started.reasons, started.failed, started.deadline_s) == (["star s2 failed"], ["s2"], 10)
    assert started.describe() == "reviewing the failure of s2"
    sim.clock.advance(9.9)
    assert sim.orch.constellation("c1").status is ConstellationStatus.RUNNING  # still held
    sim.clock.advance(0.1)  # the deadline
    await asyncio.wait_for(review.idle(), WAIT)
    assert sim.orch.constellation("c1").status is ConstellationStatus.FAILED  # s2 failed
    (finished,) = sim.of(ReviewFinished)
    assert (finished.outcome, finished.version, finished.seconds) == ("timed_out", None, 10.0)
    assert finished.describe() == (
        "no answer within the deadline, the run goes on by its plan (10.0s)"
    )
    assert review_types(sim) == ["review.started", "review.finished", "constellation.finished"]
    assert review.reviews[0].timed_out
    assert model.cancelled == 1  # the model call was cancelled, not left running
    model.gate.set()  # a stubborn model answers now, after the run ended
    await asyncio.wait_for(review.settled(), WAIT)
    assert [d.action for d in review.discarded] == (["edit"] if stubborn else [])
    assert sim.of(EditApplied) == []
    assert sim.orch.constellation("c1").version == 1
    assert set(sim.orch.constellation("c1").stars) == {"s1", "s2"}


async def test_an_answer_within_the_deadline_is_applied_and_the_events_say_so(sim: Sim) -> None:
    model = SlowModel(
        [decision("edit", star("v2s1", on="dev0", after=["s1"], cmd="echo again"), why="retry")]
    )
    review = reviewer(sim, model, deadline_s=10.0)
    second_step_fails(sim)
    await asyncio.wait_for(model.asked.wait(), WAIT)
    sim.clock.advance(4.0)
    model.gate.set()
    await asyncio.wait_for(review.idle(), WAIT)
    assert review_types(sim) == ["review.started", "edit.applied", "review.finished"]
    (finished,) = sim.of(ReviewFinished)
    assert (finished.outcome, finished.version, finished.detail) == ("edited", 2, "retry")
    assert finished.seconds == 4.0
    assert finished.describe() == "edited to version 2 (4.0s): retry"
    sim.clock.advance(1.0)  # the added star runs, and the run ends
    assert review_types(sim)[-1] == "constellation.finished"
    assert sim.clock.pending == 0  # the deadline's timer went with the review


async def test_giving_up_is_told_before_the_run_ends(sim: Sim) -> None:
    review = reviewer(sim, ScriptedModel([decision("fail", why="cannot be done")]))
    sim.script("s2", Outcome(duration=5.0))
    sim.script("s1", Outcome(status=TaskOutcome.FAILED, error="no such file"))
    sim.submit({"id": "s1", "tool": "shell.run"}, {"id": "s2", "tool": "shell.run"})
    sim.clock.advance(1.0)
    await asyncio.wait_for(review.idle(), WAIT)
    assert review_types(sim) == ["review.started", "review.finished", "constellation.finished"]
    (finished,) = sim.of(ReviewFinished)
    assert (finished.outcome, finished.detail) == ("gave_up", "cannot be done")
    assert sim.of(ConstellationFinished)[0].status == "failed"


async def test_continue_leaves_the_plan_unchanged(sim: Sim) -> None:
    review = reviewer(sim, ScriptedModel([decision("continue", why="nothing to add")]))
    second_step_fails(sim)
    await asyncio.wait_for(review.idle(), WAIT)
    (finished,) = sim.of(ReviewFinished)
    assert (finished.outcome, finished.detail) == ("unchanged", "nothing to add")
    assert finished.describe() == "plan unchanged (0.0s): nothing to add"


class BrokenModel:
    async def chat(self, messages: Any, **options: Any) -> Any:
        raise GenerationFailed("gemma", "llama_decode returned -1")


@pytest.mark.parametrize("broken", ["invalid-answers", "model-error"])
async def test_a_planner_error_leaves_the_plan_unchanged_and_says_why(
    sim: Sim, broken: str
) -> None:
    model: ChatBackend = BrokenModel() if broken == "model-error" else ScriptedModel(["{}"] * 3)
    review = reviewer(sim, model)
    second_step_fails(sim)
    await asyncio.wait_for(review.idle(), WAIT)
    (finished,) = sim.of(ReviewFinished)
    assert finished.outcome == "error"
    assert ("llama_decode" if broken == "model-error" else "no valid edit") in finished.detail
    assert sim.orch.constellation("c1").status is ConstellationStatus.FAILED  # released


async def test_closing_the_reviewer_cancels_the_model_call_and_releases_the_hold(
    sim: Sim,
) -> None:
    model = SlowModel([decision("continue")])
    review = reviewer(sim, model)
    second_step_fails(sim)
    await asyncio.wait_for(model.asked.wait(), WAIT)
    review.close()
    assert sim.orch.constellation("c1").status is ConstellationStatus.FAILED  # not held
    await asyncio.wait_for(review.settled(), WAIT)
    assert model.cancelled == 1
    assert sim.of(ReviewFinished) == []  # the review did not end: it was stopped


def test_review_events_survive_json_as_the_store_and_the_control_api_carry_them() -> None:
    for event in (
        ReviewStarted(
            constellation_id="c1",
            reasons=["star s1 failed"],
            failed=["s1"],
            deadline_s=2.5,
            seq=7,
            ts=1.0,
        ),
        ReviewFinished(
            constellation_id="c1",
            outcome="timed_out",
            detail="no answer",
            seconds=2.5,
            seq=8,
            ts=3.5,
        ),
    ):
        assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


def test_a_deadline_must_be_positive(sim: Sim) -> None:
    with pytest.raises(ValueError, match="positive seconds"):
        reviewer(sim, ScriptedModel([]), deadline_s=0)
