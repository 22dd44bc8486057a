"""The planner evaluation's memory mode (leave-one-out): the other cases as past runs.

`remember_cases` writes every case of the evaluation set into a task memory as a request
that succeeded on its fleet, its plan being the case's expected plan (`expected_plan`:
the expected tools, devices and dependencies; the set gives no arguments, so each star
gets its tool's required arguments as placeholders like "<path>"). `plan_case` then
plans one case the way the runtime plans a request in words (`app.planning`): recall
the nearest remembered requests, leaving out the case itself, adapt them to the case's
fleet (`agents.planner.recall`), reuse a plan for the same request or show the similar
ones to the model as its worked examples.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.constellation import PlanSpec
from agents.planner.context import PlanningContext
from agents.planner.evaluation import EvalCase, EvalDevice, fleet_devices
from agents.planner.planner import Planner
from agents.planner.recall import (
    RecalledPlans,
    memory_rationale,
    prompt_avoid,
    prompt_examples,
    recall_plans,
    reuse_plan,
)
from agents.remember import fleet_shape
from memory.recall import TaskRecall
from memory.tree import OpenRequest, TaskTree, UpdateRequest

RECALL_LIMIT = 8


def case_request_id(case: EvalCase) -> str:
    return f"r-eval-{case.id}"


def placeholder_args(
    schema: Mapping[str, Any], upstream: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """The required arguments of a tool schema, each a placeholder of its type; an
    `artifact` refers to the upstream star that put one (`upstream`: (id, tool) pairs)."""
    properties = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for name in schema.get("required") or []:
        kind = (properties.get(name) or {}).get("type")
        if name == "artifact":
            put = [star for star, tool in upstream if tool == "artifact.put"] or [
                star for star, _ in upstream
            ]
            args[name] = f"${{{put[0]}.output.sha256}}" if put else "0" * 64
        elif kind == "integer":
            args[name] = 1
        elif kind == "number":
            args[name] = 1.0
        elif kind == "boolean":
            args[name] = False
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = f"<{name}>"
    return args


def expected_plan(case: EvalCase, schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A case's expected plan in the form the memory keeps a plan that ran."""
    tools = {star.id: star.tool for star in case.expected.stars}
    return {
        "name": case.request[:80],
        "rationale": "",
        "stars": [
            {
                "id": star.id,
                "title": f"{star.tool} on {star.on or 'any device'}",
                "tool": star.tool,
                "on": {"name": star.on} if star.on else None,
                "args": placeholder_args(
                    schemas.get(star.tool) or {}, [(up, tools[up]) for up in star.after]
                ),
                "after": list(star.after),
            }
            for star in case.expected.stars
        ],
        "lines": [],
    }


def remember_cases(
    tree: TaskTree,
    cases: Sequence[EvalCase],
    fleets: Mapping[str, Sequence[EvalDevice]],
    schemas: Mapping[str, Mapping[str, Any]],
) -> None:
    """Every case as a request that succeeded on its fleet with its expected plan."""
    operations: list[Any] = []
    for case in cases:
        rid = case_request_id(case)
        plan = expected_plan(case, schemas)
        summary = {
            "asked": case.request,
            "source": "request",
            "status": "succeeded",
            "plan": plan,
            "outcome": {"status": "succeeded", "stars": {}},
            "failures": [],
            "fleet": fleet_shape(fleet_devices(fleets[case.fleet])),
        }
        operations += [
            OpenRequest(rid, case.request, "request"),
            UpdateRequest(rid, status="succeeded", summary=summary, finished=True),
        ]
    tree.apply(operations)


@dataclass(frozen=True)
class MemoryPlan:
    """How one case was planned with memory: its plan (None: rejected), how, the
    attempts it took and how long."""

    spec: PlanSpec | None
    recalled: RecalledPlans
    reused: bool
    attempts: int
    seconds: float


async def plan_case(
    planner: Planner, case: EvalCase, context: PlanningContext, recall: TaskRecall
) -> MemoryPlan:
    """Plan `case` with the memory of every other case (see the module docstring);
    `PlanRejected` propagates like the planner's."""
    started = time.perf_counter()
    found = recall.search(case.request, RECALL_LIMIT, exclude={case_request_id(case)})
    recalled = recall_plans(found, context, request=case.request)
    reused = reuse_plan(case.request, recalled, context)
    if reused is not None:
        return MemoryPlan(reused[0], recalled, True, 0, time.perf_counter() - started)
    outcome = await planner.create(
        case.request,
        context,
        examples=prompt_examples(case.request, recalled),
        avoid=prompt_avoid(recalled),
    )
    spec = outcome.spec.model_copy(
        update={"rationale": memory_rationale(recalled, outcome.rationale)}
    )
    return MemoryPlan(spec, recalled, False, outcome.attempts, time.perf_counter() - started)
