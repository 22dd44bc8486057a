"""A scripted model backend for planner tests that are not about model quality.

`ScriptedModel(outputs)` answers each `chat` call with the next output (a string, or a
`Completion` to script the finish reason) and records the messages and schema it got.
It ignores the schema: the point is to feed the planner what a grammar would not allow.
`SlowModel` answers from call `slow_from` on only once its `gate` opens, as a model that
takes longer than a deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.models.backend import Completion
from agents.planner.context import PlanningContext
from devices.registry import DeviceInfo
from devices.tools import default_tools

TOOLS = ("shell.run", "python.run", "fs.read", "fs.write", "fs.list", "sys.info")


@dataclass
class Call:
    messages: list[dict[str, str]]
    schema: dict[str, Any] | None
    max_tokens: int
    grammar: str | None = None

    @property
    def prompt(self) -> str:
        return "\n".join(message["content"] for message in self.messages)


@dataclass
class ScriptedModel:
    outputs: list[str | Completion]
    calls: list[Call] = field(default_factory=list)

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        schema: dict[str, Any] | None = None,
        grammar: str | None = None,
    ) -> Completion:
        del temperature
        self.calls.append(Call([dict(m) for m in messages], schema, max_tokens, grammar))
        if not self.outputs:
            raise AssertionError("the planner asked the scripted model more often than scripted")
        output = self.outputs.pop(0)
        if isinstance(output, Completion):
            return output
        return Completion(output, "stop", len(output) // 4, 0, 0.0, 0.0)


@dataclass
class SlowModel(ScriptedModel):
    """A `ScriptedModel` whose calls from number `slow_from` on wait for `gate`: `asked` is
    set when such a call begins, `cancelled` counts the cancellations it saw. A `stubborn`
    one goes on waiting when cancelled and answers anyway (a late answer)."""

    slow_from: int = 1
    stubborn: bool = False
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: int = 0

    async def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        schema: dict[str, Any] | None = None,
        grammar: str | None = None,
    ) -> Completion:
        if len(self.calls) + 1 >= self.slow_from:
            self.asked.set()
            while not self.gate.is_set():
                try:
                    await self.gate.wait()
                except asyncio.CancelledError:
                    self.cancelled += 1
                    if not self.stubborn:
                        raise
        return await super().chat(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            schema=schema,
            grammar=grammar,
        )


def plan_json(*stars: dict[str, Any], rationale: str = "because") -> str:
    return json.dumps({"rationale": rationale, "stars": list(stars)})


def star(
    sid: str, tool: str = "shell.run", on: str = "laptop", after: Sequence[str] = (), **args: Any
) -> dict[str, Any]:
    if not args and tool == "shell.run":
        args = {"cmd": "echo hi"}
    data: dict[str, Any] = {"id": sid, "title": f"do {sid}", "tool": tool, "on": on, "args": args}
    if after:
        data["after"] = list(after)
    return data


def fleet() -> list[DeviceInfo]:
    return [
        DeviceInfo(name="laptop", tools=frozenset(TOOLS), labels=frozenset({"desktop"})),
        DeviceInfo(name="nas", tools=frozenset(TOOLS)),
        DeviceInfo(name="winbox", platform="windows", tools=frozenset({"shell.run"})),
    ]


def context(devices: Sequence[DeviceInfo] | None = None) -> PlanningContext:
    return PlanningContext.from_devices(devices or fleet(), default_tools().schemas())
