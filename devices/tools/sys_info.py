"""The `sys.info` tool: what this machine is and how loaded it is (CPU, memory, disk, GPU)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from devices import host
from devices.host import VramProbe, no_gpu
from devices.tools.base import Tool, ToolContext
from devices.tools.errors import ToolError
from devices.tools.paths import Confined, locate_in, shown, workspace_root

_MB = 1024 * 1024


McpToolSchemas = Callable[[], dict[str, dict[str, Any]]]
"""The MCP tools a device offers now: name -> input JSON schema (`devices.mcp`)."""


class SysInfoArgs(BaseModel):
    """Describe this device; `paths` adds the disk usage of folders it may use."""

    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="folders (relative to the workspace, or in a policy's [fs] roots) "
        "whose disk usage to report besides the workspace's",
    )


class DiskUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    total_mb: int
    free_mb: int = Field(description="MiB available to this device's user")


class SysInfoResult(BaseModel):
    """Sizes are in MiB; a field is null where this platform cannot tell."""

    model_config = ConfigDict(extra="forbid")

    hostname: str
    platform: str = Field(description="linux, macos or windows (else sys.platform)")
    os_release: str
    machine: str = Field(description="e.g. x86_64 or arm64")
    python_version: str
    cpus: int | None
    memory_total_mb: int | None
    memory_available_mb: int | None
    load_average: list[float] | None = Field(description="1, 5 and 15 minutes")
    uptime_seconds: float | None
    disk_total_mb: int = Field(description="the workspace's file system")
    disk_free_mb: int
    disks: list[DiskUsage] = Field(description="the requested paths, in order")
    gpu_free_vram_mb: int | None = Field(description="most free VRAM on one NVIDIA GPU")
    mcp_tools: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="the MCP servers' tools this device offers: name -> input JSON schema",
    )


def _mb(size: int | None) -> int | None:
    return size // _MB if size is not None else None


def _uptime() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/uptime") as file:
        return round(float(file.read().split()[0]), 1)
    return None


def _load_average() -> list[float] | None:
    load = host.load_average()
    return [round(value, 2) for value in load] if load is not None else None


def _disk(path: Path | Confined, name: str) -> DiskUsage:
    """The disk usage where `path` is; a `Confined` one is opened without following a link
    on the way (a folder swapped for a link meanwhile is refused, not followed)."""
    try:
        if isinstance(path, Path):
            usage = shutil.disk_usage(path)
        else:
            handle = path.open(os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            try:
                usage = shutil.disk_usage(handle)  # statvfs takes a descriptor
            finally:
                os.close(handle)
    except FileNotFoundError:
        raise ToolError(f"there is no {name!r} to report the disk usage of") from None
    except OSError as error:
        raise ToolError(
            f"cannot read the disk usage of {name!r}: {error.strerror or error}"
        ) from None
    return DiskUsage(path=name, total_mb=usage.total // _MB, free_mb=usage.free // _MB)


def _gather(
    workspace: Path, folders: list[tuple[Confined, str]], free_vram: VramProbe
) -> SysInfoResult:
    memory = host.memory()
    own = _disk(workspace, ".")
    return SysInfoResult(
        hostname=socket.gethostname(),
        platform=host.platform_name(),
        os_release=platform.release(),
        machine=platform.machine(),
        python_version=platform.python_version(),
        cpus=host.cpu_count(),
        memory_total_mb=_mb(memory.total),
        memory_available_mb=_mb(memory.available),
        load_average=_load_average(),
        uptime_seconds=_uptime(),
        disk_total_mb=own.total_mb,
        disk_free_mb=own.free_mb,
        disks=[_disk(path, name) for path, name in folders],
        gpu_free_vram_mb=_mb(free_vram()),
    )


class SysInfoTool(Tool[SysInfoArgs, SysInfoResult]):
    """`free_vram` reads the GPU's free memory (`app/` passes NVML's); default: no GPU.
    `mcp_tools` tells which MCP tools the device offers (`devices.tools.device_tools`)."""

    name = "sys.info"
    args_model = SysInfoArgs
    result_model = SysInfoResult

    def __init__(
        self, free_vram: VramProbe = no_gpu, mcp_tools: McpToolSchemas | None = None
    ) -> None:
        self._free_vram = free_vram
        self._mcp_tools = mcp_tools

    async def run(self, args: SysInfoArgs, context: ToolContext) -> SysInfoResult:
        workspace = workspace_root(context.workspace)
        folders: list[tuple[Confined, str]] = []
        for path in args.paths:
            target = locate_in(context, path)
            folders.append((target, shown(context.workspace, target.path)))
        facts = await asyncio.to_thread(_gather, workspace, folders, self._free_vram)
        if self._mcp_tools is not None:
            facts.mcp_tools = self._mcp_tools()
        return facts
