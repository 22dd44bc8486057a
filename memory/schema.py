"""The SQLAlchemy 2 declarative models of the durable store.

These models describe the schema the *current* code expects; the database itself is only ever
created or changed by the Alembic migrations in `memory/migrations/versions/`. When you change a
model, add a migration (see `memory/migrations/env.py`); `tests/memory` checks that the two agree.

JSON columns hold text written by the store (`json.dumps`), not the dialect's JSON type, so the
same file reads the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints keep migrations reproducible (SQLite batch mode needs the names).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A 64-bit integer that is still SQLite's rowid alias (so it autoincrements there).
BigIntegerId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ConstellationRecord(Base):
    """The latest state of one constellation: a few queryable columns plus the full snapshot."""

    __tablename__ = "constellations"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)  # unix time, seconds
    updated_at: Mapped[float] = mapped_column(Float, nullable=False)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    snapshot: Mapped[str] = mapped_column(Text, nullable=False)  # JSON object
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index(None, "created_at"),
        Index(None, "status", "created_at"),
    )


class EventRecord(Base):
    """One entry of a constellation's append-only event log."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    constellation_id: Mapped[str] = mapped_column(
        String, ForeignKey("constellations.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[str] = mapped_column(String, nullable=False)
    ts: Mapped[float] = mapped_column(Float, nullable=False)  # unix time, seconds
    payload: Mapped[str] = mapped_column(Text, nullable=False)  # JSON object

    # Also the index for "events of a constellation after seq N".
    __table_args__ = (UniqueConstraint("constellation_id", "seq"),)


class DeviceRecord(Base):
    """One enrolled device: the key derived from its enrolment token, and what it last reported.

    `salt` and `key` are hex strings (the key is derived from the token; the token itself is
    never stored). `labels` is a JSON list of strings, NULL until the device reports some.
    """

    __tablename__ = "devices"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    salt: Mapped[str] = mapped_column(String, nullable=False)  # hex
    key: Mapped[str] = mapped_column(String, nullable=False)  # hex
    created_at: Mapped[float] = mapped_column(Float, nullable=False)  # unix time, seconds
    labels: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of strings
    last_seen: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(
        String, nullable=False, default="offline", server_default="offline"
    )


class ResultRecord(Base):
    """The ledger of task results: one row per (task, attempt), whichever copy arrived first.

    No foreign key to `constellations`: a result is stored even when its constellation has no
    row (a device may deliver it after the orchestrator restarted, before anything else).
    """

    __tablename__ = "results"

    constellation_id: Mapped[str] = mapped_column(String, nullable=False)
    star_id: Mapped[str] = mapped_column(String, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    device: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)  # JSON object
    received_at: Mapped[float] = mapped_column(Float, nullable=False)  # unix time, seconds

    __table_args__ = (PrimaryKeyConstraint("constellation_id", "star_id", "attempt"),)


class MemoryNodeRecord(Base):
    """One node of the task memory tree: a request, a constellation, a star or an attempt.

    `id` is stable (derived from the constellation, star and attempt it stands for, see
    `memory.tree`), `parent_id` its parent (none for a request), `request_id` the request
    at its root. `inputs` and `output` are JSON objects; `output` holds only bounded
    summaries, never raw device text. `revision` counts the node's revisions (1 when
    created); `stale` marks a node downstream of a revised one.
    """

    __tablename__ = "memory_nodes"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    kind: Mapped[str] = mapped_column(String, nullable=False)
    parent_id: Mapped[str | None] = mapped_column(
        String, ForeignKey("memory_nodes.id", ondelete="CASCADE"), nullable=True
    )
    request_id: Mapped[str] = mapped_column(String, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    inputs: Mapped[str] = mapped_column(Text, nullable=False)  # JSON object
    output: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON object
    created_at: Mapped[float] = mapped_column(Float, nullable=False)  # unix time, seconds
    updated_at: Mapped[float] = mapped_column(Float, nullable=False)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    stale: Mapped[bool] = mapped_column(Boolean, nullable=False)

    __table_args__ = (Index(None, "request_id"), Index(None, "parent_id"))


class MemoryRevisionRecord(Base):
    """One revision of a memory node: what changed (`kind`: created, edited, stale,
    finished), when, and a bounded JSON `detail`."""

    __tablename__ = "memory_revisions"

    id: Mapped[int] = mapped_column(BigIntegerId, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(
        String, ForeignKey("memory_nodes.id", ondelete="CASCADE"), nullable=False
    )
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    ts: Mapped[float] = mapped_column(Float, nullable=False)  # unix time, seconds
    kind: Mapped[str] = mapped_column(String, nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)  # JSON object

    __table_args__ = (UniqueConstraint("node_id", "revision"),)


class MemoryRequestRecord(Base):
    """The consolidated memory of one request: what was asked (`text`; for a plan file,
    its name and description), its status, the constellation that ran last, and after
    it finished a compact JSON `summary` (the plan that finally ran, the outcome, what
    failed and how it was repaired, the fleet it ran on). `indexed` says it is in the
    recall index; `forgotten` that it must not be recalled."""

    __tablename__ = "memory_requests"

    id: Mapped[str] = mapped_column(
        String, ForeignKey("memory_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    constellation_id: Mapped[str | None] = mapped_column(String, nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON object
    indexed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    forgotten: Mapped[bool] = mapped_column(Boolean, nullable=False)

    __table_args__ = (Index(None, "created_at"), Index(None, "indexed", "forgotten"))


class ToolDurationRecord(Base):
    """How long one tool took on one device, over the attempts that succeeded: their
    count, total, an exponentially weighted mean (recent runs count more) and the last."""

    __tablename__ = "tool_durations"

    tool: Mapped[str] = mapped_column(String, nullable=False)
    device: Mapped[str] = mapped_column(String, nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    total_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    mean_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    last_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (PrimaryKeyConstraint("tool", "device"),)
