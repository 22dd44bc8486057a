"""The durable store of the orchestrator's state: constellations and their event log.

    with Store.open_path(data_dir / "orrery.db") as store:
        store.save_constellation("c1", name="disk-report", status="running", version=1,
                                 snapshot=constellation_as_dict)
        store.append_events([EventRecordIn("c1", 1, "constellation.submitted", ts, {...})])
        store.events("c1", after_seq=0)

The store holds plain data only: strings, numbers and JSON-serialisable dicts. It is synchronous;
one `Store` may be shared by threads (every call takes its own pooled connection), and several
processes may open the same SQLite file (WAL: readers never wait; writers wait for each other up
to the busy timeout, then get `StoreLocked`). Every failure is a `memory.errors.StoreError`.

Events and their constellation: `append_events` does not require `save_constellation` first. The
event log is what a crashed orchestrator recovers from, so an event is never refused for want of
a snapshot; a constellation it names that has no row yet gets a placeholder row (status
`"unknown"`, version 0, empty name and snapshot), which the next `save_constellation` overwrites.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import URL, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from memory.engine import (
    DEFAULT_BUSY_TIMEOUT_MS,
    WRITE,
    create_store_engine,
    describe,
    is_memory_sqlite,
    translated_errors,
)
from memory.errors import StoreClosed, StoreCorrupt, StoreError, StoreInvalidData
from memory.migrate import upgrade
from memory.schema import ConstellationRecord, EventRecord

PLACEHOLDER_STATUS = "unknown"
"""Status of a constellation row created by `append_events` before any `save_constellation`."""

Clock = Callable[[], float]
_SUPPORTED_DIALECTS = ("sqlite", "postgresql")


@dataclass(frozen=True, slots=True)
class EventRecordIn:
    """One event to append. `seq` is the orchestrator's sequence number, starting at 1."""

    constellation_id: str
    seq: int
    type: str
    ts: float  # unix time, seconds
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored event, as `Store.events` returns it."""

    constellation_id: str
    seq: int
    type: str
    ts: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConstellationRow:
    """The stored state of one constellation; times are unix seconds."""

    id: str
    name: str
    status: str
    version: int
    created_at: float
    updated_at: float
    finished_at: float | None
    snapshot: dict[str, Any]
    reason: str | None


_C = ConstellationRecord
_E = EventRecord
_CONSTELLATION_COLUMNS = (
    _C.id,
    _C.name,
    _C.status,
    _C.version,
    _C.created_at,
    _C.updated_at,
    _C.finished_at,
    _C.snapshot,
    _C.reason,
)
_EVENT_COLUMNS = (_E.constellation_id, _E.seq, _E.type, _E.ts, _E.payload)


class Store:
    """The orchestrator's durable state; open with `Store.open(url)` or `Store.open_path(path)`."""

    def __init__(
        self, engine: Engine, *, location: str, busy_timeout_ms: int, clock: Clock
    ) -> None:
        """Wrap an engine whose database is already migrated; use `open`/`open_path` instead."""
        self._engine = engine
        self._writer = engine.execution_options(**WRITE)
        self._location = location
        self._busy_timeout_ms = busy_timeout_ms
        self._clock = clock
        self._closed = False
        # An in-memory SQLite database is one shared connection: take turns on it.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if is_memory_sqlite(engine.url) else contextlib.nullcontext()
        )

    # -- opening and closing ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | URL,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        clock: Clock = time.time,
    ) -> Self:
        """Open (creating or migrating as needed) the store at an SQLAlchemy URL.

        SQLite (`sqlite:///path/to/file.db`, parent directory created; `sqlite://` for a
        throw-away in-memory store) and PostgreSQL are supported. `busy_timeout_ms` is how long
        an SQLite write waits for another process's lock before `StoreLocked`.
        """
        engine = create_store_engine(url, busy_timeout_ms=busy_timeout_ms)
        location = describe(engine.url)
        try:
            with translated_errors(location, busy_timeout_ms=busy_timeout_ms):
                if engine.dialect.name not in _SUPPORTED_DIALECTS:
                    raise StoreError(
                        f"database {location}: the {engine.dialect.name} dialect is not "
                        f"supported; use one of {', '.join(_SUPPORTED_DIALECTS)}",
                        location=location,
                    )
                with engine.connect() as connection, connection.execution_options(**WRITE).begin():
                    upgrade(connection, location)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, location=location, busy_timeout_ms=busy_timeout_ms, clock=clock)

    @classmethod
    def open_path(
        cls,
        path: Path | str,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        clock: Clock = time.time,
    ) -> Self:
        """Open the SQLite store in the file `path` (created, with its parent directory)."""
        url = URL.create("sqlite", database=str(Path(path).expanduser().absolute()))
        return cls.open(url, busy_timeout_ms=busy_timeout_ms, clock=clock)

    @property
    def location(self) -> str:
        """The database file, or the URL without its password."""
        return self._location

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release every connection; the store cannot be used afterwards. Idempotent."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- constellations -------------------------------------------------------------------------

    def save_constellation(
        self,
        id: str,
        *,
        name: str,
        status: str,
        version: int,
        snapshot: Mapping[str, Any],
        reason: str | None = None,
        finished: bool = False,
    ) -> None:
        """Insert or replace the state of a constellation.

        `created_at` is set when the row is first written and kept afterwards; `updated_at` is
        set on every save. With `finished=True`, `finished_at` is set unless it already is (the
        first finish time is kept); with `finished=False` it is cleared.
        """
        document = _dump(snapshot, f"snapshot of constellation {id!r}")
        now = self._clock()
        with self._write() as connection:
            insert = self._insert(ConstellationRecord).values(
                id=id,
                name=name,
                status=status,
                version=version,
                created_at=now,
                updated_at=now,
                finished_at=now if finished else None,
                snapshot=document,
                reason=reason,
            )
            excluded = insert.excluded
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[_C.id],
                    set_={
                        "name": excluded.name,
                        "status": excluded.status,
                        "version": excluded.version,
                        "updated_at": excluded.updated_at,
                        "finished_at": (
                            func.coalesce(_C.finished_at, excluded.finished_at)
                            if finished
                            else None
                        ),
                        "snapshot": excluded.snapshot,
                        "reason": excluded.reason,
                    },
                )
            )

    def constellation(self, id: str) -> ConstellationRow | None:
        """The stored state of one constellation, or None if there is none."""
        with self._read() as connection:
            row = connection.execute(
                select(*_CONSTELLATION_COLUMNS).where(_C.id == id)
            ).one_or_none()
        return None if row is None else self._constellation_row(*row)

    def constellations(self, limit: int = 50, status: str | None = None) -> list[ConstellationRow]:
        """Up to `limit` constellations, newest (by creation) first, optionally of one status."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        query = select(*_CONSTELLATION_COLUMNS)
        if status is not None:
            query = query.where(_C.status == status)
        query = query.order_by(_C.created_at.desc(), _C.id.desc()).limit(limit)
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [self._constellation_row(*row) for row in rows]

    # -- events ---------------------------------------------------------------------------------

    def append_events(self, events: Sequence[EventRecordIn]) -> None:
        """Store events in one transaction; an event whose (constellation_id, seq) is already
        stored is skipped, so re-recording after a crash or a resend is harmless.

        A constellation that has no row yet gets a placeholder (see the module docstring).
        """
        self._check_open()
        if not events:
            return
        rows = [_event_values(event) for event in events]
        now = self._clock()
        placeholders = [
            {
                "id": constellation_id,
                "name": "",
                "status": PLACEHOLDER_STATUS,
                "version": 0,
                "created_at": now,
                "updated_at": now,
                "finished_at": None,
                "snapshot": "{}",
                "reason": None,
            }
            for constellation_id in dict.fromkeys(event.constellation_id for event in events)
        ]
        with self._write() as connection:
            connection.execute(
                self._insert(ConstellationRecord).on_conflict_do_nothing(index_elements=[_C.id]),
                placeholders,
            )
            connection.execute(
                self._insert(EventRecord).on_conflict_do_nothing(
                    index_elements=[_E.constellation_id, _E.seq]
                ),
                rows,
            )

    def events(self, constellation_id: str, after_seq: int = 0) -> list[EventRow]:
        """The events of one constellation whose seq is greater than `after_seq`, by seq."""
        query = (
            select(*_EVENT_COLUMNS)
            .where(_E.constellation_id == constellation_id, _E.seq > after_seq)
            .order_by(_E.seq)
        )
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [
            EventRow(
                constellation_id=cid,
                seq=seq,
                type=type_,
                ts=ts,
                payload=self._load(payload, f"event {seq} of constellation {cid!r}"),
            )
            for cid, seq, type_, ts, payload in rows
        ]

    def last_seq(self, constellation_id: str | None = None) -> int:
        """The highest stored seq, of one constellation or of all; 0 when there is none.

        An orchestrator that restarts continues numbering after this, so that its new events
        are not mistaken for duplicates of old ones.
        """
        query = select(func.max(_E.seq))
        if constellation_id is not None:
            query = query.where(_E.constellation_id == constellation_id)
        with self._read() as connection:
            value = connection.execute(query).scalar_one()
        return 0 if value is None else int(value)

    # -- internals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        self._check_open()
        with (
            self._lock,
            translated_errors(self._location, busy_timeout_ms=self._busy_timeout_ms),
            self._engine.connect() as connection,
        ):
            yield connection

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A connection in a write transaction (BEGIN IMMEDIATE on SQLite), committed on exit."""
        self._check_open()
        with (
            self._lock,
            translated_errors(self._location, busy_timeout_ms=self._busy_timeout_ms),
            self._writer.begin() as connection,
        ):
            yield connection

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self._location)

    def _insert(self, model: type[Any]) -> sqlite.Insert | postgresql.Insert:
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)

    def _constellation_row(
        self,
        id: str,
        name: str,
        status: str,
        version: int,
        created_at: float,
        updated_at: float,
        finished_at: float | None,
        snapshot: str,
        reason: str | None,
    ) -> ConstellationRow:
        return ConstellationRow(
            id=id,
            name=name,
            status=status,
            version=version,
            created_at=created_at,
            updated_at=updated_at,
            finished_at=finished_at,
            snapshot=self._load(snapshot, f"snapshot of constellation {id!r}"),
            reason=reason,
        )

    def _load(self, text: str, what: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError as error:
            raise StoreCorrupt(self._location, detail=f"{what} is not JSON: {error}") from error
        if not isinstance(value, dict):
            raise StoreCorrupt(self._location, detail=f"{what} is not a JSON object")
        return value


def _dump(value: Mapping[str, Any], what: str) -> str:
    """`value` as compact JSON text; StoreInvalidData if it is not a JSON object's worth."""
    if not isinstance(value, Mapping):
        raise StoreInvalidData(f"{what} must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(dict(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise StoreInvalidData(
            f"{what} is not JSON-serialisable ({error}); store plain data only: "
            "str, int, float, bool, None, lists and dicts with string keys"
        ) from error


def _event_values(event: EventRecordIn) -> dict[str, Any]:
    what = f"event {event.seq} of constellation {event.constellation_id!r}"
    if isinstance(event.seq, bool) or not isinstance(event.seq, int) or event.seq < 1:
        raise StoreInvalidData(f"{what}: seq must be an integer >= 1")
    if not math.isfinite(event.ts):
        raise StoreInvalidData(f"{what}: ts must be a finite unix time, not {event.ts}")
    return {
        "constellation_id": event.constellation_id,
        "seq": event.seq,
        "type": event.type,
        "ts": event.ts,
        "payload": _dump(event.payload, what),
    }
