"""What the planner may plan with: the connected devices and the tools they offer.

`PlanningContext` is built from the orchestrator's `DeviceInfo`s and the tools' argument
schemas (what devices announce in their AIP `hello`). Everything the generation schema
makes an enum of (tool names, device names) comes from here, so a plan can only name
what actually exists.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.planner.enforceable import unenforceable
from devices.registry import DeviceInfo

log = logging.getLogger(__name__)

ANY_DEVICE = "any"
"""The `on` value that lets the orchestrator pick any capable device."""


@dataclass(frozen=True)
class ToolView:
    """One tool as the planner sees it: name, one-line purpose, argument schema."""

    name: str
    description: str
    schema: Mapping[str, Any]

    @property
    def required(self) -> list[str]:
        return list(self.schema.get("required", []))

    @property
    def properties(self) -> Mapping[str, Any]:
        props = self.schema.get("properties", {})
        return props if isinstance(props, Mapping) else {}


@dataclass(frozen=True)
class PlanningContext:
    """The devices (by name) and tools (by name) a plan may use."""

    devices: tuple[DeviceInfo, ...]
    tools: Mapping[str, ToolView] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    """Offered tools left out, with why: schemas the grammar cannot give (`unenforceable`)."""

    @classmethod
    def from_devices(
        cls, devices: Sequence[DeviceInfo], tool_schemas: Mapping[str, Mapping[str, Any]]
    ) -> PlanningContext:
        """Keep the tools at least one device offers and that have a known schema the
        grammar can give (the others are in `refused`, with the reason, and logged)."""
        offered = {tool for device in devices for tool in device.tools}
        tools: dict[str, ToolView] = {}
        refused: dict[str, str] = {}
        for name, schema in sorted(tool_schemas.items()):
            if name not in offered:
                continue
            problem = unenforceable(schema)
            if problem is not None:
                refused[name] = problem
                log.info("planner: tool %s left out: %s", name, problem)
                continue
            tools[name] = ToolView(name=name, description=_first_line(schema), schema=schema)
        ordered = tuple(sorted(devices, key=lambda device: device.name))
        return cls(devices=ordered, tools=tools, refused=refused)

    @property
    def tool_names(self) -> list[str]:
        return sorted(self.tools)

    @property
    def device_names(self) -> list[str]:
        return [device.name for device in self.devices]

    def devices_with(self, tool: str) -> list[str]:
        """Names of the devices that offer `tool`, sorted."""
        return [device.name for device in self.devices if tool in device.tools]

    def device(self, name: str) -> DeviceInfo | None:
        return next((device for device in self.devices if device.name == name), None)


def _first_line(schema: Mapping[str, Any]) -> str:
    description = str(schema.get("description") or "").strip()
    return description.splitlines()[0] if description else ""
