"""The store is private to its owner (issue 16, finding 1): the database, its -wal and -shm
are 0600 from the start, the data dir 0700, and older open files are tightened on open."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from memory import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def generous_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most users have: new files readable by everyone
    yield
    os.umask(old)


def test_a_new_store_and_its_wal_are_readable_by_its_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store.open_path(data / "orrery.db") as store:
        store.enroll_device("laptop", salt="ab" * 16, key="cd" * 32)
        files = sorted(data.iterdir())
        assert {f.name for f in files} >= {"orrery.db", "orrery.db-wal", "orrery.db-shm"}
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(data) == 0o700


def test_an_existing_open_store_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "orrery.db"
    with Store.open_path(db) as store:
        store.enroll_device("laptop", salt="ab" * 16, key="cd" * 32)
        for path in (db, tmp_path / "orrery.db-wal", tmp_path / "orrery.db-shm"):
            path.chmod(0o644)  # as versions before issue 16 left them
    (tmp_path / "orrery.db-wal").touch()
    (tmp_path / "orrery.db-wal").chmod(0o644)
    with caplog.at_level(logging.WARNING, "orrery.memory"), Store.open_path(db) as store:
        assert [d.name for d in store.devices()] == ["laptop"]
        for path in (db, tmp_path / "orrery.db-wal"):
            assert mode(path) == 0o600, path
    assert "other local users could read it" in caplog.text
