"""A scripted model backend for planner tests that are not about model quality.

`ScriptedModel(outputs)` answers each `chat` call with the next output (a string, or a
`Completion` to script the finish reason) and records the messages and schema it got.
It ignores the schema: the point is to feed the planner what a grammar would not allow.
"""

from __future__ import annotations

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
