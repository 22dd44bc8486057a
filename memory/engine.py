"""Engines for the store, and the translation of driver errors into the store's own errors.

On SQLite every new connection gets `busy_timeout`, `journal_mode=WAL` and `foreign_keys=ON`.
SQLAlchemy, not the `sqlite3` module, emits `BEGIN`, so a transaction covers reads as well as
writes, DDL is transactional, and a writer can ask for `BEGIN IMMEDIATE` (take the write lock
up front, waiting up to the busy timeout) by setting the execution option `WRITE` on the engine
or connection. That avoids the deadlock-like "database is locked" that a deferred transaction
gets when it upgrades from reading to writing while another connection writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from memory.errors import StoreCorrupt, StoreError, StoreLocked, StoreReadOnly

log = logging.getLogger("orrery.memory")
T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS = 5000

# Execution options understood by the "begin" hook: `engine.execution_options(**WRITE)`.
_BEGIN_OPTION = "orrery_sqlite_begin"
WRITE: dict[str, Any] = {_BEGIN_OPTION: "IMMEDIATE"}

# Primary SQLite result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SQLITE_CANTOPEN = 14
_LOCKED_TEXT = ("database is locked", "database table is locked", "database schema is locked")
_CORRUPT_TEXT = ("file is not a database", "database disk image is malformed")
_READONLY_TEXT = ("readonly database", "read-only database")


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def is_memory_sqlite(url: URL) -> bool:
    return is_sqlite(url) and (
        url.database in (None, "", ":memory:") or (url.query.get("mode") == "memory")
    )


def describe(url: URL) -> str:
    """How errors name the database: the file of an SQLite URL, else the URL sans password."""
    if is_sqlite(url):
        return ":memory:" if is_memory_sqlite(url) else str(url.database)
    return url.render_as_string(hide_password=True)


def create_store_engine(
    url: str | URL, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
) -> Engine:
    """An engine for the store; SQLite files get their parent directory created, and are
    private to their owner (`make_private`)."""
    if busy_timeout_ms < 0:
        raise ValueError(f"busy_timeout_ms must be >= 0, not {busy_timeout_ms}")
    sa_url = make_url(url)
    if not is_sqlite(sa_url):
        return create_engine(sa_url, pool_pre_ping=True)
    if is_memory_sqlite(sa_url):
        # One shared connection, so every user of the engine sees the same database.
        engine = create_engine(
            sa_url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        database = str(sa_url.database)
        if sa_url.query.get("uri") == "true":  # an SQLite URI: the path follows `file:`
            database = database.removeprefix("file:")
        path = Path(database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise StoreError(
                f"cannot create the directory of database {path}: {error}; "
                "choose a data directory you can write to (--data-dir or ORRERY_HOME)",
                location=str(path),
            ) from error
        try:
            make_private(path)
        except OSError as error:
            raise StoreError(
                f"cannot create database {path} (private to you, mode 0600): {error}; "
                "choose a data directory you own (--data-dir or ORRERY_HOME)",
                location=str(path),
            ) from error
        engine = create_engine(sa_url, connect_args={"timeout": busy_timeout_ms / 1000})
    _install_sqlite_hooks(engine, busy_timeout_ms)
    return engine


SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database; it gives new ones the database's mode."""


def make_private(path: Path) -> None:
    """Create the SQLite file `path` empty and 0600 before SQLite opens it (so its -wal and
    -shm are 0600 too), or take group and other permissions away from it and from its
    companions (with a warning): the store holds device keys and task outputs."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(descriptor)
    for file in (path, *(path.with_name(path.name + end) for end in SQLITE_COMPANIONS)):
        try:
            info = file.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISREG(info.st_mode) and mode & 0o077:
            file.chmod(mode & 0o700)
            log.warning("%s was mode %o (other local users could read it); now %o", file,
                        mode, mode & 0o700)  # fmt: skip


def _install_sqlite_hooks(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN itself (see `_on_begin`) instead of the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = _retry_busy(
                lambda: cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0],
                busy_timeout_ms,
            )
            if mode != "wal" and not is_memory_sqlite(engine.url):
                log.warning(
                    "%s: SQLite refused WAL mode (journal_mode is %r); "
                    "concurrent readers will wait for writers",
                    describe(engine.url),
                    mode,
                )
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _retry_busy(action: Callable[[], T], busy_timeout_ms: int) -> T:
    """Run `action`, retrying while SQLite reports BUSY, for up to the busy timeout.

    The busy handler does not cover every case: a connection that opens the file while the
    last other connection is closing (and cleaning up the WAL), or while one recovers the WAL
    of a crashed process, gets SQLITE_BUSY at once (https://sqlite.org/wal.html#busy).
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return any(text in str(error).lower() for text in _LOCKED_TEXT)


@contextlib.contextmanager
def translated_errors(location: str, *, busy_timeout_ms: int) -> Iterator[None]:
    """Turn driver errors raised inside the block into `StoreError` and its subclasses."""
    try:
        yield
    except StoreError:
        raise
    except DBAPIError as error:
        raise translate(error.orig, location, busy_timeout_ms=busy_timeout_ms) from error
    except sqlite3.Error as error:
        raise translate(error, location, busy_timeout_ms=busy_timeout_ms) from error
    except SQLAlchemyError as error:
        raise StoreError(f"database {location}: {error}", location=location) from error


def translate(error: BaseException | None, location: str, *, busy_timeout_ms: int) -> StoreError:
    """The store error for one driver error."""
    text = str(error)
    lowered = text.lower()
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or any(t in lowered for t in _LOCKED_TEXT):
        return StoreLocked(location, waited_ms=busy_timeout_ms)
    if primary == _SQLITE_READONLY or any(t in lowered for t in _READONLY_TEXT):
        return StoreReadOnly(location, detail=text)
    if primary == _SQLITE_CANTOPEN or "unable to open database file" in lowered:
        folder = Path(location).parent
        if folder.is_dir() and not os.access(folder, os.W_OK):  # SQLite's -wal and -shm
            return StoreReadOnly(location, detail=f"{text}: {folder} cannot be written")
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or any(t in lowered for t in _CORRUPT_TEXT):
        return StoreCorrupt(location, detail=text)
    return StoreError(f"database {location}: {text}", location=location)
