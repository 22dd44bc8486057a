"""The `fs.write` tool: write or append text to a workspace file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from devices.tools.base import Tool, ToolContext
from devices.tools.errors import ToolError
from devices.tools.paths import confine_in, shown

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


def _write(target: Path, shown: str, data: bytes, append: bool, make_dirs: bool) -> None:
    try:
        if target.is_dir():
            raise ToolError(f"{shown!r} is a folder; give a file path inside it")
        if not target.parent.is_dir():
            if not make_dirs:
                raise ToolError(
                    f"the folder of {shown!r} does not exist; create it or pass make_dirs=true"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
        # the path was resolved: a link here now was swapped in since, so do not follow it
        mode = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
        with os.fdopen(os.open(target, mode, 0o666), "ab" if append else "wb") as file:
            file.write(data)
    except OSError as error:
        raise ToolError(f"cannot write {shown!r}: {error.strerror or error}") from None


class FsWriteTool(Tool[FsWriteArgs, FsWriteResult]):
    name = "fs.write"
    args_model = FsWriteArgs
    result_model = FsWriteResult

    async def run(self, args: FsWriteArgs, context: ToolContext) -> FsWriteResult:
        target = confine_in(context, args.path)
        name = shown(context.workspace, target)
        data = args.content.encode("utf-8")
        await asyncio.to_thread(_write, target, name, data, args.append, args.make_dirs)
        return FsWriteResult(path=name, bytes_written=len(data))
