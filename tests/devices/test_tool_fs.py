"""fs.read, fs.write and fs.list on real files, and their confinement to the workspace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from devices.tools import (
    FsListTool,
    FsReadTool,
    FsWriteTool,
    InvalidToolArgs,
    PathOutsideWorkspace,
    Tool,
    ToolContext,
    ToolError,
)

WAIT = 15.0


async def call(tool: Tool[Any, Any], context: ToolContext, **args: object) -> Any:
    result = await asyncio.wait_for(tool.run(tool.parse_args(args), context), WAIT)
    assert isinstance(result, BaseModel)
    return result.model_dump(mode="json")


async def test_write_then_read_round_trip(context: ToolContext, workspace: Path) -> None:
    text = "grüße\nzwei\n"
    written = await call(FsWriteTool(), context, path="notes/a.txt", content=text)
    assert written == {"path": "notes/a.txt", "bytes_written": len(text.encode())}
    assert (workspace / "notes" / "a.txt").read_bytes() == text.encode()
    read = await call(FsReadTool(), context, path="notes/./a.txt")
    assert read == {"path": "notes/a.txt", "content": text, "size": 13, "truncated": False}


async def test_write_replaces_or_appends(context: ToolContext, workspace: Path) -> None:
    await call(FsWriteTool(), context, path="log", content="one\n")
    await call(FsWriteTool(), context, path="log", content="two\n", append=True)
    assert (workspace / "log").read_text() == "one\ntwo\n"
    await call(FsWriteTool(), context, path="log", content="three\n")
    assert (workspace / "log").read_text() == "three\n"


async def test_write_without_make_dirs_needs_the_folder(context: ToolContext) -> None:
    with pytest.raises(ToolError, match="does not exist; create it or pass make_dirs=true"):
        await call(FsWriteTool(), context, path="new/a.txt", content="", make_dirs=False)


async def test_write_to_a_folder_fails(context: ToolContext, workspace: Path) -> None:
    (workspace / "dir").mkdir()
    with pytest.raises(ToolError, match="'dir' is a folder"):
        await call(FsWriteTool(), context, path="dir", content="x")
    (workspace / "file").write_text("")
    with pytest.raises(ToolError, match="cannot write 'file/below'"):
        await call(FsWriteTool(), context, path="file/below", content="x")


async def test_read_is_bounded(context: ToolContext, workspace: Path) -> None:
    (workspace / "big").write_text("é" * 10)  # 20 bytes
    read = await call(FsReadTool(), context, path="big", max_bytes=5)
    # the cut falls inside a character: the partial character is held back, not an error
    assert read == {"path": "big", "content": "éé", "size": 20, "truncated": True}


async def test_read_failures_say_what_to_do(context: ToolContext, workspace: Path) -> None:
    with pytest.raises(ToolError, match=r"no file 'missing'.*fs\.list"):
        await call(FsReadTool(), context, path="missing")
    (workspace / "dir").mkdir()
    with pytest.raises(ToolError, match=r"'dir' is a folder; list it with fs\.list"):
        await call(FsReadTool(), context, path="dir")


async def test_read_with_another_encoding(context: ToolContext, workspace: Path) -> None:
    (workspace / "latin").write_bytes("café".encode("latin-1"))
    with pytest.raises(ToolError, match=r"not utf-8 text.*'latin-1'"):
        await call(FsReadTool(), context, path="latin")
    read = await call(FsReadTool(), context, path="latin", encoding="latin-1")
    assert read["content"] == "café"


@pytest.fixture
def tree(workspace: Path, tmp_path: Path) -> Path:
    (workspace / "b.txt").write_text("bb")
    (workspace / "a.py").write_text("a")
    (workspace / "sub" / "deep").mkdir(parents=True)
    (workspace / "sub" / "c.py").write_text("ccc")
    (workspace / "sub" / "deep" / "d.py").write_text("dddd")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "e.py").write_text("e")
    (workspace / "out").symlink_to(tmp_path / "outside")
    return workspace


async def test_list_a_folder(context: ToolContext, tree: Path) -> None:
    listed = await call(FsListTool(), context)
    assert listed == {
        "path": ".",
        "entries": [
            {"name": "a.py", "type": "file", "size": 1},
            {"name": "b.txt", "type": "file", "size": 2},
            {"name": "out", "type": "link", "size": None},
            {"name": "sub", "type": "dir", "size": None},
        ],
        "truncated": False,
    }


async def test_list_recursively_with_a_pattern(context: ToolContext, tree: Path) -> None:
    listed = await call(FsListTool(), context, pattern="*.py", recursive=True)
    names = [entry["name"] for entry in listed["entries"]]
    assert names == ["a.py", "sub/c.py", "sub/deep/d.py"]  # links are not followed
    listed = await call(FsListTool(), context, path="sub", pattern="deep/*", recursive=True)
    assert listed["path"] == "sub"
    assert [entry["name"] for entry in listed["entries"]] == ["deep/d.py"]


async def test_list_is_bounded(context: ToolContext, tree: Path) -> None:
    listed = await call(FsListTool(), context, recursive=True, max_entries=3)
    assert len(listed["entries"]) == 3
    assert listed["truncated"] is True


async def test_list_failures(context: ToolContext, tree: Path) -> None:
    with pytest.raises(ToolError, match=r"'b\.txt' is a file, not a folder"):
        await call(FsListTool(), context, path="b.txt")
    with pytest.raises(ToolError, match="no folder 'nope'"):
        await call(FsListTool(), context, path="nope")


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        (FsReadTool(), {}),
        (FsWriteTool(), {"content": "x"}),
        (FsListTool(), {}),
    ],
    ids=["fs.read", "fs.write", "fs.list"],
)
@pytest.mark.parametrize("path", ["../x", "sub/../../x", "/etc/passwd", "out", "out/e.py"])
async def test_paths_outside_are_refused(
    tool: Tool[Any, Any], args: dict[str, Any], path: str, context: ToolContext, tree: Path
) -> None:
    with pytest.raises(PathOutsideWorkspace) as caught:
        await call(tool, context, path=path, **args)
    assert repr(path) in caught.value.message
    assert str(tree) in caught.value.message
    assert not (tree.parent / "x").exists()


def test_fs_arguments_are_validated() -> None:
    with pytest.raises(InvalidToolArgs) as caught:
        FsWriteTool().parse_args({"path": "a", "content": "b", "mode": "w"})
    assert caught.value.fields == ("mode",)
    with pytest.raises(InvalidToolArgs):
        FsListTool().parse_args({"max_entries": 0})
