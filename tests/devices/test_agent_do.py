"""`agent.do`: the bounded ReAct loop, with a scripted model and the real default model."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agents.models.grammar import check_schema, schema_to_grammar
from devices.tools import (
    InvalidToolArgs,
    ToolContext,
    ToolFailed,
    ToolRegistry,
    UnknownToolName,
    default_tools,
)
from devices.tools.agent_do import (
    FINISH,
    HISTORY_BUDGET_CHARS,
    MAX_OBSERVATION_BYTES,
    AgentDoArgs,
    AgentDoResult,
    AgentDoTool,
    ChatModel,
    decision_schema,
    truncate,
)

if TYPE_CHECKING:
    from conftest import ProgressLog


@dataclass(frozen=True)
class Reply:
    """What the scripted model returns: only the text, like a `Completion`."""

    text: str


@dataclass(frozen=True)
class Call:
    """One chat call the scripted model received."""

    messages: list[dict[str, str]]
    max_tokens: int
    schema: dict[str, Any] | None


class ScriptedModel:
    """A chat model that returns canned replies in order and records what it was asked."""

    name = "scripted"

    def __init__(self, replies: Sequence[str | dict[str, Any]]) -> None:
        self._replies = [r if isinstance(r, str) else json.dumps(r) for r in replies]
        self.calls: list[Call] = []

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int,
        schema: dict[str, Any] | None,
    ) -> Reply:
        self.calls.append(Call([dict(m) for m in messages], max_tokens, schema))
        if len(self.calls) > len(self._replies):
            raise AssertionError(f"the script has only {len(self._replies)} replies")
        return Reply(self._replies[len(self.calls) - 1])


def step(action: str, args: dict[str, Any] | None = None, thought: str = "") -> dict[str, Any]:
    return {"thought": thought or f"use {action}", "action": action, "args": args or {}}


def finish(answer: str, thought: str = "done") -> dict[str, Any]:
    return {"thought": thought, "action": FINISH, "args": {}, "answer": answer}


def agent(model: ChatModel, registry: ToolRegistry | None = None) -> AgentDoTool:
    tools = registry if registry is not None else default_tools()

    async def provide() -> ChatModel:
        return model

    return AgentDoTool(lambda: tools, provide)


async def run(
    model: ChatModel, context: ToolContext, registry: ToolRegistry | None = None, **args: Any
) -> AgentDoResult:
    tool = agent(model, registry)
    return await tool.run(tool.parse_args({"goal": "do the thing", **args}), context)


def prompt_of(call: Call) -> str:
    return "\n".join(message["content"] for message in call.messages)


# ---------------------------------------------------------------------- the loop


async def test_writes_a_file_then_finishes(
    context: ToolContext, workspace: Path, progress: ProgressLog
) -> None:
    model = ScriptedModel(
        [
            step("fs.write", {"path": "notes/hello.txt", "content": "hello"}, "write the note"),
            finish("wrote notes/hello.txt"),
        ]
    )
    result = await run(model, context)

    assert (workspace / "notes" / "hello.txt").read_text() == "hello"
    assert result.finished
    assert result.answer == "wrote notes/hello.txt"
    assert result.model == "scripted"
    assert [(s.tool, s.ok) for s in result.steps] == [("fs.write", True), (FINISH, True)]
    first = result.steps[0]
    assert first.thought == "write the note"
    assert first.args == {"path": "notes/hello.txt", "content": "hello"}
    assert json.loads(first.observation) == {"path": "notes/hello.txt", "bytes_written": 5}
    messages = [message for message, _ in progress.items]
    assert messages[0].startswith('step 1: fs.write {"path":"notes/hello.txt"')
    assert messages[-1] == "step 2: finish"
    # The model was asked with the system prompt first, then the goal; step 2 saw step 1.
    first_call, second_call = model.calls
    assert [m["role"] for m in first_call.messages] == ["system", "user"]
    assert "Goal: do the thing" in first_call.messages[1]["content"]
    assert first_call.messages[0] == second_call.messages[0]  # a shared prefix
    assert '"bytes_written":5' in second_call.messages[1]["content"]
    AgentDoResult.model_validate(result.model_dump())


async def test_the_schema_offers_every_tool_but_itself_and_the_grammar_accepts_it(
    context: ToolContext,
) -> None:
    registry = default_tools()
    model = ScriptedModel([finish("nothing to do")])
    registry.register(agent(model, registry))
    await run(model, context, registry)

    schema = model.calls[0].schema
    assert schema is not None
    actions = schema["properties"]["action"]["enum"]
    assert actions == [*default_tools().names(), FINISH]
    assert schema["properties"]["args"] == {"type": "object"}
    check_schema(schema)
    assert schema_to_grammar(schema)
    system = model.calls[0].messages[0]["content"]
    assert "- fs.write: Write text" in system
    assert "path: string (required)" in system
    assert "agent.do" not in system


async def test_invalid_args_become_an_observation_and_the_model_corrects_itself(
    context: ToolContext, workspace: Path
) -> None:
    model = ScriptedModel(
        [
            step("fs.write", {"path": "a.txt"}),  # no content
            step("fs.write", {"path": "a.txt", "content": "fixed"}),
            finish("done"),
        ]
    )
    result = await run(model, context)

    assert (workspace / "a.txt").read_text() == "fixed"
    failed, fixed, _ = result.steps
    assert not failed.ok
    assert "invalid arguments for fs.write" in failed.observation
    assert "content" in failed.observation
    assert fixed.ok
    assert "invalid arguments for fs.write" in model.calls[1].messages[1]["content"]
    assert result.finished


async def test_a_tool_error_becomes_an_observation(context: ToolContext) -> None:
    model = ScriptedModel([step("fs.read", {"path": "../secret.txt"}), finish("cannot")])
    result = await run(model, context)

    assert result.finished
    assert not result.steps[0].ok
    assert "outside the workspace" in result.steps[0].observation
    assert "outside the workspace" in prompt_of(model.calls[1])


async def test_a_failed_command_shows_its_output(context: ToolContext) -> None:
    model = ScriptedModel(
        [step("shell.run", {"cmd": "echo oops >&2; exit 3"}), finish("it failed")]
    )
    result = await run(model, context)

    assert not result.steps[0].ok
    assert "oops" in result.steps[0].observation


async def test_stops_after_max_steps(context: ToolContext) -> None:
    model = ScriptedModel([step("fs.list", thought=f"look again {n}") for n in range(1, 4)])
    result = await run(model, context, max_steps=3)

    assert not result.finished
    assert len(model.calls) == 3
    assert [s.tool for s in result.steps] == ["fs.list"] * 3
    assert all(s.ok for s in result.steps)
    assert result.answer == "look again 3"


async def test_agent_do_cannot_call_itself(context: ToolContext) -> None:
    registry = default_tools()
    model = ScriptedModel([step("agent.do", {"goal": "recurse"}), finish("no recursion")])
    registry.register(agent(model, registry))
    result = await run(model, context, registry)

    assert result.finished
    assert result.steps[0].tool == "agent.do"
    assert not result.steps[0].ok
    assert "cannot call itself" in result.steps[0].observation
    assert len(model.calls) == 2

    tool = agent(model, registry)
    with pytest.raises(InvalidToolArgs, match=r"agent\.do"):
        tool.parse_args({"goal": "x", "tools": ["fs.list", "agent.do"]})


async def test_another_agent_do_under_another_name_is_not_offered(context: ToolContext) -> None:
    class Helper(AgentDoTool):
        name = "agent.helper"

    registry = default_tools()
    model = ScriptedModel([finish("ok")])
    registry.register(Helper(lambda: registry, lambda: _ready(model)))
    assert "agent.helper" not in (await run(model, context, registry)).model_dump_json()
    schema = model.calls[0].schema
    assert schema is not None
    assert "agent.helper" not in schema["properties"]["action"]["enum"]

    tool = agent(model, registry)
    with pytest.raises(InvalidToolArgs, match="call itself"):
        await tool.run(tool.parse_args({"goal": "x", "tools": ["agent.helper"]}), context)


async def _ready(model: ChatModel) -> ChatModel:
    return model


async def test_only_the_allowed_tools_are_offered(context: ToolContext, workspace: Path) -> None:
    model = ScriptedModel([step("fs.write", {"path": "x.txt", "content": "x"}), finish("no")])
    result = await run(model, context, tools=["fs.list"])

    schema = model.calls[0].schema
    assert schema is not None
    assert schema["properties"]["action"]["enum"] == ["fs.list", FINISH]
    assert "no tool 'fs.write'" in result.steps[0].observation
    assert not (workspace / "x.txt").exists()

    with pytest.raises(UnknownToolName, match="no tool 'nope'"):
        await run(ScriptedModel([]), context, tools=["nope"])


async def test_an_unparseable_reply_is_a_failed_step(context: ToolContext) -> None:
    model = ScriptedModel(["not json at all", '{"thought": "no action"}', finish("recovered")])
    result = await run(model, context)

    assert result.finished
    assert result.answer == "recovered"
    first, second, _ = result.steps
    assert (first.tool, first.ok) == ("", False)
    assert "not JSON" in first.observation
    assert "action" in second.observation
    assert "unusable reply" in prompt_of(model.calls[2])


async def test_three_unparseable_replies_in_a_row_fail(context: ToolContext) -> None:
    model = ScriptedModel(["{oops", "[1, 2]", '{"action": 7}', finish("never")])
    with pytest.raises(ToolFailed, match="3 unusable replies in a row") as raised:
        await run(model, context)

    assert len(model.calls) == 3
    output = raised.value.output
    assert isinstance(output, AgentDoResult)
    assert len(output.steps) == 3
    assert not output.finished


async def test_the_prompt_stays_bounded_with_huge_observations(
    context: ToolContext, workspace: Path
) -> None:
    (workspace / "big.txt").write_text("0123456789abcdef\n" * 20_000)  # 340 KB
    reads = [step("fs.read", {"path": "big.txt"}, "read it " * 30) for _ in range(11)]
    model = ScriptedModel([*reads, finish("big")])
    result = await run(model, context, max_steps=12)

    assert result.finished
    for outcome in result.steps:
        assert len(outcome.observation.encode()) <= MAX_OBSERVATION_BYTES
    system = len(model.calls[0].messages[0]["content"])
    for call in model.calls:
        assert len(call.messages) == 2
        assert call.messages[0]["content"] == model.calls[0].messages[0]["content"]
        assert len(call.messages[1]["content"]) <= HISTORY_BUDGET_CHARS + 200
        assert len(prompt_of(call)) <= system + HISTORY_BUDGET_CHARS + 200
    last = model.calls[-1].messages[1]["content"]
    assert "(left out)" in last
    assert "[..." in last  # the newest observation is shown, truncated


async def test_a_model_that_cannot_load_fails_the_tool(context: ToolContext) -> None:
    async def broken() -> ChatModel:
        raise RuntimeError("no model file")

    tool = AgentDoTool(default_tools, broken)
    with pytest.raises(ToolFailed, match="could not be loaded: no model file"):
        await tool.run(AgentDoArgs(goal="x"), context)


def test_arguments_are_bounded() -> None:
    tool = agent(ScriptedModel([]))
    assert tool.parse_args({"goal": "x"}).max_steps == 6
    for bad in ({"goal": ""}, {"goal": "x" * 2001}, {"goal": "x", "max_steps": 13}):
        with pytest.raises(InvalidToolArgs):
            tool.parse_args(bad)


def test_truncate_keeps_head_and_tail_within_a_kilobyte() -> None:
    text = "début " + "é" * 3000 + " fin"
    cut = truncate(text)
    assert len(cut.encode()) <= MAX_OBSERVATION_BYTES
    assert cut.startswith("début ")
    assert cut.endswith(" fin")
    assert "bytes cut" in cut
    assert truncate("short") == "short"


def test_the_decision_schema_is_enforceable() -> None:
    schema = decision_schema(["fs.list"])
    check_schema(schema)
    assert schema["properties"]["thought"]["maxLength"] == 300
    assert schema["properties"]["answer"]["maxLength"] == 1000


# ---------------------------------------------------------------------- the real model


@pytest.mark.slow
async def test_the_default_model_terminates_with_valid_steps(
    context: ToolContext, workspace: Path
) -> None:
    from agents.models.backend import LlamaBackend
    from tests.agents.models.embedded import default_model_settings

    settings = default_model_settings(n_ctx=4096)
    (workspace / "a.txt").write_text("alpha\n")
    (workspace / "b.txt").write_text("beta\n")
    registry = default_tools()
    async with LlamaBackend(settings) as backend:
        tool = AgentDoTool(lambda: registry, lambda: _ready(backend))
        args = tool.parse_args(
            {"goal": "List the files in the workspace and finish.", "max_steps": 3}
        )
        started = time.perf_counter()
        result = await tool.run(args, context)
        elapsed = time.perf_counter() - started

    print(f"agent.do with {backend.name}: {len(result.steps)} steps in {elapsed:.1f}s")
    for outcome in result.steps:
        print(outcome.model_dump_json()[:400])
    AgentDoResult.model_validate(result.model_dump())
    assert 1 <= len(result.steps) <= 3
    assert result.model == backend.name
    for outcome in result.steps:
        assert outcome.tool in {*registry.names(), FINISH}
        assert len(outcome.observation.encode()) <= MAX_OBSERVATION_BYTES
    if result.finished:
        assert result.steps[-1].tool == FINISH
