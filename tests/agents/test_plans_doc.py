"""docs/plans.md's examples run as written: the plan with an `instruction` star goes
through the real plan loader, orchestrator and local device, whose `agent.do` reasons with
a scripted model (the model is not what is tested here; the plan is); the fan-out that
takes joining devices gives one its branch as the page says."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agents.constellation.edits import apply_batch
from agents.constellation.fanout import expand_fan_out
from agents.constellation.joining import branches_for
from agents.constellation.model import ConstellationStatus
from agents.constellation.plan_file import parse_plan
from agents.orchestrator import Orchestrator
from devices.local import LocalDispatcher
from devices.registry import DeviceInfo
from devices.tools import ToolRegistry, default_tools
from devices.tools.agent_do import AgentDoTool

DOC = Path(__file__).resolve().parents[2] / "docs" / "plans.md"
WAIT = 30.0


@cache
def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def block_with(text: str) -> str:
    (block,) = [block for block in yaml_blocks() if text in block]
    return block


@dataclass(frozen=True)
class Reply:
    text: str


class ScriptedModel:
    """Replies in order; records the user prompt of every call."""

    name = "scripted"

    def __init__(self, replies: Sequence[dict[str, Any]]) -> None:
        self._replies = [json.dumps(reply) for reply in replies]
        self.prompts: list[str] = []

    async def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int, schema: Any
    ) -> Reply:
        self.prompts.append(messages[-1]["content"])
        return Reply(self._replies[len(self.prompts) - 1])


async def test_the_instruction_example_runs_as_agent_do_with_its_goal(tmp_path: Path) -> None:
    plan = parse_plan(block_with("instruction:"), source="docs/plans.md")
    tidy = plan.stars["tidy"]
    assert (tidy.effective_tool, tidy.effective_args["max_steps"]) == ("agent.do", 4)

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    for name in ("keep.txt", "scratch.tmp", "old.tmp"):
        (workspace / name).write_text(name)
    model = ScriptedModel(
        [
            {"thought": "remove them", "action": "shell.run", "args": {"cmd": "rm *.tmp"}},
            {"thought": "done", "action": "finish", "args": {}, "answer": "deleted 2 files"},
        ]
    )

    async def provide() -> ScriptedModel:
        return model

    tools = default_tools()
    tools.register(AgentDoTool(lambda: ToolRegistry(list(default_tools())), provide))
    local = LocalDispatcher(workspace, name="laptop", tools=tools)
    try:
        final = await asyncio.wait_for(Orchestrator(local).run(plan), WAIT)
    finally:
        await local.aclose()

    assert final.status is ConstellationStatus.SUCCEEDED, final.model_dump_json(indent=1)
    assert final.stars["tidy"].output["answer"] == "deleted 2 files"
    assert sorted(path.name for path in workspace.iterdir()) == ["keep.txt"]
    goal = model.prompts[0].split("\n")[0]
    assert goal == "Goal: There are 3 files here. Delete the ones ending in .tmp."


def test_the_joining_example_gives_a_device_that_joins_its_branch_in_the_summary() -> None:
    plan = parse_plan(block_with("joining: true"), source="docs/plans.md")
    tools = frozenset({"shell.run", "fs.write"})
    workers = frozenset({"workers"})
    atlas = DeviceInfo(name="atlas", tools=tools)
    expand_fan_out(plan, [atlas, DeviceInfo(name="borealis", tools=tools, labels=workers)])
    plan.status = ConstellationStatus.RUNNING

    joined = branches_for(plan, DeviceInfo(name="cygnus", tools=tools, labels=workers))

    assert joined.branches == {"host": "host-cygnus"}
    assert joined.batch is not None
    assert joined.batch.rationale == "device cygnus joined: host-cygnus of host"
    after, _ = apply_batch(plan, joined.batch)
    assert after.stars["summary"].args["content"] == (
        "hosts:\n${host-borealis.output.stdout}\n${host-cygnus.output.stdout}"
    )
