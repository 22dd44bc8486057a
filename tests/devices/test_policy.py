"""DevicePolicy: the TOML file, its errors, the defaults, registries and approval summaries."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from devices.policy import (
    DevicePolicy,
    FsPolicy,
    PolicyError,
    PolicyToolRegistry,
    ShellPolicy,
    ToolsPolicy,
    apply_policy,
    default_policy,
)
from devices.tools import (
    FsReadTool,
    ShellTool,
    ToolContext,
    ToolDisabled,
    ToolRegistry,
    UrlNotAllowed,
    default_tools,
)
from devices.tools.fs_write import FsWriteArgs

GOOD = """
[tools]
disabled = ["python.run"]

[fs]
roots = ["/srv/data", "~/shared"]

[shell]
allowed_commands = ["ls", "make", "/usr/bin/git"]

[http]
allow = ["https://example.org/api/", "http://127.0.0.1:8000/"]

[approval]
required = ["shell.run", "fs.write"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_without_a_file() -> None:
    policy = DevicePolicy()
    assert policy.source is None
    assert policy.tools.enabled is None
    assert policy.tools.disabled == ()
    assert policy.fs.roots == ()
    assert policy.shell.allowed_commands is None
    assert policy.http.allow == ()
    assert policy.approval.required == ()
    assert all(policy.is_enabled(name) for name in default_tools().names())
    assert not policy.needs_approval("shell.run", {"cmd": "ls"})
    policy.shell.check("ls; rm -rf x && echo `id` > y")  # any command without an allow-list
    with pytest.raises(UrlNotAllowed, match=r"no URL is allowed.*\[http\] allow"):
        policy.http.check("https://example.org/")
    assert default_policy() == policy


def test_tool_context_defaults_to_the_default_policy(workspace: Path) -> None:
    context = ToolContext(workspace=workspace)
    assert context.policy is default_policy()
    assert ToolContext(workspace=workspace, policy=DevicePolicy()).policy == DevicePolicy()


def test_a_good_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    policy = DevicePolicy.load(path)
    assert policy.source == path
    assert policy.tools.disabled == ("python.run",)
    assert not policy.is_enabled("python.run")
    assert policy.is_enabled("shell.run")
    assert policy.fs.roots == (Path("/srv/data"), Path.home() / "shared")
    assert policy.shell.allowed_commands == ("ls", "make", "/usr/bin/git")
    assert policy.http.allow == ("https://example.org/api/", "http://127.0.0.1:8000/")
    assert policy.needs_approval("shell.run", {"cmd": "ls"})
    assert not policy.needs_approval("fs.read", {"path": "x"})


def test_an_empty_file_is_the_default_policy(tmp_path: Path) -> None:
    policy = DevicePolicy.load(write(tmp_path, ""))
    assert policy.model_dump() == DevicePolicy().model_dump()
    assert policy.source == tmp_path / "device.toml"


def test_enabled_lists_the_only_tools(tmp_path: Path) -> None:
    policy = DevicePolicy.load(write(tmp_path, '[tools]\nenabled = ["fs.read", "fs.list"]\n'))
    assert policy.is_enabled("fs.read")
    assert not policy.is_enabled("shell.run")
    with pytest.raises(ToolDisabled) as caught:
        policy.check_enabled("shell.run")
    assert caught.value.message == (
        f"tool 'shell.run' is disabled on this device by its policy ({tmp_path / 'device.toml'}); "
        "enable it under [tools]"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[tools]\ndisabled = "shell.run"\n', 'tools.disabled: should be a list, like ["a", "b"]'),
        (
            '[tools]\ndisabled = ["shell run"]\n',
            "tools.disabled[0]: 'shell run' is not a tool name",
        ),
        ('[tools]\nenabled = ["fs.read", ""]\n', "tools.enabled[1]: '' is not a tool name"),
        (
            '[tools]\nenabled = ["fs.read"]\ndisabled = ["fs.read"]\n',
            "tools: 'fs.read' listed both in enabled and in disabled",
        ),
        (
            "[tools]\nenable = []\n",
            "tools.enable: unknown key; the keys here are: enabled, disabled",
        ),
        ('[fs]\nroots = ["data"]\n', "fs.roots[0]: 'data' is not an absolute path"),
        ("[fs]\nroots = [3]\n", "fs.roots[0]: Input is not a valid path"),
        ('[shell]\nallowed_commands = ["ls -l"]\n', "shell.allowed_commands[0]: 'ls -l' is not a"),
        ('[shell]\ncommands = ["ls"]\n', "shell.commands: unknown key; the keys here are: allowed"),
        ('[http]\nallow = ["ftp://host/"]\n', "http.allow[0]: 'ftp://host/' is not a usable URL"),
        ('[http]\nallow = ["https://x.org/a?b=1"]\n', "http.allow[0]: 'https://x.org/a?b=1' is"),
        ('[http]\nallow = ["https://u@x.org/"]\n', "http.allow[0]: 'https://u@x.org/' is not a"),
        ('[http]\nallow = ["example.org/api/"]\n', "http.allow[0]: 'example.org/api/' is not a"),
        ("[approval]\nrequired = [3]\n", "approval.required[0]: Input should be a valid string"),
        (
            "[network]\n",
            "network: unknown key; the keys here are: tools, fs, shell, http, approval",
        ),
        ("tools = 3\n", "tools: should be a table, like [tools]"),
    ],
)
def test_each_bad_key_is_named(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        DevicePolicy.load(path)
    assert caught.value.message.startswith(f"{path}: {problem}")
    assert caught.value.source == path
    assert caught.value.key == problem.split(":", 1)[0]


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = write(tmp_path, '[fs]\nroots = ["a"]\n[shell]\nallowed_commands = "ls"\n')
    with pytest.raises(PolicyError) as caught:
        DevicePolicy.load(path)
    assert "fs.roots[0]: 'a' is not an absolute path" in caught.value.message
    assert "; shell.allowed_commands: should be a list" in caught.value.message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=rf"^{missing}: cannot read the policy file: "):
        DevicePolicy.load(missing)
    broken = write(tmp_path, "[tools\n")
    with pytest.raises(PolicyError, match=rf"^{broken}: not valid TOML: .*line 1"):
        DevicePolicy.load(broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[tools]")
    with pytest.raises(PolicyError, match="not valid TOML"):
        DevicePolicy.load(binary)


def test_apply_leaves_out_disabled_tools_but_refuses_them_by_name(tmp_path: Path) -> None:
    policy = DevicePolicy.load(write(tmp_path, '[tools]\ndisabled = ["shell.run"]\n'))
    registry = apply_policy(policy, default_tools())
    assert isinstance(registry, PolicyToolRegistry)
    assert "shell.run" not in registry.names()
    assert "shell.run" not in registry.schemas()
    assert "shell.run" not in [tool.name for tool in registry]
    assert len(registry) == len(default_tools()) - 1
    assert registry.disabled == ["shell.run"]
    assert "shell.run" in registry  # handled here: refused with the reason, not "unknown"
    stand_in = registry.get("shell.run")
    with pytest.raises(ToolDisabled, match=r"'shell.run' is disabled .*device\.toml"):
        stand_in.parse_args({"cmd": "ls"})
    assert registry.get("fs.read").name == "fs.read"
    assert registry.get("fs.read").json_schema() == FsReadTool().json_schema()


def test_tools_registered_later_obey_the_policy() -> None:
    policy = DevicePolicy(tools=ToolsPolicy(enabled=("fs.read",)))
    registry = apply_policy(policy, ToolRegistry([FsReadTool()]))
    registry.register(ShellTool())
    assert registry.names() == ["fs.read"]
    assert registry.disabled == ["shell.run"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ShellTool())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(FsReadTool())


def test_applying_again_uses_the_new_policy() -> None:
    first = DevicePolicy(shell=ShellPolicy(allowed_commands=("ls",)))
    second = DevicePolicy(tools=ToolsPolicy(disabled=("fs.read",)))
    registry = apply_policy(second, apply_policy(first, default_tools()))
    assert "fs.read" not in registry.names()
    assert registry.get("shell.run").policy is second  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[tools]\ndisabled = ["shel.run"]\n', "tools.disabled"),
        ('[tools]\nenabled = ["fs.read", "fs.raed"]\n', "tools.enabled"),
        ('[approval]\nrequired = ["shell.exec"]\n', "approval.required"),
    ],
)
def test_apply_refuses_names_the_device_does_not_have(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        apply_policy(DevicePolicy.load(path), default_tools())
    assert caught.value.message.startswith(f"{path}: {key}: no tool '")
    assert "on this device; it offers: " in caught.value.message
    assert caught.value.key == key


def test_roots_are_absolute_after_expansion() -> None:
    assert FsPolicy(roots=(Path("~"),)).roots == (Path.home(),)


def test_approval_summaries() -> None:
    policy = DevicePolicy.from_mapping({"approval": {"required": ["shell.run", "fs.write"]}})
    assert policy.approval_rule("fs.read", FsReadTool().parse_args({"path": "a"})) is None
    args = ShellTool().parse_args({"cmd": "make all\nmake install", "cwd": "src"})
    assert policy.approval_rule("shell.run", args) == "shell.run (in src): make all ⏎ make install"
    assert policy.describe("shell.run", {"cmd": "ls", "env": {"A": "1"}}) == (
        "shell.run with A=1: ls"
    )
    write_args = FsWriteArgs(path="notes/a.txt", content="grüße", append=True)
    assert policy.describe("fs.write", write_args) == "fs.write: append 7 bytes to notes/a.txt"
    assert policy.describe("http.get", {"url": "https://x.org/"}) == "http.get: https://x.org/"
    assert policy.describe("fs.read", {"path": "a"}) == "fs.read: a"
    assert policy.describe("other.tool", {"b": 1, "a": [2]}) == 'other.tool: {"a": [2], "b": 1}'


def test_long_summaries_say_what_they_do_not_show() -> None:
    code = "x = 1\n" * 300
    summary = DevicePolicy().describe("python.run", {"code": code})
    assert summary.startswith("python.run: x = 1 ⏎ x = 1")
    assert summary.endswith("more characters not shown]")
    assert len(summary) < 1_100
