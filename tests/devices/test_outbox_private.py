"""The device's outbox is private (issue 16, finding 1): results may hold secrets, so
outbox.db and its -wal and -shm are 0600 from the start; older open ones are tightened."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.outbox import Outbox


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def generous_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_outbox_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "device" / "outbox.db") as outbox:
        outbox.put(("c1", "s1", 1), '{"output": "the control token was orc1_..."}')
        files = list((tmp_path / "device").iterdir())
        assert {f.name for f in files} >= {"outbox.db", "outbox.db-wal", "outbox.db-shm"}
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(tmp_path / "device") == 0o700


def test_an_open_outbox_is_tightened_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    with Outbox.open(path) as outbox:
        outbox.put(("c1", "s1", 1), "{}")
        path.chmod(0o644)
        (tmp_path / "outbox.db-wal").chmod(0o644)
    with caplog.at_level(logging.WARNING), Outbox.open(path) as outbox:
        assert len(outbox) == 1
        assert mode(path) == 0o600
        assert mode(tmp_path / "outbox.db-wal") == 0o600
    assert "outbox.db" in caplog.text
