"""`artifact.put` and `artifact.get`: move files between devices through the orchestrator.

`artifact.put` uploads a workspace file; the orchestrator verifies and keeps it by its
sha256, which the star's output carries (`artifact`). A later star on another device runs
`artifact.get` with that hash (usually `${put.output.artifact}`) and a destination path;
the file arrives chunked, and is checked against the hash before it appears.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from devices.artifact_channel import ArtifactTransferFailed
from devices.tools.base import ArtifactChannelLike, ArtifactInfoLike, Tool, ToolContext
from devices.tools.errors import ToolError, ToolFailed
from devices.tools.paths import held_path, locate, relative


class ArtifactPutArgs(BaseModel):
    """Upload a file from the workspace to the orchestrator."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="file to upload, relative to the workspace")
    name: str | None = Field(
        default=None, min_length=1, max_length=255, description="stored name (default: its own)"
    )


class ArtifactPutResult(BaseModel):
    artifact: str = Field(description="sha256 of the content: what artifact.get takes")
    name: str
    size: int


class ArtifactGetArgs(BaseModel):
    """Download an artifact the orchestrator keeps into the workspace."""

    model_config = ConfigDict(extra="forbid")

    artifact: str = Field(pattern=r"^[0-9a-f]{64}$", description="its sha256 (artifact.put's)")
    path: str = Field(min_length=1, description="where to write it, relative to the workspace")


class ArtifactGetResult(BaseModel):
    artifact: str
    path: str
    size: int


def _channel(context: ToolContext) -> ArtifactChannelLike:
    channel = context.artifacts
    if channel is None:
        raise ToolError(
            "artifacts need a connection to an orchestrator; this device runs without one "
            "(run it with `orrery device --server URL`)"
        )
    return channel


async def _transfer(call: Awaitable[ArtifactInfoLike]) -> ArtifactInfoLike:
    try:
        return await call
    except ArtifactTransferFailed as exc:
        raise ToolFailed(str(exc)) from exc


class ArtifactPutTool(Tool[ArtifactPutArgs, ArtifactPutResult]):
    name: ClassVar[str] = "artifact.put"
    args_model = ArtifactPutArgs
    result_model = ArtifactPutResult

    async def run(self, args: ArtifactPutArgs, context: ToolContext) -> ArtifactPutResult:
        target = locate(context.workspace, args.path)
        path = target.path
        try:  # opened without following a link on the way, and read through that descriptor
            handle = target.open(os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            raise ToolError(f"{args.path!r} is not a file in the workspace") from None
        try:
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                raise ToolError(f"{args.path!r} is not a file in the workspace")
            channel = _channel(context)
            context.progress(f"uploading {relative(context.workspace, path)}", None)
            upload = channel.upload(held_path(handle, path), args.name or path.name)
            info = await _transfer(upload)
        finally:
            os.close(handle)
        return ArtifactPutResult(artifact=info.sha256, name=info.name, size=info.size)


class ArtifactGetTool(Tool[ArtifactGetArgs, ArtifactGetResult]):
    name: ClassVar[str] = "artifact.get"
    args_model = ArtifactGetArgs
    result_model = ArtifactGetResult

    async def run(self, args: ArtifactGetArgs, context: ToolContext) -> ArtifactGetResult:
        target = locate(context.workspace, args.path)
        dest = target.path
        if dest.is_dir():
            raise ToolError(f"{args.path!r} is a directory; name the file to write")
        channel = _channel(context)
        try:  # its folder, made and held open without following a link on the way
            folder, name = target.open_parent(make_dirs=True)
        except OSError as error:
            raise ToolError(f"cannot write {args.path!r}: {error.strerror or error}") from None
        try:
            context.progress(f"downloading {args.artifact[:12]} to {args.path}", None)
            into = held_path(folder, dest.parent) / name
            info = await _transfer(channel.download(args.artifact, into))
        finally:
            os.close(folder)
        return ArtifactGetResult(
            artifact=args.artifact, path=relative(context.workspace, dest), size=info.size
        )
