"""The built-in tools every device offers, and the `Tool` abstraction they share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from devices.host import VramProbe, no_gpu
from devices.tools.base import Tool, ToolContext, ToolRegistry
from devices.tools.errors import (
    CommandNotAllowed,
    InvalidToolArgs,
    PathOutsideWorkspace,
    ToolDisabled,
    ToolError,
    ToolFailed,
    ToolTimedOut,
    UnknownToolName,
    UrlNotAllowed,
)
from devices.tools.fs_list import FsListTool
from devices.tools.fs_read import FsReadTool
from devices.tools.fs_write import FsWriteTool
from devices.tools.http_get import HttpGetTool
from devices.tools.policy import DevicePolicy
from devices.tools.policy_registry import PolicyToolRegistry, apply_policy
from devices.tools.process import ProcessResult
from devices.tools.python_run import PythonTool
from devices.tools.shell import ShellTool
from devices.tools.sys_info import McpToolSchemas, SysInfoTool

if TYPE_CHECKING:
    from devices.tools.agent_do import ModelProvider

__all__ = [
    "CommandNotAllowed",
    "FsListTool",
    "FsReadTool",
    "FsWriteTool",
    "HttpGetTool",
    "InvalidToolArgs",
    "PathOutsideWorkspace",
    "ProcessResult",
    "PythonTool",
    "ShellTool",
    "SysInfoTool",
    "Tool",
    "ToolContext",
    "ToolDisabled",
    "ToolError",
    "ToolFailed",
    "ToolRegistry",
    "ToolTimedOut",
    "UnknownToolName",
    "UrlNotAllowed",
    "default_tools",
    "device_tools",
]


def default_tools(
    free_vram: VramProbe = no_gpu, mcp_tools: McpToolSchemas | None = None
) -> ToolRegistry:
    """A fresh registry of the built-ins: shell.run, python.run, fs.read, fs.write, fs.list,
    artifact.put, artifact.get, http.get, sys.info (`device_tools` adds agent.do).
    `free_vram` tells sys.info the GPU's free memory (default: no GPU is known), and
    `mcp_tools` the MCP tools the device offers."""
    from devices.tools.artifacts import ArtifactGetTool, ArtifactPutTool

    registry = ToolRegistry(
        [
            ShellTool(),
            PythonTool(),
            FsReadTool(),
            FsWriteTool(),
            FsListTool(),
            ArtifactPutTool(),
            ArtifactGetTool(),
            HttpGetTool(),
            SysInfoTool(free_vram, mcp_tools),
        ]
    )
    return registry


def device_tools(
    policy: DevicePolicy,
    model: ModelProvider | None = None,
    *,
    free_vram: VramProbe = no_gpu,
    extra: Iterable[Tool[Any, Any]] = (),
    unlisted: Iterable[str] = (),
) -> ToolRegistry:
    """What `orrery device` offers: the built-ins and the `extra` tools (its MCP servers'
    `mcp.<server>.<tool>`, `devices.mcp`) under `policy`, and, given a `model` provider,
    `agent.do` (`app/` passes one that loads the "device" model on first use).
    agent.do acts only with enabled tools that need no approval: its calls do not pass
    through the approval gate. `free_vram` is for sys.info (see `default_tools`), which
    also reports the MCP tools offered. `unlisted` names MCP servers whose tools are not
    known yet (`apply_policy`)."""
    offered: PolicyToolRegistry | None = None

    def mcp_schemas() -> dict[str, dict[str, Any]]:
        schemas = offered.schemas() if offered is not None else {}
        return {name: schema for name, schema in schemas.items() if name.startswith("mcp.")}

    registry = default_tools(free_vram, mcp_schemas)
    for tool in extra:
        registry.register(tool)
    tools = offered = apply_policy(policy, registry, unlisted=unlisted)
    if model is not None:
        from devices.tools.agent_do import AgentDoTool

        def unattended() -> ToolRegistry:
            return ToolRegistry(
                [tools.get(name) for name in tools.names() if not policy.needs_approval(name, {})]
            )

        tools.register(AgentDoTool(unattended, model))
    return tools
