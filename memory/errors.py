"""Every error the store can fail with; each message names the database and says what to do.

StoreError                 base: the store could not do what was asked
├── StoreLocked            another process holds the database lock beyond the busy timeout
├── StoreReadOnly          the database (or its directory) cannot be written
├── StoreCorrupt           the file is not an SQLite database, or it is malformed
├── StoreVersionTooNew     the schema revision in the database is unknown to this code
├── StoreInvalidData       a value cannot be stored (not a dict, not JSON-serialisable, NaN)
├── StoreClosed            the store was used after `close()`
├── UnknownMemory          the task memory has no request by that id (or several match a prefix)
└── RecallUnavailable      the recall index (DATA_DIR/recall) cannot be opened or used

Driver errors (SQLAlchemy's `DBAPIError`, `sqlite3.Error`) never escape the store: they are
mapped to the classes above, or to a plain `StoreError` that keeps the driver's message.
"""

from __future__ import annotations


class StoreError(Exception):
    """The store could not do what was asked; `message` says why and what to do."""

    def __init__(self, message: str, *, location: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.location = location  # the database file, or the URL without its password


class StoreLocked(StoreError):
    """The database stayed locked by another connection for longer than the busy timeout."""

    def __init__(self, location: str, *, waited_ms: int) -> None:
        super().__init__(
            f"database {location} is locked by another process (waited {waited_ms} ms); "
            "another Orrery using the same data directory is probably running: stop it, "
            "or give this one its own --data-dir (or ORRERY_HOME)",
            location=location,
        )
        self.waited_ms = waited_ms


class StoreReadOnly(StoreError):
    """SQLite refused to write: the file, its -wal/-shm files or its directory is read-only."""

    def __init__(self, location: str, *, detail: str) -> None:
        super().__init__(
            f"database {location} is read-only ({detail}); Orrery writes to its data "
            "directory: make it and its files writable, or give Orrery another --data-dir "
            "(or ORRERY_HOME)",
            location=location,
        )
        self.detail = detail


class StoreCorrupt(StoreError):
    """The file is not an SQLite database, or its content is damaged."""

    def __init__(self, location: str, *, detail: str) -> None:
        super().__init__(
            f"{location} is not a usable Orrery database ({detail}); move it aside "
            f"(with any {location}-wal and {location}-shm files next to it, e.g. rename them "
            "to *.broken) and start again: a new empty database will be created",
            location=location,
        )
        self.detail = detail


class StoreVersionTooNew(StoreError):
    """The database carries a schema revision this code has no migration for."""

    def __init__(self, location: str, *, revision: str, known_head: str) -> None:
        super().__init__(
            f"database {location} has schema revision {revision!r}, which this version of "
            f"Orrery does not know (its newest is {known_head!r}); it was written by a newer "
            "Orrery: upgrade Orrery, or use a different --data-dir (or ORRERY_HOME)",
            location=location,
        )
        self.revision = revision
        self.known_head = known_head


class StoreInvalidData(StoreError, ValueError):
    """A value handed to the store cannot be stored as plain JSON data."""


class StoreClosed(StoreError):
    """The store was used after `close()`."""

    def __init__(self, location: str) -> None:
        super().__init__(
            f"the store for {location} is closed; open a new one with Store.open()",
            location=location,
        )


class UnknownMemory(StoreError):
    """No remembered request has this id (or unique id prefix, or constellation id)."""

    def __init__(self, wanted: str, message: str) -> None:
        super().__init__(message)
        self.wanted = wanted


class RecallUnavailable(StoreError):
    """The recall index (ChromaDB in DATA_DIR/recall, with the local embedding model)
    cannot be opened or used; the message says what is missing and what to do."""
