"""sys.info on this machine: sane values, and `paths` confined like the file tools."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from devices.host import platform_name
from devices.policy import DevicePolicy, FsPolicy
from devices.tools import PathOutsideWorkspace, SysInfoTool, ToolContext, ToolError
from devices.tools.sys_info import SysInfoResult

WAIT = 15.0


async def info(context: ToolContext, tool: SysInfoTool | None = None, **args: Any) -> SysInfoResult:
    tool = tool or SysInfoTool()
    return await asyncio.wait_for(tool.run(tool.parse_args(args), context), WAIT)


async def test_fields_are_sane(context: ToolContext, workspace: Path) -> None:
    result = await info(context)
    assert result.hostname == socket.gethostname()
    assert result.platform == platform_name()
    assert result.os_release == platform.release()
    assert result.machine == platform.machine()
    assert result.python_version == platform.python_version()
    assert result.cpus == os.cpu_count()
    assert result.disks == []
    usage = shutil.disk_usage(workspace)
    assert result.disk_total_mb == usage.total // 2**20
    assert 0 <= result.disk_free_mb <= result.disk_total_mb
    assert result.gpu_free_vram_mb is None or result.gpu_free_vram_mb >= 0
    if sys.platform.startswith("linux"):
        assert result.memory_total_mb is not None
        assert result.memory_available_mb is not None
        assert 0 < result.memory_available_mb <= result.memory_total_mb
        assert result.uptime_seconds is not None
        assert result.uptime_seconds > 0
    if hasattr(os, "getloadavg"):
        assert result.load_average is not None
        assert len(result.load_average) == 3
        assert all(load >= 0 for load in result.load_average)


async def test_the_gpu_is_what_the_probe_reads(context: ToolContext) -> None:
    assert (await info(context)).gpu_free_vram_mb is None  # default: no GPU known
    probed = await info(context, SysInfoTool(free_vram=lambda: 6 * 2**30 + 1))
    assert probed.gpu_free_vram_mb == 6 * 1024


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="Linux: /proc/meminfo")
async def test_memory_agrees_with_proc_meminfo(context: ToolContext) -> None:
    before = _meminfo_kb()
    result = await info(context)
    after = _meminfo_kb()
    assert result.memory_total_mb == before["MemTotal"] // 1024 == after["MemTotal"] // 1024
    assert result.memory_available_mb is not None
    low, high = sorted((before["MemAvailable"] // 1024, after["MemAvailable"] // 1024))
    slack = 64  # MiB another process may take or free between the reads
    assert low - slack <= result.memory_available_mb <= high + slack


def _meminfo_kb() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith(" kB"):
            fields[name] = int(value.split()[0])
    return fields


async def test_disk_usage_of_requested_paths(
    context: ToolContext, workspace: Path, tmp_path: Path
) -> None:
    (workspace / "sub").mkdir()
    result = await info(context, paths=["sub", "."])
    assert [disk.path for disk in result.disks] == ["sub", "."]
    assert all(0 <= disk.free_mb <= disk.total_mb for disk in result.disks)
    elsewhere = tmp_path / "data"
    elsewhere.mkdir()
    rooted = ToolContext(workspace=workspace, policy=DevicePolicy(fs=FsPolicy(roots=(elsewhere,))))
    assert [disk.path for disk in (await info(rooted, paths=[str(elsewhere)])).disks] == [
        str(elsewhere)
    ]


@pytest.mark.parametrize("path", ["..", "/", "../data"])
async def test_paths_outside_are_refused(context: ToolContext, path: str) -> None:
    with pytest.raises(PathOutsideWorkspace):
        await info(context, paths=[path])


async def test_a_missing_path_is_a_tool_error(context: ToolContext) -> None:
    with pytest.raises(ToolError, match="there is no 'nope' to report the disk usage of"):
        await info(context, paths=["nope"])


def test_takes_no_required_arguments() -> None:
    schema = SysInfoTool().json_schema()
    assert "required" not in schema
    assert set(schema["properties"]) == {"paths"}
