"""The `agent.do` tool: a bounded ReAct loop over the device's own tools with its local model.

Each step the model sees the instructions, a compact catalogue of the tools it may use, the
goal and a compact, size-bounded history of the previous steps; it answers with one JSON
object (constrained by a grammar) naming a thought, an action (a tool name or "finish"),
the tool's arguments and, when finishing, the answer. The arguments are validated by the
chosen tool; an invalid call or a `ToolError` becomes the step's observation, so the model
can correct itself on the next step. The loop stops when the model says "finish" or after
`max_steps`. `agent.do` never offers itself to the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from devices.tools.base import Tool, ToolContext, ToolRegistry
from devices.tools.errors import InvalidToolArgs, ToolError, ToolFailed

log = logging.getLogger(__name__)

NAME = "agent.do"
FINISH = "finish"
"""The action that ends the loop; never a tool name."""

MAX_THOUGHT_CHARS = 300
MAX_ANSWER_CHARS = 1000
MAX_OBSERVATION_BYTES = 1024
"""An observation (kept in the result and shown to the model) is at most this many bytes."""
HISTORY_BUDGET_CHARS = 6000
"""Past this size the history drops the oldest observations, then the oldest steps."""
MAX_UNPARSEABLE = 3
"""This many unparseable replies in a row end the run with `ToolFailed`."""
_ARGS_SHOWN_CHARS = 300
_PROGRESS_ARGS_CHARS = 200


# ---------------------------------------------------------------------- the model it talks to


class ModelReply(Protocol):
    """What a chat call returns: at least the generated text (`Completion` has it)."""

    @property
    def text(self) -> str: ...


class ChatModel(Protocol):
    """A loaded chat model: `agents.models.backend.LlamaBackend` or a scripted test double."""

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int,
        schema: dict[str, Any] | None,
    ) -> ModelReply: ...


RegistryProvider = Callable[[], ToolRegistry]
"""Returns the registry whose tools `agent.do` acts with (asked once per run)."""
ModelProvider = Callable[[], Awaitable[ChatModel]]
"""Returns the loaded model to reason with, e.g. `lambda: manager.backend("device")`."""


# ---------------------------------------------------------------------- arguments and result


class AgentDoArgs(BaseModel):
    """Reach a goal by letting the device's local model use its tools, step by step."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1, max_length=2000, description="what to achieve, in words")
    max_steps: int = Field(
        default=6, ge=1, le=12, description="model replies at most, each a tool call or finish"
    )
    tools: list[str] | None = Field(
        default=None,
        description="tool names the model may use; default: every tool of the device but agent.do",
    )

    @field_validator("tools")
    @classmethod
    def _not_itself(cls, tools: list[str] | None) -> list[str] | None:
        if tools is not None:
            for name in tools:
                if name in (NAME, FINISH):
                    raise ValueError(f"{name!r} cannot be offered to agent.do's model")
        return tools


class AgentStep(BaseModel):
    """One step of the loop: what the model thought and did, and what came of it."""

    model_config = ConfigDict(extra="forbid")

    thought: str
    tool: str = Field(description='the tool called, "finish", or "" when the reply was unusable')
    args: dict[str, Any] = Field(description="the arguments as the model gave them")
    observation: str = Field(description="the result or error, truncated to about 1 KB")
    ok: bool = Field(description="the call succeeded (or the model finished)")


class AgentDoResult(BaseModel):
    """How the run ended: the answer, every step, and whether the model said it was done."""

    model_config = ConfigDict(extra="forbid")

    answer: str
    steps: list[AgentStep]
    finished: bool = Field(description="the model chose finish (false: it ran out of steps)")
    model: str = Field(description="the name of the model that reasoned")


class _Decision(BaseModel):
    """One reply of the model, as parsed (lenient: lengths are cut, not refused)."""

    model_config = ConfigDict(extra="ignore")

    thought: str = ""
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    answer: str = ""


class _Unparseable(Exception):
    """The model's reply is not one decision; the message says why."""


# ---------------------------------------------------------------------- the tool


class AgentDoTool(Tool[AgentDoArgs, AgentDoResult]):
    """`agent.do`: see the module docstring."""

    name = NAME
    args_model = AgentDoArgs
    result_model = AgentDoResult

    def __init__(
        self,
        registry_provider: RegistryProvider,
        model_provider: ModelProvider,
        *,
        max_tokens: int = 640,
    ) -> None:
        self._registry_provider = registry_provider
        self._model_provider = model_provider
        self._max_tokens = max_tokens

    async def run(self, args: AgentDoArgs, context: ToolContext) -> AgentDoResult:
        registry = self._registry_provider()
        tools = self._offered(registry, args.tools)
        try:
            model = await self._model_provider()
        except Exception as error:  # ModelFileMissing, BackendUnavailable, ...
            raise ToolFailed(f"the device's model could not be loaded: {error}") from error
        model_name = str(getattr(model, "name", "") or type(model).__name__)
        system = system_prompt(tools)
        schema = decision_schema([tool.name for tool in tools])
        offered = {tool.name: tool for tool in tools}
        steps: list[AgentStep] = []
        unparseable = 0
        for number in range(1, args.max_steps + 1):
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": user_prompt(args.goal, steps)},
            ]
            try:
                reply = await model.chat(messages, max_tokens=self._max_tokens, schema=schema)
            except Exception as error:  # GenerationFailed, SchemaNotConvertible, ...
                raise ToolFailed(
                    f"the device's model {model_name!r} failed at step {number}: {error}",
                    output=self._result(steps, "", finished=False, model=model_name),
                ) from error
            try:
                decision = parse_decision(reply.text)
            except _Unparseable as problem:
                unparseable += 1
                context.progress(f"step {number}: unusable model reply ({problem})", None)
                steps.append(
                    AgentStep(
                        thought="",
                        tool="",
                        args={},
                        observation=truncate(f"unusable reply: {problem}"),
                        ok=False,
                    )
                )
                if unparseable >= MAX_UNPARSEABLE:
                    raise ToolFailed(
                        f"the device's model {model_name!r} gave {unparseable} unusable replies "
                        f"in a row; the last: {problem}",
                        output=self._result(steps, "", finished=False, model=model_name),
                    ) from None
                continue
            unparseable = 0
            thought = decision.thought[:MAX_THOUGHT_CHARS]
            if decision.action == FINISH:
                context.progress(f"step {number}: {FINISH}", None)
                answer = (decision.answer or thought)[:MAX_ANSWER_CHARS]
                steps.append(
                    AgentStep(thought=thought, tool=FINISH, args={}, observation="", ok=True)
                )
                return self._result(steps, answer, finished=True, model=model_name)
            shown_args = _clip(_compact_json(decision.args), _PROGRESS_ARGS_CHARS)
            context.progress(f"step {number}: {decision.action} {shown_args}", None)
            ok, observation = await self._call(offered, decision, context)
            steps.append(
                AgentStep(
                    thought=thought,
                    tool=decision.action,
                    args=decision.args,
                    observation=observation,
                    ok=ok,
                )
            )
        last_thought = next((step.thought for step in reversed(steps) if step.thought), "")
        answer = last_thought or f"stopped after {args.max_steps} steps without finishing"
        return self._result(steps, answer, finished=False, model=model_name)

    def _offered(self, registry: ToolRegistry, names: list[str] | None) -> list[Tool[Any, Any]]:
        """The tools the model may call: the chosen ones, never agent.do itself."""
        if names is None:
            return [tool for tool in registry if not _is_agent(tool) and tool.name != FINISH]
        chosen: list[Tool[Any, Any]] = []
        for name in dict.fromkeys(names):
            tool = registry.get(name)  # UnknownToolName names what there is
            if _is_agent(tool):
                raise InvalidToolArgs(
                    f"agent.do cannot offer {name!r} to its model (it would call itself)",
                    tool=self.name,
                    fields=("tools",),
                )
            chosen.append(tool)
        return chosen

    async def _call(
        self, offered: Mapping[str, Tool[Any, Any]], decision: _Decision, context: ToolContext
    ) -> tuple[bool, str]:
        """Run the chosen tool; (succeeded, observation)."""
        tool = offered.get(decision.action)
        if tool is None:
            if decision.action == self.name:
                why = "agent.do cannot call itself; use the tools listed"
            else:
                why = f"there is no tool {decision.action!r}"
            choices = ", ".join([*offered, FINISH])
            return False, truncate(f"error: {why}; the actions are: {choices}")
        try:
            parsed = tool.parse_args(decision.args)
            result = await tool.run(parsed, context)
        except ToolFailed as error:
            text = f"error: {error.message}"
            if error.output is not None:
                text += f"; output: {error.output.model_dump_json()}"
            return False, truncate(text)
        except ToolError as error:
            return False, truncate(f"error: {error.message}")
        except Exception as error:  # a tool's bug must not end the loop; it is logged
            log.exception("agent.do: %s raised unexpectedly", tool.name)
            return False, truncate(f"error: {tool.name} failed: {type(error).__name__}: {error}")
        return True, truncate(result.model_dump_json())

    @staticmethod
    def _result(
        steps: list[AgentStep], answer: str, *, finished: bool, model: str
    ) -> AgentDoResult:
        return AgentDoResult(answer=answer, steps=list(steps), finished=finished, model=model)


def _is_agent(tool: Tool[Any, Any]) -> bool:
    return tool.name == NAME or isinstance(tool, AgentDoTool)


# ---------------------------------------------------------------------- the model's reply


def decision_schema(tool_names: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of one reply; only keywords the llama.cpp grammar enforces.

    `args` is a generic object: tool argument schemas use keywords (`minimum`, ...) the
    grammar cannot enforce, so the tool validates them instead.
    """
    return {
        "type": "object",
        "properties": {
            "thought": {"type": "string", "maxLength": MAX_THOUGHT_CHARS},
            "action": {"type": "string", "enum": [*tool_names, FINISH]},
            "args": {"type": "object"},
            "answer": {"type": "string", "maxLength": MAX_ANSWER_CHARS},
        },
        "required": ["thought", "action", "args", "answer"],
        "additionalProperties": False,
    }


def parse_decision(text: str) -> _Decision:
    """The decision in `text`, or `_Unparseable` saying what is wrong with it."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise _Unparseable(
            f"not JSON ({error.msg} at char {error.pos}): {_clip(text, 120)!r}"
        ) from None
    except RecursionError:  # a reply that nests without end, perhaps from what it read
        raise _Unparseable(f"not JSON: nested too deeply: {_clip(text, 120)!r}") from None
    if not isinstance(raw, dict):
        raise _Unparseable(f"not a JSON object: {_clip(text, 120)!r}")
    try:
        return _Decision.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(reply)'}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        raise _Unparseable(problems) from None


# ---------------------------------------------------------------------- prompts


_INTRODUCTION = """\
You are the assistant of one device. You reach a goal by using the device's tools, one \
step at a time. Paths are relative to the workspace folder.

Tools:"""

_TOOL_EXAMPLE = (
    '{"thought": "First I look at what is in the workspace.", "action": "fs.list", '
    '"args": {"path": "."}, "answer": ""}'
)

_REPLY_FORMAT = """\
Each reply is one JSON object: a short thought, the action (a tool name or finish), the \
tool's arguments, and an empty answer.{example}
You are then shown the tool's result (the observation); if it is an error, correct the \
call. When the goal is reached, or cannot be reached, reply with the answer, for example:
{{"thought": "The goal is reached.", "action": "finish", "args": {{}}, \
"answer": "what was found or done"}}"""


def system_prompt(tools: Sequence[Tool[Any, Any]]) -> str:
    """The goal-independent instructions and the catalogue of `tools` (shared prefix)."""
    lines = [_INTRODUCTION]
    for tool in tools:
        schema = tool.json_schema()
        summary = str(schema.get("description", "")).strip().splitlines()
        lines.append(f"- {tool.name}: {summary[0] if summary else ''}".rstrip())
        lines.append(f"  args: {describe_args(schema)}")
    lines.append(f"- {FINISH}: end with the answer (args {{}})")
    offers_list = any(tool.name == "fs.list" for tool in tools)
    example = f" For example:\n{_TOOL_EXAMPLE}" if offers_list else ""
    lines.append("")
    lines.append(_REPLY_FORMAT.format(example=example))
    return "\n".join(lines)


def user_prompt(goal: str, steps: Sequence[AgentStep]) -> str:
    """The goal, the bounded history of `steps`, and the request for the next step."""
    if not steps:
        return f"Goal: {goal}\n\nNo steps yet. Reply with the first step."
    return (
        f"Goal: {goal}\n\nSteps so far:\n{history(steps)}\n\n"
        "Reply with the next step, or finish if the goal is reached."
    )


def history(steps: Sequence[AgentStep], budget: int = HISTORY_BUDGET_CHARS) -> str:
    """The steps as compact text of about `budget` characters at most.

    Past the budget the oldest observations are left out first (the last step's always
    stays), then the oldest steps altogether.
    """
    numbered = list(enumerate(steps, start=1))
    shown = [True] * len(numbered)

    def render(first: int) -> str:
        parts = [
            _render_step(n, step, shown[i]) for i, (n, step) in enumerate(numbered) if i >= first
        ]
        if first:
            parts.insert(0, f"({first} earlier steps left out)")
        return "\n".join(parts)

    text = render(0)
    for index in range(len(numbered) - 1):
        if len(text) <= budget:
            return text
        shown[index] = False
        text = render(0)
    first = 0
    while len(text) > budget and first < len(numbered) - 1:
        first += 1
        text = render(first)
    return text


def _render_step(number: int, step: AgentStep, with_observation: bool) -> str:
    if step.tool == "":
        action = "(unusable reply)"
    elif step.tool == FINISH:
        action = FINISH
    else:
        action = f"{step.tool} {_clip(_compact_json(step.args), _ARGS_SHOWN_CHARS)}"
    lines = [f"{number}. thought: {_clip(step.thought, MAX_THOUGHT_CHARS)}", f"   action: {action}"]
    status = "ok" if step.ok else "failed"
    if with_observation:
        lines.append(f"   observation ({status}): {truncate(step.observation)}")
    else:
        lines.append(f"   observation ({status}): (left out)")
    return "\n".join(lines)


def describe_args(schema: Mapping[str, Any]) -> str:
    """A tool's argument schema in one compact line: `name: type = default (description)`."""
    defs = {**schema.get("$defs", {}), **schema.get("definitions", {})}
    required = set(schema.get("required", []))
    parts = []
    for name, prop in schema.get("properties", {}).items():
        text = f"{name}: {_type_of(prop, defs)}"
        if name in required:
            text += " (required)"
        elif "default" in prop:
            text += f" = {_compact_json(prop['default'])}"
        description = str(prop.get("description", "")).strip()
        if description:
            text += f" - {_clip(description, 80)}"
        parts.append(text)
    return "; ".join(parts) if parts else "none"


def _type_of(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> str:
    """A short name for the type a (sub)schema describes."""
    if not isinstance(schema, Mapping) or depth > 4:
        return "any"
    if "$ref" in schema:
        target = defs.get(str(schema["$ref"]).rsplit("/", 1)[-1])
        return _type_of(target, defs, depth + 1) if target is not None else "object"
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return " | ".join(_type_of(item, defs, depth + 1) for item in schema[union])
    if "enum" in schema:
        return "one of " + ", ".join(_compact_json(item) for item in schema["enum"])
    if "const" in schema:
        return _compact_json(schema["const"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " | ".join(str(item) for item in kind)
    if kind == "array":
        return f"array of {_type_of(schema.get('items'), defs, depth + 1)}"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, Mapping) and not schema.get("properties"):
            return f"object of {_type_of(values, defs, depth + 1)}"
        return "object"
    bounds = []
    if "minimum" in schema:
        bounds.append(f">= {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        bounds.append(f"> {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        bounds.append(f"<= {schema['maximum']}")
    if "exclusiveMaximum" in schema:
        bounds.append(f"< {schema['exclusiveMaximum']}")
    return f"{kind} {' '.join(bounds)}" if bounds else str(kind)


# ---------------------------------------------------------------------- text bounds


def truncate(text: str, limit: int = MAX_OBSERVATION_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes: its head and tail around a marker."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker_room = 40
    keep = max(limit - marker_room, 0)
    head_bytes = keep * 3 // 4
    tail_bytes = keep - head_bytes
    head = data[:head_bytes].decode("utf-8", "ignore")
    tail = data[len(data) - tail_bytes :].decode("utf-8", "ignore") if tail_bytes else ""
    dropped = len(data) - len(head.encode("utf-8")) - len(tail.encode("utf-8"))
    return f"{head} [... {dropped} bytes cut ...] {tail}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
