"""The tool abstraction: `Tool`, the `ToolContext` it runs in, and the `ToolRegistry`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from devices.tools.errors import (
    InvalidToolArgs,
    PathOutsideWorkspace,
    ToolError,
    ToolFailed,
    ToolTimedOut,
    UnknownToolName,
)
from devices.tools.policy import DevicePolicy, default_policy

__all__ = [
    "InvalidToolArgs",
    "PathOutsideWorkspace",
    "ProgressCallback",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolFailed",
    "ToolRegistry",
    "ToolTimedOut",
    "UnknownToolName",
]

ProgressCallback = Callable[[str, str | None], None]
"""Receives (message, stream): stream is "stdout", "stderr" or None for a step note."""

ArgsT = TypeVar("ArgsT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound=BaseModel)


def _no_progress(message: str, stream: str | None) -> None:
    del message, stream


class ArtifactChannelLike(Protocol):
    """What the artifact tools need of `devices.artifact_channel.ArtifactChannel`."""

    async def upload(self, path: Path, name: str) -> ArtifactInfoLike: ...

    async def download(self, sha256: str, dest: Path) -> ArtifactInfoLike: ...


class ArtifactInfoLike(Protocol):
    @property
    def sha256(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class ToolContext:
    """Where a tool runs: the workspace all file access is confined to, and a progress sink."""

    workspace: Path
    progress: ProgressCallback = field(default=_no_progress)
    artifacts: ArtifactChannelLike | None = None
    """The device's `devices.artifact_channel.ArtifactChannel` when it has an orchestrator."""
    policy: DevicePolicy = field(default_factory=default_policy)
    """What the tools may touch: `[fs] roots`, the shell and HTTP allow-lists. The default
    confines files to the workspace, allows any command and no URL."""
    private: tuple[Path, ...] = ()
    """Folders a sandboxed process must not see (the device's data dir)."""


class Tool(ABC, Generic[ArgsT, ResultT]):
    """A typed action: validated `args_model` in, `result_model` out."""

    name: ClassVar[str]
    args_model: type[ArgsT]
    result_model: type[ResultT]

    @abstractmethod
    async def run(self, args: ArgsT, context: ToolContext) -> ResultT:
        """Do the work; raise a `ToolError` (never a bare exception) when it cannot be done."""

    def parse_args(self, raw: Mapping[str, Any]) -> ArgsT:
        """Validate raw JSON arguments, or raise `InvalidToolArgs` naming the bad fields."""
        try:
            return self.args_model.model_validate(raw)
        except ValidationError as error:
            raise InvalidToolArgs.from_validation_error(self.name, error) from None

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments (what a planner and the AIP `hello` carry)."""
        return self.args_model.model_json_schema()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class ToolRegistry:
    """The tools a device offers, by name."""

    def __init__(self, tools: Iterable[Tool[Any, Any]] = ()) -> None:
        self._tools: dict[str, Tool[Any, Any]] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool[Any, Any]) -> None:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool[Any, Any]:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolName(name, self._tools) from None

    def names(self) -> list[str]:
        return sorted(self._tools)

    def schemas(self) -> dict[str, dict[str, Any]]:
        """Tool name -> JSON schema of its arguments."""
        return {name: self._tools[name].json_schema() for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool[Any, Any]]:
        return iter([self._tools[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._tools)
