"""The device's durable outbox: results the orchestrator has not acknowledged yet.

    with Outbox.open(data_dir / "outbox.db") as outbox:
        outbox.put(("c1", "usage", 1), result.model_dump_json())  # durable once this returns
        for key, payload in outbox.pending():                      # oldest first
            send(payload)
        outbox.remove(("c1", "usage", 1))                          # on the orchestrator's ack

AIP delivers results at least once: a device puts each result here *before* sending it, sends
every pending entry again after reconnecting, and removes an entry only when the orchestrator
acknowledges it (the orchestrator stores results idempotently by task and attempt, so a copy
sent twice is harmless). An entry is keyed by (constellation_id, star_id, attempt); its payload
is opaque text (the JSON of the `TaskResult`).

The outbox is an SQLite file written with the standard `sqlite3` module: WAL mode,
`synchronous=FULL` (and `fullfsync` where the platform has it), so an entry `put` has returned
survives a crash of the process or of the machine. The calls are synchronous (a `put` waits for
the disk) and thread-safe; several processes may open the same file, and a writer waits up to
the busy timeout for another one's lock. Every failure to use the file is an `OutboxError`
whose message names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from protocol.private import private_file, tighten

log = logging.getLogger("orrery.devices.outbox")
T = TypeVar("T")

OutboxKey = tuple[str, str, int]
"""(constellation_id, star_id, attempt): which attempt of which task a result belongs to."""

DEFAULT_BUSY_TIMEOUT_MS = 5000
FORMAT_VERSION = 1  # PRAGMA user_version of the file
APPLICATION_ID = 0x4F52424F  # "ORBO": PRAGMA application_id marks the file as an Orrery outbox
_TABLE = "outbox"

# Primary SQLite result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_LOCKED_TEXT = ("database is locked", "database table is locked", "database schema is locked")
_CORRUPT_TEXT = ("file is not a database", "database disk image is malformed")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    seq INTEGER PRIMARY KEY,
    constellation_id TEXT NOT NULL,
    star_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (constellation_id, star_id, attempt)
)
"""


class OutboxError(Exception):
    """The outbox file could not be used; `message` says why and what to do."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class OutboxLocked(OutboxError):
    """Another process held the outbox's lock for longer than the busy timeout."""

    def __init__(self, path: Path, *, waited_ms: int) -> None:
        super().__init__(
            f"outbox {path} is locked by another process (waited {waited_ms} ms); another "
            "device agent using the same data directory is probably running: stop it, or "
            "give this one its own --data-dir (or ORRERY_HOME)",
            path=path,
        )
        self.waited_ms = waited_ms


class OutboxCorrupt(OutboxError):
    """The file is not an SQLite database, is damaged, or is some other program's database."""

    def __init__(self, path: Path, *, detail: str) -> None:
        super().__init__(
            f"{path} is not a usable Orrery outbox ({detail}); stop the device agent, move the "
            f"file aside (with any {path.name}-wal and {path.name}-shm files next to it, e.g. "
            "rename them to *.broken) and start it again: a new empty outbox will be created "
            "(results in the old one that the orchestrator had not acknowledged will not be "
            "sent again)",
            path=path,
        )
        self.detail = detail


class Outbox:
    """Unacknowledged results of one device, durable across restarts; see the module doc."""

    def __init__(self, connection: sqlite3.Connection, path: Path, busy_timeout_ms: int) -> None:
        """Wrap an open, checked connection; use `Outbox.open` instead."""
        self._connection = connection
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._closed = False

    # -- opening and closing --------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Self:
        """Open the outbox in the file `path`, creating it (and its directory) if need be.

        Raises `OutboxLocked` if another process keeps the file locked for longer than
        `busy_timeout_ms`, `OutboxCorrupt` if it is not an intact outbox, and `OutboxError`
        for any other reason it cannot be used (a directory, no permission, a newer format).
        """
        if busy_timeout_ms < 0:
            raise ValueError(f"busy_timeout_ms must be >= 0, not {busy_timeout_ms}")
        file = Path(path).expanduser().absolute()
        try:
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise OutboxError(
                f"cannot create the directory of outbox {file}: {error}; choose a data "
                "directory you can write to (--data-dir or ORRERY_HOME)",
                path=file,
            ) from error
        if not file.is_dir():  # a folder there is refused below, by SQLite
            _make_private(file)
        with _translated(file, busy_timeout_ms):
            connection = sqlite3.connect(
                file,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,  # shared by threads under `self._lock`
            )
        try:
            with _translated(file, busy_timeout_ms):
                _prepare(connection, file, busy_timeout_ms)
        except BaseException:
            connection.close()
            raise
        return cls(connection, file, busy_timeout_ms)

    @property
    def path(self) -> Path:
        """The outbox file (0600, as its -wal and -shm: results may hold secrets)."""
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the file; the outbox cannot be used afterwards. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- entries --------------------------------------------------------------------------------

    def put(self, key: OutboxKey, payload: str) -> None:
        """Keep `payload` for `key` until it is removed; durable on disk when this returns.

        Putting a key that is already pending replaces its payload and keeps its place in
        the order of `pending`.
        """
        constellation_id, star_id, attempt = _check_key(key)
        if not isinstance(payload, str):
            raise TypeError(f"an outbox payload must be a str (JSON text), not {type(payload)}")
        with self._use() as connection:
            connection.execute(
                f"INSERT INTO {_TABLE} (constellation_id, star_id, attempt, payload) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (constellation_id, star_id, attempt) "
                "DO UPDATE SET payload = excluded.payload",
                (constellation_id, star_id, attempt, payload),
            )

    def pending(self) -> list[tuple[OutboxKey, str]]:
        """Every entry, as (key, payload), in the order the keys were first put."""
        with self._use() as connection:
            rows = connection.execute(
                f"SELECT constellation_id, star_id, attempt, payload FROM {_TABLE} ORDER BY seq"
            ).fetchall()
        return [((str(c), str(s), int(a)), str(payload)) for c, s, a, payload in rows]

    def remove(self, key: OutboxKey) -> bool:
        """Forget the entry of `key` (its result was acknowledged); whether there was one."""
        constellation_id, star_id, attempt = _check_key(key)
        with self._use() as connection:
            cursor = connection.execute(
                f"DELETE FROM {_TABLE} WHERE constellation_id = ? AND star_id = ? AND attempt = ?",
                (constellation_id, star_id, attempt),
            )
        return cursor.rowcount > 0

    def __len__(self) -> int:
        with self._use() as connection:
            (count,) = connection.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()
        return int(count)

    def __repr__(self) -> str:
        return f"Outbox({str(self._path)!r}{', closed' if self._closed else ''})"

    # -- internals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise OutboxError(
                    f"outbox {self._path} is closed; open it again with Outbox.open()",
                    path=self._path,
                )
            with _translated(self._path, self._busy_timeout_ms):
                yield self._connection


def _prepare(connection: sqlite3.Connection, path: Path, busy_timeout_ms: int) -> None:
    """Configure a new connection, check the file, and create the table in a new file."""
    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode = _retry_busy(
        lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone()[0], busy_timeout_ms
    )
    if str(mode).lower() != "wal":
        log.warning(
            "outbox %s: SQLite refused WAL mode (journal_mode is %r); it stays durable, but "
            "readers will wait for writers",
            path,
            mode,
        )
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA fullfsync = ON")  # macOS: flush the drive's cache too
    problems = [str(row[0]) for row in connection.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise OutboxCorrupt(path, detail="; ".join(problems[:3]))
    if _is_current(connection, path):  # the usual case: no need to wait for writers
        return
    connection.execute("BEGIN IMMEDIATE")  # one process at a time creates the table
    try:
        if not _is_current(connection, path):
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _is_current(connection: sqlite3.Connection, path: Path) -> bool:
    """Whether the file is an outbox of the current format (False: a new, empty file)."""
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    (application,) = connection.execute("PRAGMA application_id").fetchone()
    tables = {
        str(row[0])
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if application not in (0, APPLICATION_ID) or (application == 0 and tables):
        raise OutboxCorrupt(path, detail="it is an SQLite database of some other program")
    if version > FORMAT_VERSION:
        raise OutboxError(
            f"outbox {path} has format version {version}, which this version of Orrery does "
            f"not know (it writes version {FORMAT_VERSION}); it was written by a newer Orrery: "
            "upgrade Orrery, or give this device its own --data-dir (or ORRERY_HOME)",
            path=path,
        )
    if version == FORMAT_VERSION:
        if _TABLE not in tables:
            raise OutboxCorrupt(path, detail=f"its {_TABLE!r} table is missing")
        return True
    return False


def _check_key(key: OutboxKey) -> OutboxKey:
    if not isinstance(key, tuple) or len(key) != 3:
        raise TypeError(f"an outbox key is (constellation_id, star_id, attempt), not {key!r}")
    constellation_id, star_id, attempt = key
    if not isinstance(constellation_id, str) or not isinstance(star_id, str):
        raise TypeError(f"constellation_id and star_id of an outbox key must be str: {key!r}")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"the attempt of an outbox key must be an integer >= 1: {key!r}")
    return constellation_id, star_id, attempt


def _retry_busy(action: Callable[[], T], busy_timeout_ms: int) -> T:
    """Run `action`, retrying while SQLite reports BUSY, for up to the busy timeout.

    The busy handler does not cover every case: opening a file while the last other
    connection closes (and removes the WAL), or while one recovers the WAL of a crashed
    process, gets SQLITE_BUSY at once (https://sqlite.org/wal.html#busy).
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if _kind(error) != "locked" or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _kind(error: sqlite3.Error) -> str:
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(error).lower()
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or any(t in text for t in _LOCKED_TEXT):
        return "locked"
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or any(t in text for t in _CORRUPT_TEXT):
        return "corrupt"
    return "other"


@contextlib.contextmanager
def _translated(path: Path, busy_timeout_ms: int) -> Iterator[None]:
    """Turn `sqlite3` errors raised inside the block into `OutboxError` and its subclasses."""
    try:
        yield
    except sqlite3.Error as error:
        kind = _kind(error)
        if kind == "locked":
            raise OutboxLocked(path, waited_ms=busy_timeout_ms) from error
        if kind == "corrupt":
            raise OutboxCorrupt(path, detail=str(error)) from error
        raise OutboxError(
            f"outbox {path}: {error}; check that it is a file (not a directory) and that "
            "you may read and write it and its directory",
            path=path,
        ) from error


def _make_private(file: Path) -> None:
    """Create the outbox file 0600 before SQLite does (SQLite gives its -wal and -shm the
    file's mode); tighten an existing one and its companions, with a warning."""
    try:
        private_file(file)
    except OSError as error:
        raise OutboxError(
            f"cannot create the outbox {file} (private to you, mode 0600): {error}; "
            "choose a data directory you own (--data-dir or ORRERY_HOME)",
            path=file,
        ) from error
    for end in ("-wal", "-shm", "-journal"):
        tighten(file.with_name(file.name + end))
