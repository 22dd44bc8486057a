"""The evaluation's memory mode: every case remembered with its expected plan, each
planned with the memory of the others only (leave-one-out)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.planner.context import PlanningContext
from agents.planner.eval_memory import (
    case_request_id,
    expected_plan,
    plan_case,
    remember_cases,
)
from agents.planner.evaluation import (
    default_eval_dir,
    fleet_devices,
    load_cases,
    load_fleets,
)
from agents.planner.planner import Planner
from agents.planner.recall import adapt_plan
from agents.planner.validate import plan_from_output
from devices.tools import default_tools
from memory import Store
from memory.recall import TaskRecall
from memory.tree import TaskTree
from tests.agents.planner.scripted import ScriptedModel, plan_json

FLEETS = load_fleets(default_eval_dir() / "fleets.yaml")
CASES = load_cases(default_eval_dir() / "requests.yaml", FLEETS)
SCHEMAS = default_tools().schemas()


def context_of(fleet: str) -> PlanningContext:
    return PlanningContext.from_devices(fleet_devices(FLEETS[fleet]), SCHEMAS)


def test_every_expected_plan_is_a_valid_plan_on_its_own_fleet() -> None:
    for case in CASES:
        summary = {"plan": expected_plan(case, SCHEMAS), "fleet": []}
        adapted = adapt_plan(summary, context_of(case.fleet))
        assert adapted is not None, case.id
        spec, _ = plan_from_output(adapted.plan, context_of(case.fleet), name=case.id)
        assert [s.effective_tool for s in spec.stars] == [s.tool for s in case.expected.stars]


@pytest.fixture
def recall(tmp_path: Path) -> Iterator[TaskRecall]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        tree = TaskTree(store)
        remember_cases(tree, CASES, FLEETS, SCHEMAS)
        opened = TaskRecall(tree, tmp_path / "recall")
        try:
            opened.catch_up()
            yield opened
        finally:
            opened.close()


@pytest.mark.slow
async def test_a_case_is_planned_with_the_memory_of_the_others_only(recall: TaskRecall) -> None:
    assert recall.tree.count_requests() == len(CASES)
    case = next(c for c in CASES if c.id == "sort-downloads")
    model = ScriptedModel(
        [plan_json({"id": "s1", "title": "list", "tool": "fs.list", "on": "laptop", "args": {}})]
    )
    planned = await plan_case(Planner(model), case, context_of(case.fleet), recall)
    assert not planned.reused
    assert planned.spec is not None
    prompt = model.calls[0].prompt
    assert planned.recalled.examples
    assert f"Example request: {case.request}" not in prompt  # left out: leave-one-out
    nearest = planned.recalled.examples[-1]
    assert nearest.request_id != case_request_id(case)
    assert f"Example request: {nearest.request}" in prompt
    assert planned.spec.rationale.startswith("From memory: planned with")
