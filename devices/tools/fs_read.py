"""The `fs.read` tool: the text of a workspace file, bounded."""

from __future__ import annotations

import asyncio
import codecs
import os
import stat

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.tools.base import Tool, ToolContext
from devices.tools.errors import ToolError
from devices.tools.paths import Confined, locate_in, shown

MAX_READ_BYTES = 64 * 1024 * 1024
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class FsReadArgs(BaseModel):
    """Read a text file of the workspace (at most `max_bytes` of it)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        description="file path relative to the workspace (or absolute, in a policy's [fs] roots)",
    )
    max_bytes: int = Field(default=1_048_576, ge=1, le=MAX_READ_BYTES)
    encoding: str = Field(default="utf-8", description="text encoding, e.g. utf-8 or latin-1")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            b"a".decode(encoding, "ignore")  # also refuses codecs that are not for text (rot13)
        except LookupError:
            raise ValueError(
                f"{encoding!r} is not a known text encoding; try 'utf-8' or 'latin-1'"
            ) from None
        return encoding


class FsReadResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    content: str
    size: int = Field(description="the file's size in bytes")
    truncated: bool = Field(description="only the first max_bytes were read")


def _read(target: Confined, shown: str, max_bytes: int) -> tuple[bytes, int]:
    try:
        handle = target.open(os.O_RDONLY | _NONBLOCK)  # no link followed on the way
        try:
            info = os.fstat(handle)
            if stat.S_ISDIR(info.st_mode):
                raise ToolError(f"{shown!r} is a folder; list it with fs.list")
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(f"{shown!r} is not a regular file; only files can be read")
            with os.fdopen(handle, "rb", closefd=False) as file:
                return file.read(max_bytes + 1), info.st_size
        finally:
            os.close(handle)
    except FileNotFoundError:
        raise ToolError(
            f"there is no file {shown!r} in the workspace; use fs.list to see what is there"
        ) from None
    except OSError as error:
        raise ToolError(f"cannot read {shown!r}: {error.strerror or error}") from None


class FsReadTool(Tool[FsReadArgs, FsReadResult]):
    name = "fs.read"
    args_model = FsReadArgs
    result_model = FsReadResult

    async def run(self, args: FsReadArgs, context: ToolContext) -> FsReadResult:
        target = locate_in(context, args.path)
        name = shown(context.workspace, target.path)
        data, size = await asyncio.to_thread(_read, target, name, args.max_bytes)
        truncated = len(data) > args.max_bytes
        decoder = codecs.getincrementaldecoder(args.encoding)("strict")
        try:  # a cut in the middle of a character is not an error: the decoder keeps it back
            content = decoder.decode(data[: args.max_bytes], final=not truncated)
        except UnicodeDecodeError as error:
            raise ToolError(
                f"{name!r} is not {args.encoding} text (byte {error.start} does not decode); "
                "read it with another encoding such as 'latin-1'"
            ) from None
        return FsReadResult(path=name, content=content, size=size, truncated=truncated)
