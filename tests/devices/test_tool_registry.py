"""The tool registry, argument validation and JSON schemas of the built-ins."""

from __future__ import annotations

import pytest

from devices.tools import (
    FsReadTool,
    InvalidToolArgs,
    ShellTool,
    ToolRegistry,
    UnknownToolName,
    default_tools,
)

BUILT_INS = [
    "artifact.get",
    "artifact.put",
    "fs.list",
    "fs.read",
    "fs.write",
    "http.get",
    "python.run",
    "shell.run",
    "sys.info",
]


def test_default_tools_are_the_built_ins() -> None:
    registry = default_tools()
    assert registry.names() == BUILT_INS
    assert len(registry) == len(BUILT_INS)
    assert [tool.name for tool in registry] == BUILT_INS
    assert "shell.run" in registry
    assert "agent.do" not in registry


def test_schemas_describe_the_arguments() -> None:
    schemas = default_tools().schemas()
    assert list(schemas) == BUILT_INS
    for schema in schemas.values():
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
    assert schemas["shell.run"]["required"] == ["cmd"]
    assert set(schemas["shell.run"]["properties"]) == {
        "cmd",
        "cwd",
        "env",
        "timeout",
        "max_output",
        "check",
    }
    assert schemas["python.run"]["required"] == ["code"]
    assert schemas["fs.read"]["required"] == ["path"]
    assert schemas["fs.write"]["required"] == ["path", "content"]
    assert "required" not in schemas["fs.list"]


def test_unknown_name_lists_what_is_offered() -> None:
    with pytest.raises(UnknownToolName) as caught:
        default_tools().get("shell.exec")
    assert caught.value.message == (
        "there is no tool 'shell.exec'; it offers: " + ", ".join(BUILT_INS)
    )


def test_device_variant_of_unknown_name() -> None:
    error = UnknownToolName("x", ["b", "a"], device="laptop")
    assert error.message == "device 'laptop' has no tool 'x'; it offers: a, b"


def test_duplicate_registration_is_refused() -> None:
    registry = ToolRegistry([ShellTool()])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ShellTool())


def test_invalid_arguments_list_every_field() -> None:
    with pytest.raises(InvalidToolArgs) as caught:
        FsReadTool().parse_args({"max_bytes": "lots", "encoding": "klingon"})
    assert set(caught.value.fields) == {"path", "max_bytes", "encoding"}
    assert "encoding: Value error, 'klingon' is not a known text encoding" in caught.value.message
    assert caught.value.tool == "fs.read"
    with pytest.raises(InvalidToolArgs, match="'rot13' is not a known text encoding"):
        FsReadTool().parse_args({"path": "a", "encoding": "rot13"})
