"""Opening the store: files, migrations, SQLite settings, and the errors a bad file gives."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from memory import (
    Store,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreReadOnly,
    StoreVersionTooNew,
)
from memory.engine import create_store_engine
from memory.migrate import alembic_config, head_revision, known_revisions
from memory.schema import Base


def stamped_revisions(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


@pytest.fixture
def exclusive_lock(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection holding the write lock of `db_path` until the test ends."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield connection
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def test_open_creates_the_file_its_directory_and_the_schema(db_path: Path) -> None:
    assert not db_path.parent.exists()
    with Store.open_path(db_path) as store:
        assert store.location == str(db_path)
    assert db_path.is_file()
    assert {"constellations", "events", "alembic_version"} <= table_names(db_path)
    assert stamped_revisions(db_path) == [head_revision()]
    assert head_revision() in known_revisions()


def test_reopening_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    with Store.open_path(db_path) as store:
        store.save_constellation("c1", name="first", status="running", version=1, snapshot={})
    for _ in range(3):
        with Store.open_path(db_path) as store:
            row = store.constellation("c1")
            assert row is not None
            assert row.name == "first"
    assert stamped_revisions(db_path) == [head_revision()]


def test_open_accepts_a_url_and_a_string_path(db_path: Path, tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{db_path}") as store:
        store.save_constellation("c1", name="n", status="running", version=1, snapshot={})
    with Store.open_path(str(db_path)) as store:
        assert store.constellation("c1") is not None


def test_two_stores_opening_a_new_file_at_once_both_succeed(db_path: Path) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            barrier.wait()
            Store.open_path(db_path).close()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stamped_revisions(db_path) == [head_revision()]


def test_sqlite_connections_use_wal_foreign_keys_and_the_busy_timeout(db_path: Path) -> None:
    Store.open_path(db_path).close()
    with sqlite3.connect(db_path) as connection:  # WAL is a property of the file
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    engine = create_store_engine(f"sqlite:///{db_path}", busy_timeout_ms=1234)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    finally:
        engine.dispose()


def test_events_need_an_existing_constellation_row_at_the_database_level(db_path: Path) -> None:
    Store.open_path(db_path).close()
    engine = create_store_engine(f"sqlite:///{db_path}")
    try:
        with pytest.raises(Exception, match="FOREIGN KEY"), engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO events (constellation_id, seq, type, ts, payload) "
                "VALUES ('nope', 1, 't', 0, '{}')"
            )
    finally:
        engine.dispose()


def test_the_models_match_the_migrations(db_path: Path) -> None:
    Store.open_path(db_path).close()
    engine = create_store_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_migrations_downgrade_to_nothing_and_upgrade_again(db_path: Path) -> None:
    Store.open_path(db_path).close()
    config = alembic_config(f"sqlite:///{db_path}")
    command.downgrade(config, "base")
    assert table_names(db_path) == {"alembic_version"}
    assert stamped_revisions(db_path) == []
    command.upgrade(config, "head")
    assert stamped_revisions(db_path) == [head_revision()]


def test_an_in_memory_store_works() -> None:
    with Store.open("sqlite://") as store:
        store.save_constellation("c1", name="n", status="running", version=1, snapshot={"a": 1})
        row = store.constellation("c1")
        assert row is not None
        assert row.snapshot == {"a": 1}
        assert store.location == ":memory:"


def test_a_closed_store_refuses_work_and_close_is_idempotent(db_path: Path) -> None:
    store = Store.open_path(db_path)
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(StoreClosed, match=r"closed"):
        store.constellation("c1")
    with pytest.raises(StoreClosed):
        store.save_constellation("c1", name="n", status="s", version=1, snapshot={})
    with pytest.raises(StoreClosed):
        store.append_events([])


def test_the_context_manager_closes_the_store(db_path: Path) -> None:
    with Store.open_path(db_path) as store:
        assert not store.closed
    assert store.closed


def test_a_file_that_is_not_a_database_is_corrupt(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is a text file, not an SQLite database\n" * 200)
    with pytest.raises(StoreCorrupt) as caught:
        Store.open_path(db_path)
    assert caught.value.location == str(db_path)
    assert str(db_path) in str(caught.value)
    assert "move it aside" in str(caught.value)
    assert isinstance(caught.value, StoreError)


def test_a_damaged_database_is_corrupt(db_path: Path) -> None:
    with Store.open_path(db_path) as store:
        store.save_constellation("c1", name="n", status="running", version=1, snapshot={})
    with sqlite3.connect(db_path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db_path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page, just after the header
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt, match=r"malformed|not a database"):
        Store.open_path(db_path)


def test_a_path_that_cannot_be_opened_gives_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=str(tmp_path)) as caught:
        Store.open_path(tmp_path)  # a directory
    assert type(caught.value) is StoreError


def test_a_directory_that_cannot_be_created_gives_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(StoreError, match="cannot create the directory"):
        Store.open_path(tmp_path / "file" / "data" / "orrery.db")


def test_a_database_from_a_newer_version_is_refused(db_path: Path) -> None:
    Store.open_path(db_path).close()
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00d_from_the_future'")
    with pytest.raises(StoreVersionTooNew) as caught:
        Store.open_path(db_path)
    assert caught.value.revision == "f00d_from_the_future"
    assert caught.value.known_head == head_revision()
    assert str(db_path) in str(caught.value)
    assert "upgrade Orrery" in str(caught.value)
    assert stamped_revisions(db_path) == ["f00d_from_the_future"]  # left as it was


def test_opening_a_database_locked_by_another_process_gives_store_locked(
    db_path: Path, exclusive_lock: sqlite3.Connection
) -> None:
    with pytest.raises(StoreLocked) as caught:
        Store.open_path(db_path, busy_timeout_ms=100)
    assert caught.value.waited_ms == 100
    assert str(db_path) in str(caught.value)
    assert "--data-dir" in str(caught.value)


def test_writing_while_another_process_holds_the_lock_gives_store_locked(db_path: Path) -> None:
    with Store.open_path(db_path, busy_timeout_ms=100) as store:
        store.save_constellation("c1", name="n", status="running", version=1, snapshot={})
        other = sqlite3.connect(db_path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreLocked, match=str(db_path)):
                store.save_constellation("c1", name="n", status="failed", version=2, snapshot={})
            row = store.constellation("c1")  # WAL: reading does not wait for the writer
            assert row is not None
            assert row.status == "running"
            other.execute("ROLLBACK")
        finally:
            other.close()
        store.save_constellation("c1", name="n", status="failed", version=2, snapshot={})
        row = store.constellation("c1")
        assert row is not None
        assert row.status == "failed"


def test_writing_a_read_only_database_gives_store_read_only(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with Store.open_path(db_path) as store:
        store.save_constellation("c1", name="n", status="running", version=1, snapshot={})
    with Store.open(f"sqlite:///file:{db_path}?mode=ro&uri=true") as store:
        row = store.constellation("c1")  # reading still works
        assert row is not None
        with pytest.raises(StoreReadOnly) as caught:
            store.save_constellation("c1", name="n", status="failed", version=2, snapshot={})
    message = str(caught.value)
    assert "\n" not in message
    assert "read-only" in message
    assert "--data-dir" in message
    assert isinstance(caught.value, StoreError)
    assert list(elsewhere.iterdir()) == []  # the URI's path, not a folder named "file:"
