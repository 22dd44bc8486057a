"""A tool registry under a device policy: `apply_policy` and the `PolicyToolRegistry` it makes.

The policy itself (`devices.tools.policy`) is plain data that tools read from their
`ToolContext`; this module binds it to tools, so it sits above `devices.tools.base`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from devices.tools.base import Tool, ToolContext, ToolRegistry
from devices.tools.errors import ToolDisabled
from devices.tools.policy import DevicePolicy

__all__ = ["PolicyToolRegistry", "apply_policy"]


def apply_policy(
    policy: DevicePolicy, registry: ToolRegistry, *, unlisted: Iterable[str] = ()
) -> PolicyToolRegistry:
    """A registry of `registry`'s tools that `policy` enables, each run with `policy` in
    its context.

    Disabled tools are not offered (not in `names()`, `schemas()` or iteration), but
    a call to one fails with `ToolDisabled` rather than as an unknown tool. Tool names
    in `[tools]` or `[approval]` that `registry` does not have raise `PolicyError`
    (a misspelt `disabled` entry would otherwise leave the tool on), except under the
    `mcp.<server>.` of a server in `unlisted` (one whose tools are not known yet).
    """
    offered = registry.names()
    policy.check_tools(offered, unlisted=unlisted)
    return PolicyToolRegistry(policy, [registry.get(name) for name in offered])


class _Bound(Tool[Any, Any]):
    """A tool run with a given policy in its context (whatever the caller's context says)."""

    def __init__(self, inner: Tool[Any, Any], policy: DevicePolicy) -> None:
        self.inner = inner
        self.policy = policy

    async def run(self, args: Any, context: ToolContext) -> Any:
        self.policy.check_enabled(self.name)
        return await self.inner.run(args, dataclasses.replace(context, policy=self.policy))

    def parse_args(self, raw: Mapping[str, Any]) -> Any:
        return self.inner.parse_args(raw)

    def json_schema(self) -> dict[str, Any]:
        return self.inner.json_schema()


class _Disabled(Tool[Any, Any]):
    """Stands in for a tool the policy turned off: every call fails with `ToolDisabled`."""

    args_model = BaseModel
    result_model = BaseModel

    def __init__(self, policy: DevicePolicy) -> None:
        self.policy = policy

    def parse_args(self, raw: Mapping[str, Any]) -> Any:
        raise ToolDisabled(self.name, self.policy.source)

    async def run(self, args: Any, context: ToolContext) -> Any:
        raise ToolDisabled(self.name, self.policy.source)


def _bound(tool: Tool[Any, Any], policy: DevicePolicy) -> Tool[Any, Any]:
    inner = tool.inner if isinstance(tool, _Bound) else tool

    class Bound(_Bound):
        name = inner.name
        args_model = inner.args_model
        result_model = inner.result_model

    Bound.__name__ = Bound.__qualname__ = f"Policy{type(inner).__name__}"
    return Bound(inner, policy)


def _disabled(name: str, policy: DevicePolicy) -> Tool[Any, Any]:
    tool_name = name

    class Disabled(_Disabled):
        name = tool_name

    return Disabled(policy)


class PolicyToolRegistry(ToolRegistry):
    """The tools a device offers under a policy; made by `apply_policy`.

    Enabled tools run with the policy in their `ToolContext`. Disabled ones are left out
    of `names()`, `schemas()`, iteration and `len()`, but `name in registry` is true for
    them and `get(name)` gives a stand-in that fails with `ToolDisabled`, so a call to
    one is refused with the reason instead of as an unknown tool.
    """

    def __init__(self, policy: DevicePolicy, tools: Iterable[Tool[Any, Any]] = ()) -> None:
        self.policy = policy
        self._withheld: set[str] = set()
        super().__init__(tools)

    def register(self, tool: Tool[Any, Any]) -> None:
        if tool.name in self._withheld:
            raise ValueError(f"a tool named {tool.name!r} is already registered (disabled)")
        if self.policy.is_enabled(tool.name):
            super().register(_bound(tool, self.policy))
        else:
            if tool.name in self:
                raise ValueError(f"a tool named {tool.name!r} is already registered")
            self._withheld.add(tool.name)

    @property
    def disabled(self) -> list[str]:
        """The tools the policy turned off."""
        return sorted(self._withheld)

    def get(self, name: str) -> Tool[Any, Any]:
        if name in self._withheld:
            return _disabled(name, self.policy)
        return super().get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._withheld or super().__contains__(name)
