"""The built-in tools every device offers, and the `Tool` abstraction they share."""

from __future__ import annotations

from devices.tools.base import Tool, ToolContext, ToolRegistry
from devices.tools.errors import (
    InvalidToolArgs,
    PathOutsideWorkspace,
    ToolError,
    ToolFailed,
    ToolTimedOut,
    UnknownToolName,
)
from devices.tools.fs_list import FsListTool
from devices.tools.fs_read import FsReadTool
from devices.tools.fs_write import FsWriteTool
from devices.tools.process import ProcessResult
from devices.tools.python_run import PythonTool
from devices.tools.shell import ShellTool

__all__ = [
    "FsListTool",
    "FsReadTool",
    "FsWriteTool",
    "InvalidToolArgs",
    "PathOutsideWorkspace",
    "ProcessResult",
    "PythonTool",
    "ShellTool",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolFailed",
    "ToolRegistry",
    "ToolTimedOut",
    "UnknownToolName",
    "default_tools",
]


def default_tools() -> ToolRegistry:
    """A fresh registry of the built-ins: shell.run, python.run, fs.read, fs.write, fs.list."""
    return ToolRegistry([ShellTool(), PythonTool(), FsReadTool(), FsWriteTool(), FsListTool()])
