"""The `fs.write` tool: write or append text to a workspace file."""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel, ConfigDict, Field

from devices.tools.base import Tool, ToolContext
from devices.tools.errors import ToolError
from devices.tools.paths import Confined, locate_in, shown


class FsWriteArgs(BaseModel):
    """Write text (UTF-8) to a file of the workspace, replacing it or appending to it."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        description="file path relative to the workspace (or absolute, in a policy's [fs] roots)",
    )
    content: str
    append: bool = Field(default=False, description="add to the end instead of replacing")
    make_dirs: bool = Field(default=True, description="create missing parent folders")


class FsWriteResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    bytes_written: int


def _write(target: Confined, shown: str, data: bytes, append: bool, make_dirs: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    try:
        if not target.parts:
            raise IsADirectoryError
        # no link followed on the way: a folder swapped for a link since `locate` fails it
        with os.fdopen(
            target.open(flags, 0o666, make_dirs=make_dirs), "ab" if append else "wb"
        ) as file:
            file.write(data)
    except IsADirectoryError:
        raise ToolError(f"{shown!r} is a folder; give a file path inside it") from None
    except FileNotFoundError:
        raise ToolError(
            f"the folder of {shown!r} does not exist; create it or pass make_dirs=true"
        ) from None
    except OSError as error:
        raise ToolError(f"cannot write {shown!r}: {error.strerror or error}") from None


class FsWriteTool(Tool[FsWriteArgs, FsWriteResult]):
    name = "fs.write"
    args_model = FsWriteArgs
    result_model = FsWriteResult

    async def run(self, args: FsWriteArgs, context: ToolContext) -> FsWriteResult:
        target = locate_in(context, args.path)
        name = shown(context.workspace, target.path)
        data = args.content.encode("utf-8")
        await asyncio.to_thread(_write, target, name, data, args.append, args.make_dirs)
        return FsWriteResult(path=name, bytes_written=len(data))
