"""MCP servers as device tools (`devices.mcp`), with real servers as subprocesses:
`mcp-server-time` from PyPI and the tests' own `tests/mcp_servers/crashy.py`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devices.agent import DeviceAgent
from devices.mcp import MAX_TOOLS, McpServerGone, McpServers, McpToolSpec
from devices.policy import DevicePolicy, PolicyError
from devices.tools import InvalidToolArgs, ToolContext, ToolDisabled, ToolFailed, device_tools
from devices.tools.sys_info import SysInfoArgs

CRASHY = Path(__file__).parents[1] / "mcp_servers" / "crashy.py"
TIME_SERVER = Path(sys.executable).with_name("mcp-server-time")
WAIT = 30.0


def policy(servers: dict[str, Any], **sections: Any) -> DevicePolicy:
    return DevicePolicy.from_mapping({"mcp": {"servers": servers}, **sections})


def crashy(pid_file: Path, **settings: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(CRASHY), str(pid_file)], **settings}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def read_if_there(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def pid_of(pid_file: Path, *, other_than: int | None = None) -> int:
    async with asyncio.timeout(WAIT):
        while True:
            text = await asyncio.to_thread(read_if_there, pid_file)
            if text and int(text) != other_than:
                return int(text)
            await asyncio.sleep(0.02)


@pytest.fixture
async def started(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[McpServers]:
    chosen: DevicePolicy = request.param(tmp_path)
    servers = McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp")
    async with servers:
        yield servers


def context(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path)


async def test_a_pypi_server_s_tools_are_device_tools_and_calls_return_bounded_output(
    tmp_path: Path,
) -> None:
    chosen = policy({"time": {"command": str(TIME_SERVER), "args": ["--local-timezone", "UTC"]}})
    async with McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp") as servers:
        tools = device_tools(chosen, extra=servers.tools())
        assert "mcp.time.get_current_time" in tools.names()
        assert "mcp.time.convert_time" in tools.names()
        schema = tools.schemas()["mcp.time.get_current_time"]
        assert schema["required"] == ["timezone"]
        assert schema["description"]  # the tool's first line, for the hello
        tool = tools.get("mcp.time.get_current_time")
        output = await tool.run(tool.parse_args({"timezone": "UTC"}), context(tmp_path))
        dumped = output.model_dump(mode="json")
        assert dumped["server"] == "time"
        assert dumped["tool"] == "get_current_time"
        assert dumped["structured"]["timezone"] == "UTC"
        assert json.loads(dumped["text"])["timezone"] == "UTC"
        assert dumped["truncated"] is False
        # sys.info reports the MCP tools offered, with their schemas.
        info = await tools.get("sys.info").run(SysInfoArgs(), context(tmp_path))
        assert set(info.mcp_tools) == {"mcp.time.get_current_time", "mcp.time.convert_time"}


async def test_arguments_are_checked_against_the_tool_s_schema_before_the_call(
    tmp_path: Path,
) -> None:
    chosen = policy({"time": {"command": str(TIME_SERVER)}})
    async with McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp") as servers:
        tool = device_tools(chosen, extra=servers.tools()).get("mcp.time.get_current_time")
        with pytest.raises(InvalidToolArgs, match="timezone") as caught:
            tool.parse_args({"zone": "UTC"})
        assert "mcp.time.get_current_time" in caught.value.message
        with pytest.raises(InvalidToolArgs, match="not of type 'string'"):
            tool.parse_args({"timezone": 5})


async def test_the_policy_disables_and_gates_mcp_tools_like_built_in_ones(tmp_path: Path) -> None:
    chosen = policy(
        {"time": {"command": str(TIME_SERVER)}},
        tools={"disabled": ["mcp.time.convert_time"]},
        approval={"required": ["mcp.time.get_current_time"]},
    )
    async with McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp") as servers:
        tools = device_tools(chosen, extra=servers.tools())
        assert "mcp.time.convert_time" not in tools.names()
        with pytest.raises(ToolDisabled):
            tools.get("mcp.time.convert_time").parse_args({})
        assert chosen.needs_approval("mcp.time.get_current_time", {})
        summary = chosen.approval_rule(
            "mcp.time.get_current_time",
            tools.get("mcp.time.get_current_time").parse_args({"timezone": "UTC"}),
        )
        assert summary == 'mcp.time.get_current_time: {"timezone": "UTC"}'

        misspelt = policy(
            {"time": {"command": str(TIME_SERVER)}}, tools={"disabled": ["mcp.time.convert"]}
        )
        with pytest.raises(PolicyError, match=r"tools.disabled: no tool 'mcp.time.convert'"):
            device_tools(misspelt, extra=servers.tools())


async def test_a_server_that_exits_mid_call_fails_the_call_clearly_and_is_restarted(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "crashy.pid"
    chosen = policy({"crashy": crashy(pid_file)})
    async with McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp") as servers:
        tools = device_tools(chosen, extra=servers.tools())
        first = await pid_of(pid_file)
        crash = tools.get("mcp.crashy.crash")
        with pytest.raises(McpServerGone) as caught:
            await crash.run(crash.parse_args({}), context(tmp_path))
        assert "MCP server 'crashy' exited during the call of 'crash'" in caught.value.message
        assert "restarting it" in caught.value.message
        second = await pid_of(pid_file, other_than=first)
        server = servers.servers["crashy"]
        assert await server.wait_up(WAIT)
        assert server.starts == 2
        assert not alive(first)
        echo = tools.get("mcp.crashy.echo")
        output = await echo.run(echo.parse_args({"text": "back"}), context(tmp_path))
        assert output.text == "back"
        assert alive(second)
    assert not alive(second)  # stopped with the device


async def test_a_server_killed_while_idle_is_restarted(tmp_path: Path) -> None:
    pid_file = tmp_path / "crashy.pid"
    chosen = policy({"crashy": crashy(pid_file)})
    async with McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp") as servers:
        first = await pid_of(pid_file)
        os.kill(first, 9)
        second = await pid_of(pid_file, other_than=first)
        assert second != first
        assert await servers.servers["crashy"].wait_up(WAIT)


async def test_results_are_bounded_and_errors_fail_the_call(tmp_path: Path) -> None:
    pid_file = tmp_path / "crashy.pid"
    chosen = policy({"crashy": crashy(pid_file, max_output_chars=1000)})
    async with McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp") as servers:
        tools = device_tools(chosen, extra=servers.tools())
        big = tools.get("mcp.crashy.big")
        output = await big.run(big.parse_args({"chars": 50_000}), context(tmp_path))
        assert len(output.text) == 1000
        assert output.text_chars == 50_000
        assert output.truncated is True
        assert output.structured is None  # its JSON is over the bound too
        fail = tools.get("mcp.crashy.fail")
        with pytest.raises(
            ToolFailed, match=r"mcp\.crashy\.fail reported an error: Error executing tool fail"
        ):
            await fail.run(fail.parse_args({"why": "no luck"}), context(tmp_path))


async def test_a_server_that_cannot_start_offers_nothing_and_names_its_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-server"
    chosen = policy(
        {"gone": {"command": str(missing), "startup_timeout": 3}},
        tools={"disabled": ["mcp.gone.anything"]},  # cannot be checked yet: allowed
    )
    async with McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp") as servers:
        assert servers.unlisted == ["gone"]
        assert servers.tools() == []
        tools = device_tools(chosen, extra=servers.tools(), unlisted=servers.unlisted)
        assert not [name for name in tools.names() if name.startswith("mcp.")]
    assert "did not list its tools" in caplog.text
    assert "MCP servers gone run with this device user's full rights" in caplog.text
    log = tmp_path / "mcp" / "gone.log"
    assert "cannot start MCP server" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # what it saw is the device's business
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


async def test_a_streamable_http_server_on_the_allow_list_is_used(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pid_file = tmp_path / "http.pid"
    served = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CRASHY),
        str(pid_file),
        "--http",
        str(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        chosen = DevicePolicy.from_mapping(
            {
                "mcp": {
                    "servers": {
                        "remote": {"url": f"http://127.0.0.1:{port}/mcp", "startup_timeout": 8}
                    },
                    "allow_urls": [f"http://127.0.0.1:{port}/"],
                }
            }
        )
        # Until it listens, connecting fails and is retried with backoff.
        async with McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp") as servers:
            tools = device_tools(chosen, extra=servers.tools())
            assert "mcp.remote.echo" in tools.names()
            echo = tools.get("mcp.remote.echo")
            output = await echo.run(echo.parse_args({"text": "over http"}), context(tmp_path))
            assert output.text == "over http"
            served.kill()
            await served.wait()
            with pytest.raises(McpServerGone, match="'remote' was lost during the call"):
                await echo.run(echo.parse_args({"text": "anyone?"}), context(tmp_path))
            server = servers.servers["remote"]
            async with asyncio.timeout(WAIT):  # it dials again, and fails while none listens
                while server.up:
                    await asyncio.sleep(0.02)
            with pytest.raises(McpServerGone, match="is not running"):
                await server.call("echo", {"text": "still?"})
    finally:
        if served.returncode is None:
            served.kill()
            await served.wait()


def test_tools_past_the_hello_s_bounds_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chosen = policy({"big": {"command": "unused"}})
    servers = McpServers(chosen.mcp, workspace=tmp_path, log_dir=tmp_path / "mcp")
    huge = {"type": "object", "properties": {"a": {"type": "string", "description": "x" * 40_000}}}
    many = [McpToolSpec("big", f"t{n}", "", {"type": "object"}) for n in range(MAX_TOOLS + 60)]
    servers.servers["big"].tools = [McpToolSpec("big", "huge", "", huge), *many]
    offered = [tool.name for tool in servers.tools()]
    assert len(offered) == MAX_TOOLS
    assert "mcp.big.huge" not in offered
    assert "mcp.big.huge not offered: its input schema is" in caplog.text
    assert f"the device offers at most {MAX_TOOLS} MCP tools" in caplog.text
    # Within the bounds, the device's hello (all tools at once) is valid.
    agent = DeviceAgent(
        "ws://127.0.0.1:1",
        "big",
        "token",
        data_dir=tmp_path / "data",
        tools=device_tools(chosen, extra=servers.tools()),
    )
    assert agent.name == "big"


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"servers": {"t": {}}}, "give either command"),
        ({"servers": {"t": {"command": "x", "url": "http://127.0.0.1:1/mcp"}}}, "not both"),
        ({"servers": {"t": {"url": "http://127.0.0.1:1/mcp"}}}, "under none of .mcp. allow_urls"),
        ({"servers": {"Time": {"command": "x"}}}, "not a usable MCP server name"),
        ({"servers": {"t": {"command": "x", "comand": "y"}}}, "unknown key; the keys here are"),
        ({"servers": {"t": {"command": "x", "env": {"A B": "1"}}}}, "not environment variable"),
    ],
)
def test_bad_mcp_sections_are_refused_with_the_key_and_the_fix(
    section: dict[str, Any], problem: str
) -> None:
    with pytest.raises(PolicyError, match=problem) as caught:
        DevicePolicy.from_mapping({"mcp": section})
    assert str(caught.value.key).startswith("mcp")


def test_a_url_server_under_an_allowed_prefix_is_accepted() -> None:
    chosen = DevicePolicy.from_mapping(
        {
            "mcp": {
                "servers": {"remote": {"url": "http://127.0.0.1:8808/mcp"}},
                "allow_urls": ["http://127.0.0.1:8808/"],
            }
        }
    )
    assert chosen.mcp.servers["remote"].url == "http://127.0.0.1:8808/mcp"


def test_the_servers_from_pypi_are_installed() -> None:
    assert TIME_SERVER.exists(), "mcp-server-time is missing: `make test` installs the dev extra"
    assert shutil.which("git"), "mcp-server-git needs git (.ci/run installs it)"


def test_the_policy_in_docs_mcp_md_is_valid() -> None:
    text = (Path(__file__).parents[2] / "docs" / "mcp.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    servers = DevicePolicy.from_mapping(tomllib.loads(blocks[0])).mcp.servers
    assert sorted(servers) == ["git", "search", "time"]
    assert set(tomllib.loads(blocks[1])) == {"tools", "approval"}
