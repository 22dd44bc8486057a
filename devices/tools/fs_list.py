"""The `fs.list` tool: the entries of a workspace folder, optionally recursive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Generator
from fnmatch import fnmatchcase
from itertools import islice
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.tools.base import Tool, ToolContext
from devices.tools.errors import ToolError
from devices.tools.paths import Confined, locate_in, shown

_SUBFOLDER = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)

log = logging.getLogger(__name__)


class FsListArgs(BaseModel):
    """List a folder of the workspace; links are reported, never followed."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        default=".",
        min_length=1,
        description="folder relative to the workspace (or absolute, in a policy's [fs] roots)",
    )
    pattern: str = Field(
        default="*",
        min_length=1,
        description="glob matched against entry names (against the relative path if it has '/')",
    )
    recursive: bool = False
    max_entries: int = Field(default=1000, ge=1, le=100_000)


class FsEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="path relative to the listed folder")
    type: Literal["file", "dir", "link"]
    size: int | None = Field(description="bytes, for files; null for folders and links")


class FsListResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    entries: list[FsEntry]
    truncated: bool = Field(description="there were more than max_entries matches")


def _entry(item: os.DirEntry[str], name: str) -> FsEntry:
    if item.is_symlink():
        return FsEntry(name=name, type="link", size=None)
    if item.is_dir(follow_symlinks=False):
        return FsEntry(name=name, type="dir", size=None)
    try:
        size: int | None = item.stat(follow_symlinks=False).st_size
    except OSError:  # gone since the scan
        size = None
    return FsEntry(name=name, type="file", size=size)


def _walk(top: int, recursive: bool) -> Generator[FsEntry, None, None]:
    """Entries of the folder `top` (a descriptor, closed here) sorted by name, then (if
    recursive) of each subfolder in turn, each opened from its parent's descriptor
    without following a link (one swapped in meanwhile is skipped, not followed)."""
    pending: list[tuple[int, str]] = [(top, "")]
    try:
        while pending:
            folder, prefix = pending.pop()
            try:
                with os.scandir(folder) as scan:
                    items = sorted(scan, key=lambda item: item.name)
            except OSError as error:
                os.close(folder)
                if not prefix:
                    raise
                log.warning("fs.list skips %s: %s", prefix, error.strerror or error)
                continue
            below: list[tuple[int, str]] = []
            try:
                for item in items:
                    entry = _entry(item, prefix + item.name)
                    yield entry
                    if recursive and entry.type == "dir":
                        below.append((_subfolder(folder, item.name), entry.name + "/"))
            finally:
                os.close(folder)
                pending.extend(reversed([b for b in below if b[0] >= 0]))
    finally:
        for folder, _ in pending:
            os.close(folder)


def _subfolder(folder: int, name: str) -> int:
    """A descriptor of `name` in `folder`, not following a link; -1 (said) if it is gone
    or was swapped for something else since it was listed."""
    try:
        return os.open(name, _SUBFOLDER, dir_fd=folder)
    except OSError as error:
        log.warning("fs.list skips %s: %s", name, error.strerror or error)
        return -1


def _list(top: Confined, shown: str, args: FsListArgs) -> tuple[list[FsEntry], bool]:
    try:
        folder = top.open_dir()  # no link followed on the way
    except FileNotFoundError:
        raise ToolError(f"there is no folder {shown!r} in the workspace") from None
    except NotADirectoryError:
        raise ToolError(f"{shown!r} is a file, not a folder; read it with fs.read") from None
    except OSError as error:
        raise ToolError(f"cannot list {shown!r}: {error.strerror or error}") from None
    by_path = "/" in args.pattern
    walk = _walk(folder, args.recursive)
    matches = (
        entry
        for entry in walk
        if fnmatchcase(entry.name if by_path else entry.name.rsplit("/", 1)[-1], args.pattern)
    )
    try:
        with contextlib.closing(walk):  # closes the folders still open when cut short
            entries = list(islice(matches, args.max_entries + 1))
    except OSError as error:
        raise ToolError(f"cannot list {shown!r}: {error.strerror or error}") from None
    return entries[: args.max_entries], len(entries) > args.max_entries


class FsListTool(Tool[FsListArgs, FsListResult]):
    name = "fs.list"
    args_model = FsListArgs
    result_model = FsListResult

    async def run(self, args: FsListArgs, context: ToolContext) -> FsListResult:
        top = locate_in(context, args.path)
        name = shown(context.workspace, top.path)
        entries, truncated = await asyncio.to_thread(_list, top, name, args)
        return FsListResult(path=name, entries=entries, truncated=truncated)
