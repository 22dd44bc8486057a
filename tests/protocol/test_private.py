"""Private folders and files (issue 16, finding 1): made 0700/0600 from the start, and
tightened with a warning when found wider."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from protocol.private import (
    open_private,
    others_may_read,
    private_dir,
    private_file,
    tighten,
    write_private,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def generous_umask() -> object:
    """A umask that would leave new files world-readable: the modes must not rely on it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_folder_and_its_missing_parents_are_0700(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "a" / "b" / "data")
    assert folder.is_dir()
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == mode(folder) == 0o700


def test_an_open_folder_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with caplog.at_level(logging.WARNING, "orrery.private"):
        private_dir(folder)
    assert mode(folder) == 0o700
    assert str(folder) in caplog.text
    assert "755" in caplog.text


def test_a_new_file_is_0600_and_an_open_one_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = private_file(tmp_path / "new")
    assert mode(made) == 0o600
    old = tmp_path / "old"
    old.write_text("secret")
    old.chmod(0o644)
    with caplog.at_level(logging.WARNING, "orrery.private"):
        private_file(old)
    assert mode(old) == 0o600
    assert old.read_text() == "secret"  # tightened, not truncated
    assert "644" in caplog.text


def test_written_files_are_0600_and_appends_keep_the_content(tmp_path: Path) -> None:
    log_file = tmp_path / "device.log"
    with open_private(log_file, "ab") as out:
        out.write(b"one\n")
    with open_private(log_file, "ab") as out:
        out.write(b"two\n")
    assert log_file.read_bytes() == b"one\ntwo\n"
    assert mode(log_file) == 0o600
    write_private(tmp_path / "name", b"x")
    assert mode(tmp_path / "name") == 0o600
    assert not others_may_read(log_file)


def test_a_link_planted_where_a_private_file_goes_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    target.chmod(0o644)
    (tmp_path / "device.log").symlink_to(target)
    with pytest.raises(OSError, match="symbolic links"):
        open_private(tmp_path / "device.log", "ab")
    assert target.read_text() == "keep"
    assert mode(target) == 0o644  # not followed to be tightened either


def test_tighten_leaves_private_files_alone(tmp_path: Path) -> None:
    path = private_file(tmp_path / "f")
    assert tighten(path) is False
    assert tighten(tmp_path / "missing") is False
