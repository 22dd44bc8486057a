"""The durable store of the orchestrator's state: constellations, their event log, enrolled
devices and the result ledger.

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

Devices: `enroll_device` stores the salt and the key derived from a device's enrolment token
(hex strings; never the token), `device_key` gives them back to check a handshake's proof, and
`update_device` records what the device last reported (state, last_seen, labels).

Results: `record_result` is the ledger of `task.result`s, keyed by (constellation_id, star_id,
attempt). Devices deliver results at least once; the ledger stores each (task, attempt) exactly
once (the first copy wins) and tells the caller whether the copy in hand was new, so the
orchestrator acts on a result once and acknowledges every copy. A result does not need a
constellation row (there is no foreign key), and it is committed before `record_result` returns.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import URL, Engine, delete, func, select, update
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
from memory.schema import ConstellationRecord, DeviceRecord, EventRecord, ResultRecord

PLACEHOLDER_STATUS = "unknown"
"""Status of a constellation row created by `append_events` before any `save_constellation`."""

DEVICE_OFFLINE = "offline"
"""State of a device that is enrolled but has not connected (the default of `DeviceRow.state`)."""

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


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One enrolled device, as `Store.devices` lists it (without its key); times are unix
    seconds. `labels` is None until the device has reported some; `last_seen` likewise."""

    name: str
    created_at: float
    last_seen: float | None
    state: str
    labels: list[str] | None


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One stored result of an attempt: the first copy that arrived; `received_at` is when."""

    constellation_id: str
    star_id: str
    attempt: int
    device: str
    status: str
    payload: dict[str, Any]
    received_at: float


_C = ConstellationRecord
_E = EventRecord
_D = DeviceRecord
_R = ResultRecord
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
_DEVICE_COLUMNS = (_D.name, _D.created_at, _D.last_seen, _D.state, _D.labels)
_RESULT_COLUMNS = (
    _R.constellation_id,
    _R.star_id,
    _R.attempt,
    _R.device,
    _R.status,
    _R.payload,
    _R.received_at,
)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


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
        document = dump_object(snapshot, f"snapshot of constellation {id!r}")
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

    # -- devices --------------------------------------------------------------------------------

    def enroll_device(self, name: str, *, salt: str, key: str) -> None:
        """Enrol device `name` with the salt and the key derived from its token (both hex).

        Enrolling a device that is already enrolled replaces its salt and key: re-enrolling
        rotates the key, so the old token no longer passes the handshake. A re-enrolled device
        keeps its `created_at` (first enrolment), state, labels and last_seen; a new one starts
        `offline`, with no labels and never seen.
        """
        _check_text(name, "device name")
        _check_hex(salt, f"salt of device {name!r}")
        _check_hex(key, f"key of device {name!r}")
        now = self._clock()
        with self._write() as connection:
            insert = self._insert(DeviceRecord).values(
                name=name, salt=salt, key=key, created_at=now, state=DEVICE_OFFLINE
            )
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[_D.name],
                    set_={"salt": insert.excluded.salt, "key": insert.excluded.key},
                )
            )

    def device_key(self, name: str) -> tuple[str, str] | None:
        """The (salt, key) of an enrolled device, both hex; None if `name` is not enrolled."""
        with self._read() as connection:
            row = connection.execute(select(_D.salt, _D.key).where(_D.name == name)).one_or_none()
        return None if row is None else (row[0], row[1])

    def devices(self) -> list[DeviceRow]:
        """Every enrolled device, by name."""
        with self._read() as connection:
            rows = connection.execute(select(*_DEVICE_COLUMNS).order_by(_D.name)).all()
        return [
            DeviceRow(
                name=name,
                created_at=created_at,
                last_seen=last_seen,
                state=state,
                labels=None if labels is None else self._load_labels(labels, name),
            )
            for name, created_at, last_seen, state, labels in rows
        ]

    def update_device(
        self,
        name: str,
        *,
        state: str | None = None,
        last_seen: float | None = None,
        labels: Sequence[str] | None = None,
    ) -> bool:
        """Record what an enrolled device reported; an argument left as None is not changed.

        Returns whether `name` is enrolled (an unknown device is not created: enrol it first).
        """
        values: dict[str, Any] = {}
        if state is not None:
            _check_text(state, f"state of device {name!r}")
            values["state"] = state
        if last_seen is not None:
            if isinstance(last_seen, bool) or not isinstance(last_seen, int | float):
                raise StoreInvalidData(f"last_seen of device {name!r} must be a unix time")
            if not math.isfinite(last_seen):
                raise StoreInvalidData(
                    f"last_seen of device {name!r} must be a finite unix time, not {last_seen}"
                )
            values["last_seen"] = float(last_seen)
        if labels is not None:
            values["labels"] = _dump_labels(labels, name)
        with self._write() as connection:
            if not values:
                found = connection.execute(select(_D.name).where(_D.name == name)).first()
                return found is not None
            changed = connection.execute(update(DeviceRecord).where(_D.name == name).values(values))
            return changed.rowcount > 0

    def remove_device(self, name: str) -> bool:
        """Forget an enrolled device and its key; returns whether it was enrolled."""
        with self._write() as connection:
            removed = connection.execute(delete(DeviceRecord).where(_D.name == name))
            return removed.rowcount > 0

    # -- results --------------------------------------------------------------------------------

    def record_result(
        self,
        constellation_id: str,
        star_id: str,
        attempt: int,
        *,
        device: str,
        status: str,
        payload: Mapping[str, Any],
    ) -> bool:
        """Store the result of one attempt, committed before this returns.

        Returns True if this (constellation_id, star_id, attempt) was new, False if a result
        for it was already stored; then nothing changes (the first copy wins), so a result
        delivered twice is stored once.
        """
        what = (
            f"result of attempt {attempt} of star {star_id!r} of constellation {constellation_id!r}"
        )
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise StoreInvalidData(f"{what}: attempt must be an integer >= 1")
        _check_text(device, f"{what}: device")
        _check_text(status, f"{what}: status")
        document = dump_object(payload, what)
        now = self._clock()
        with self._write() as connection:
            inserted = connection.execute(
                self._insert(ResultRecord)
                .values(
                    constellation_id=constellation_id,
                    star_id=star_id,
                    attempt=attempt,
                    device=device,
                    status=status,
                    payload=document,
                    received_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=[_R.constellation_id, _R.star_id, _R.attempt]
                )
            )
            return inserted.rowcount > 0

    def result(self, constellation_id: str, star_id: str, attempt: int) -> ResultRow | None:
        """The stored result of one attempt, or None if none arrived."""
        query = select(*_RESULT_COLUMNS).where(
            _R.constellation_id == constellation_id,
            _R.star_id == star_id,
            _R.attempt == attempt,
        )
        with self._read() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else self._result_row(*row)

    def results(self, constellation_id: str) -> list[ResultRow]:
        """Every stored result of one constellation, in the order they arrived."""
        query = (
            select(*_RESULT_COLUMNS)
            .where(_R.constellation_id == constellation_id)
            .order_by(_R.received_at, _R.star_id, _R.attempt)
        )
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [self._result_row(*row) for row in rows]

    # -- for the package's other modules (memory.tree) ------------------------------------------

    def reading(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection to read with (errors translated to `StoreError`)."""
        return self._read()

    def writing(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection in a write transaction, committed on exit (BEGIN IMMEDIATE on SQLite)."""
        return self._write()

    def insert(self, model: type[Any]) -> sqlite.Insert | postgresql.Insert:
        """An INSERT with the dialect's ON CONFLICT clauses."""
        return self._insert(model)

    def now(self) -> float:
        """The store's clock (unix seconds)."""
        return self._clock()

    def load_object(self, text: str, what: str) -> dict[str, Any]:
        """A stored JSON object; `StoreCorrupt` naming `what` if it is not one."""
        return self._load(text, what)

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

    def _result_row(
        self,
        constellation_id: str,
        star_id: str,
        attempt: int,
        device: str,
        status: str,
        payload: str,
        received_at: float,
    ) -> ResultRow:
        return ResultRow(
            constellation_id=constellation_id,
            star_id=star_id,
            attempt=attempt,
            device=device,
            status=status,
            payload=self._load(
                payload,
                f"result of attempt {attempt} of star {star_id!r} "
                f"of constellation {constellation_id!r}",
            ),
            received_at=received_at,
        )

    def _load_labels(self, text: str, name: str) -> list[str]:
        what = f"labels of device {name!r}"
        try:
            value = json.loads(text)
        except ValueError as error:
            raise StoreCorrupt(self._location, detail=f"{what} are not JSON: {error}") from error
        if not isinstance(value, list) or not all(isinstance(label, str) for label in value):
            raise StoreCorrupt(self._location, detail=f"{what} are not a JSON list of strings")
        return value

    def _load(self, text: str, what: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError as error:
            raise StoreCorrupt(self._location, detail=f"{what} is not JSON: {error}") from error
        if not isinstance(value, dict):
            raise StoreCorrupt(self._location, detail=f"{what} is not a JSON object")
        return value


def dump_object(value: Mapping[str, Any], what: str) -> str:
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


def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise StoreInvalidData(f"{what} must be a non-empty string, not {value!r}")


def _check_hex(value: str, what: str) -> None:
    if not isinstance(value, str) or _HEX.fullmatch(value) is None:
        raise StoreInvalidData(f"{what} must be a non-empty string of hex digit pairs")


def _dump_labels(labels: Sequence[str], name: str) -> str:
    what = f"labels of device {name!r}"
    if isinstance(labels, str | bytes) or not isinstance(labels, Sequence):
        raise StoreInvalidData(f"{what} must be a list of strings, not {type(labels).__name__}")
    if not all(isinstance(label, str) for label in labels):
        raise StoreInvalidData(f"{what} must be a list of strings")
    return json.dumps(list(labels), ensure_ascii=False, separators=(",", ":"))


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
        "payload": dump_object(event.payload, what),
    }
