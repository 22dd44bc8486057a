"""Workspace confinement: devices.tools.paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices.tools import PathOutsideWorkspace, ToolError
from devices.tools.paths import confine, relative


def test_relative_paths_resolve_inside(workspace: Path) -> None:
    root = workspace.resolve()
    assert confine(workspace, "a/b.txt") == root / "a" / "b.txt"
    assert confine(workspace, "a/../b.txt") == root / "b.txt"
    assert confine(workspace, ".") == root
    assert relative(workspace, root) == "."
    assert relative(workspace, root / "a" / "b.txt") == "a/b.txt"


@pytest.mark.parametrize("path", ["../x", "a/../../x", "..", "/etc/passwd", "/"])
def test_escapes_are_refused(workspace: Path, path: str) -> None:
    with pytest.raises(PathOutsideWorkspace) as caught:
        confine(workspace, path)
    assert repr(path) in caught.value.message
    assert str(workspace.resolve()) in caught.value.message
    assert caught.value.path == path


def test_absolute_path_inside_workspace_is_still_refused(workspace: Path) -> None:
    with pytest.raises(PathOutsideWorkspace, match="absolute"):
        confine(workspace, str(workspace / "x"))


def test_symlink_leading_outside_is_refused(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no")
    (workspace / "file-link").symlink_to(outside / "secret")
    (workspace / "dir-link").symlink_to(outside)
    (workspace / "dangling").symlink_to(outside / "not-yet")
    for path in ["file-link", "dir-link", "dir-link/secret", "dangling"]:
        with pytest.raises(PathOutsideWorkspace, match="symbolic link"):
            confine(workspace, path)


def test_symlink_inside_is_followed(workspace: Path) -> None:
    (workspace / "real").mkdir()
    (workspace / "alias").symlink_to(workspace / "real")
    assert confine(workspace, "alias/x") == workspace.resolve() / "real" / "x"


def test_missing_workspace_and_bad_paths_are_tool_errors(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="does not exist"):
        confine(tmp_path / "nowhere", "x")
    with pytest.raises(ToolError, match="cannot resolve"):
        confine(tmp_path, "a\0b")
