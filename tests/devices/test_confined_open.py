"""Opening a located path without following links (devices.tools.paths.Confined), both
with openat2 and with the per-component walk: what was checked is what is opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devices.tools import PathOutsideWorkspace, ToolError, paths
from devices.tools.paths import held_path, locate


@pytest.fixture(params=["openat2", "walk"])
def opening(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2":
        if not paths.openat2_available:
            pytest.skip("this kernel has no openat2 (Linux 5.6+)")
    else:
        monkeypatch.setattr(paths, "openat2_available", False)
    return str(request.param)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_text("no")
    return folder


def read(fd: int) -> bytes:
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_locate_names_the_root_and_the_parts(workspace: Path, tmp_path: Path) -> None:
    (workspace / "real").mkdir()
    (workspace / "alias").symlink_to(workspace / "real")
    found = locate(workspace, "alias/x.txt")
    assert (found.base, found.parts) == (workspace.resolve(), ("real", "x.txt"))
    assert found.path == workspace.resolve() / "real" / "x.txt"
    assert locate(workspace, ".").parts == ()
    extra = tmp_path / "extra"
    extra.mkdir()
    assert locate(workspace, str(extra / "f"), roots=[extra]).base == extra.resolve()


def test_what_was_located_is_what_is_opened(opening: str, workspace: Path) -> None:
    (workspace / "d").mkdir()
    (workspace / "d" / "f").write_text("mine")
    assert read(locate(workspace, "d/f").open(os.O_RDONLY)) == b"mine"
    assert read(locate(workspace, "d/../d/f").open(os.O_RDONLY)) == b"mine"


def test_a_folder_swapped_for_a_link_after_locating_is_refused(
    opening: str, workspace: Path, outside: Path
) -> None:
    (workspace / "d").mkdir()
    (workspace / "d" / "secret").write_text("mine")
    found = locate(workspace, "d/secret")
    (workspace / "d").rename(workspace / "d.old")
    (workspace / "d").symlink_to(outside)  # the race, won by the attacker
    for call in (
        lambda: found.open(os.O_RDONLY),
        lambda: found.open(os.O_WRONLY | os.O_CREAT, make_dirs=True),
        lambda: found.open_parent(make_dirs=False),
        lambda: found.open_parent(make_dirs=True),
    ):
        with pytest.raises(PathOutsideWorkspace, match="changed while it was in use"):
            call()
    assert (outside / "secret").read_text() == "no"


def test_a_file_swapped_for_a_link_after_locating_is_refused(
    opening: str, workspace: Path, outside: Path
) -> None:
    (workspace / "f").write_text("mine")
    found = locate(workspace, "f")
    (workspace / "f").unlink()
    (workspace / "f").symlink_to(outside / "secret")
    with pytest.raises(PathOutsideWorkspace):
        found.open(os.O_WRONLY | os.O_TRUNC)
    assert (outside / "secret").read_text() == "no"


def test_missing_folders_are_made_only_when_asked(opening: str, workspace: Path) -> None:
    found = locate(workspace, "a/b/c.txt")
    with pytest.raises(FileNotFoundError):
        found.open(os.O_WRONLY | os.O_CREAT)
    fd = found.open(os.O_WRONLY | os.O_CREAT, make_dirs=True)
    os.write(fd, b"made")
    os.close(fd)
    assert (workspace / "a" / "b" / "c.txt").read_text() == "made"


def test_the_workspace_itself_has_no_parent_to_write_in(workspace: Path) -> None:
    with pytest.raises(ToolError, match="workspace folder itself"):
        locate(workspace, ".").open_parent(make_dirs=False)


def test_a_held_path_reaches_the_opened_folder_whatever_its_name_becomes(
    workspace: Path, outside: Path
) -> None:
    (workspace / "d").mkdir()
    (workspace / "d" / "f").write_text("mine")
    fd = locate(workspace, "d").open_dir()
    try:
        held = held_path(fd, workspace / "d")
        (workspace / "d").rename(workspace / "moved")
        (workspace / "d").symlink_to(outside)
        assert (held / "f").read_text() == "mine"
    finally:
        os.close(fd)
