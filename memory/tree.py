"""The task memory tree: request → constellation → star → attempt, with revisions.

    tree = TaskTree(store)
    tree.apply([OpenRequest(rid, "back up the photos", "request"),
                AddNode(constellation_node_id(cid), "constellation", rid, rid, ...)])
    tree.tree(rid)            # the request, every node under it and their revisions

Every node has a stable id (`request_node_id` is random; the others are derived from the
constellation, star and attempt they stand for, so recording an event twice changes
nothing), its parent, the request at its root, inputs, a bounded output summary, a
status, timing, a revision count and a `stale` flag. Changes are *operations* that
`apply` writes in one transaction: `AddNode` (idempotent), `UpdateNode` (with a
revision when it says what kind of change it was), `OpenRequest` / `UpdateRequest` (the
consolidated memory of a request) and `RecordDuration` (how long a tool took on a
device, which feeds star estimates).

The store keeps plain data only: what goes into `inputs`, `output` and a request's
`summary` must already be bounded (the caller's duty: `agents.remember` puts result
summaries there, never raw device text). Errors are `memory.errors.StoreError`s.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Boolean, and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from memory.errors import StoreInvalidData, UnknownMemory
from memory.schema import (
    MemoryNodeRecord,
    MemoryRequestRecord,
    MemoryRevisionRecord,
    ToolDurationRecord,
)
from memory.store import Store, dump_object

NodeKind = Literal["request", "constellation", "star", "attempt"]
NODE_KINDS: tuple[NodeKind, ...] = ("request", "constellation", "star", "attempt")

DURATION_WEIGHT = 0.3
"""How much the newest duration moves a tool's mean on a device (exponential weighting)."""

RUNNING = "running"
FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

_N = MemoryNodeRecord
_V = MemoryRevisionRecord
_Q = MemoryRequestRecord
_T = ToolDurationRecord
_NODE_COLUMNS = (
    _N.id,
    _N.kind,
    _N.parent_id,
    _N.request_id,
    _N.name,
    _N.status,
    _N.inputs,
    _N.output,
    _N.created_at,
    _N.updated_at,
    _N.started_at,
    _N.finished_at,
    _N.revision,
    _N.stale,
)
# One statement for every node update (a None parameter keeps the column), so a batch of
# updates is one executemany.
_UPDATE_NODE = (
    update(MemoryNodeRecord)
    .where(_N.id == bindparam("_id"))
    .values(
        status=func.coalesce(bindparam("_status"), _N.status),
        name=func.coalesce(bindparam("_name"), _N.name),
        inputs=func.coalesce(bindparam("_inputs"), _N.inputs),
        output=func.coalesce(bindparam("_output"), _N.output),
        started_at=func.coalesce(bindparam("_started_at"), _N.started_at),
        finished_at=func.coalesce(bindparam("_finished_at"), _N.finished_at),
        stale=func.coalesce(bindparam("_stale", type_=Boolean()), _N.stale),
        revision=bindparam("_revision"),
        updated_at=bindparam("_now"),
    )
)
_REQUEST_COLUMNS = (
    _Q.id,
    _Q.text,
    _Q.source,
    _Q.status,
    _Q.created_at,
    _Q.finished_at,
    _Q.constellation_id,
    _Q.summary,
    _Q.indexed,
    _Q.forgotten,
)


# ------------------------------------------------------------------------------ node ids


def request_node_id() -> str:
    """A new request's id: `r-` and 12 hex digits."""
    return f"r-{uuid.uuid4().hex[:12]}"


def constellation_node_id(constellation_id: str) -> str:
    return f"c-{constellation_id}"


def star_node_id(constellation_id: str, star_id: str) -> str:
    return f"s-{constellation_id}/{star_id}"


def attempt_node_id(constellation_id: str, star_id: str, attempt: int) -> str:
    return f"a-{constellation_id}/{star_id}#{attempt}"


# ------------------------------------------------------------------------------ operations


@dataclass(frozen=True, slots=True)
class AddNode:
    """Create a node (nothing happens if it exists): revision 1, `created`."""

    id: str
    kind: NodeKind
    parent_id: str | None
    request_id: str
    name: str
    status: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    output: Mapping[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class UpdateNode:
    """Change a node; a field left None keeps its value. With `revision` (the kind of
    change: `edited`, `stale`, `removed`, `finished`, ...) the node gets a new revision
    recording `detail`. A node that does not exist is left alone."""

    id: str
    status: str | None = None
    name: str | None = None
    inputs: Mapping[str, Any] | None = None
    output: Mapping[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    stale: bool | None = None
    revision: str | None = None
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """Create a request: its node and its consolidated record (`status` running).
    `source` is `request` (words) or `plan` (a plan file: `text` is its name and
    description). Nothing happens if it exists."""

    id: str
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """Change a request's record: its status, the constellation that runs (or ran) last,
    and, when it finished, its consolidated `summary` (`finished=True` sets
    `finished_at`; a request that runs again is reopened with `finished=False`)."""

    id: str
    status: str | None = None
    constellation_id: str | None = None
    summary: Mapping[str, Any] | None = None
    finished: bool | None = None


@dataclass(frozen=True, slots=True)
class RecordDuration:
    """An attempt of `tool` on `device` succeeded after `seconds`."""

    tool: str
    device: str
    seconds: float


Operation = AddNode | UpdateNode | OpenRequest | UpdateRequest | RecordDuration


# ------------------------------------------------------------------------------ rows


@dataclass(frozen=True, slots=True)
class NodeRevision:
    """One revision of a node: its number, when, what kind of change, and its detail."""

    node_id: str
    revision: int
    ts: float
    kind: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MemoryNode:
    """One node of the tree, as stored."""

    id: str
    kind: str
    parent_id: str | None
    request_id: str
    name: str
    status: str
    inputs: dict[str, Any]
    output: dict[str, Any] | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    revision: int
    stale: bool


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """The consolidated memory of one request (`summary` is None until it finished)."""

    id: str
    text: str
    source: str
    status: str
    created_at: float
    finished_at: float | None
    constellation_id: str | None
    summary: dict[str, Any] | None
    indexed: bool
    forgotten: bool


@dataclass(frozen=True, slots=True)
class RequestTree:
    """A request with every node under it (parents before children) and their revisions."""

    request: RequestRecord
    nodes: list[MemoryNode]
    revisions: dict[str, list[NodeRevision]]

    def children(self, node_id: str) -> list[MemoryNode]:
        return [node for node in self.nodes if node.parent_id == node_id]


@dataclass(frozen=True, slots=True)
class Duration:
    """What the memory knows of a tool's run time on a device."""

    tool: str
    device: str
    count: int
    mean_seconds: float
    last_seconds: float


# ------------------------------------------------------------------------------ the tree


class TaskTree:
    """The task memory tree in a `Store`'s database; see the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writing --------------------------------------------------------------------------------

    def apply(self, operations: Iterable[Operation]) -> None:
        """Write `operations` in one transaction (all or nothing): first the nodes and
        requests to create, then the node updates in order, the request updates in order,
        and the durations. Each kind goes in one batched statement where it can."""
        ops = list(operations)
        if not ops:
            return
        prepared = [self._prepared(op) for op in ops]  # bad data fails before writing
        now = self.store.now()
        adds: list[tuple[AddNode, dict[str, str]]] = []
        opens: list[OpenRequest] = []
        updates: list[tuple[UpdateNode, dict[str, str]]] = []
        requests: list[tuple[UpdateRequest, dict[str, str]]] = []
        durations: list[RecordDuration] = []
        for op, documents in zip(ops, prepared, strict=True):
            if isinstance(op, AddNode):
                adds.append((op, documents))
            elif isinstance(op, OpenRequest):
                opens.append(op)
                node = AddNode(
                    op.id, "request", None, op.id, op.text, RUNNING, {"source": op.source}
                )
                adds.append((node, {"inputs": dump_object(node.inputs, "inputs")}))
            elif isinstance(op, UpdateNode):
                updates.append((op, documents))
            elif isinstance(op, UpdateRequest):
                requests.append((op, documents))
            else:
                durations.append(op)
        with self.store.writing() as connection:
            wanted = {op.id for op, _ in adds} | {op.id for op, _ in updates}
            revision = self._revisions(connection, wanted)
            self._add_nodes(connection, adds, revision, now)
            self._open_requests(connection, opens, now)
            self._update_nodes(connection, updates, revision, now)
            for op, documents in requests:
                self._update_request(connection, op, documents, now)
            self._record_durations(connection, durations, now)

    def _prepared(self, op: Operation) -> dict[str, str]:
        """The JSON documents of one operation (`StoreInvalidData` if one cannot be)."""
        documents: dict[str, str] = {}
        if isinstance(op, AddNode):
            if op.kind not in NODE_KINDS:
                raise StoreInvalidData(f"node {op.id!r}: kind must be one of {NODE_KINDS}")
            documents["inputs"] = dump_object(op.inputs, f"inputs of node {op.id!r}")
            if op.output is not None:
                documents["output"] = dump_object(op.output, f"output of node {op.id!r}")
        elif isinstance(op, UpdateNode):
            for name in ("inputs", "output", "detail"):
                value = getattr(op, name)
                if value is not None:
                    documents[name] = dump_object(value, f"{name} of node {op.id!r}")
        elif isinstance(op, UpdateRequest) and op.summary is not None:
            documents["summary"] = dump_object(op.summary, f"summary of request {op.id!r}")
        elif isinstance(op, RecordDuration) and not (op.tool and op.device and op.seconds >= 0):
            raise StoreInvalidData(f"a duration needs a tool, a device and seconds >= 0: {op}")
        return documents

    def _revisions(self, connection: Connection, ids: set[str]) -> dict[str, int]:
        """The current revision of each of these nodes that exists."""
        found: dict[str, int] = {}
        listed = sorted(ids)
        for start in range(0, len(listed), 500):
            chunk = listed[start : start + 500]
            rows = connection.execute(select(_N.id, _N.revision).where(_N.id.in_(chunk)))
            found.update({node_id: revision for node_id, revision in rows})
        return found

    def _add_nodes(
        self,
        connection: Connection,
        adds: Sequence[tuple[AddNode, dict[str, str]]],
        revision: dict[str, int],
        now: float,
    ) -> None:
        rows: list[dict[str, Any]] = []
        for op, documents in adds:
            if op.id in revision:
                continue  # it exists (or comes earlier in this batch): nothing to do
            revision[op.id] = 1
            rows.append(
                {
                    "id": op.id,
                    "kind": op.kind,
                    "parent_id": op.parent_id,
                    "request_id": op.request_id,
                    "name": op.name,
                    "status": op.status,
                    "inputs": documents["inputs"],
                    "output": documents.get("output"),
                    "created_at": now,
                    "updated_at": now,
                    "started_at": op.started_at,
                    "finished_at": op.finished_at,
                    "revision": 1,
                    "stale": False,
                }
            )
        if rows:
            connection.execute(insert(MemoryNodeRecord), rows)
            connection.execute(
                insert(MemoryRevisionRecord),
                [
                    {
                        "node_id": row["id"],
                        "revision": 1,
                        "ts": now,
                        "kind": "created",
                        "detail": "{}",
                    }
                    for row in rows
                ],
            )

    def _open_requests(
        self, connection: Connection, opens: Sequence[OpenRequest], now: float
    ) -> None:
        if not opens:
            return
        connection.execute(
            self.store.insert(MemoryRequestRecord).on_conflict_do_nothing(index_elements=[_Q.id]),
            [
                {
                    "id": op.id,
                    "text": op.text,
                    "source": op.source,
                    "status": RUNNING,
                    "created_at": now,
                    "finished_at": None,
                    "constellation_id": None,
                    "summary": None,
                    "indexed": False,
                    "forgotten": False,
                }
                for op in opens
            ],
        )

    def _update_nodes(
        self,
        connection: Connection,
        updates: Sequence[tuple[UpdateNode, dict[str, str]]],
        revision: dict[str, int],
        now: float,
    ) -> None:
        rows: list[dict[str, Any]] = []
        revisions: list[dict[str, Any]] = []
        for op, documents in updates:
            if op.id not in revision:
                continue  # a node that does not exist is left alone
            if op.revision is not None:
                revision[op.id] += 1
                revisions.append(
                    {
                        "node_id": op.id,
                        "revision": revision[op.id],
                        "ts": now,
                        "kind": op.revision,
                        "detail": documents.get("detail", "{}"),
                    }
                )
            rows.append(
                {
                    "_id": op.id,
                    "_status": op.status,
                    "_name": op.name,
                    "_inputs": documents.get("inputs"),
                    "_output": documents.get("output"),
                    "_started_at": op.started_at,
                    "_finished_at": op.finished_at,
                    "_stale": op.stale,
                    "_revision": revision[op.id],
                    "_now": now,
                }
            )
        if rows:
            connection.execute(_UPDATE_NODE, rows)
        if revisions:
            connection.execute(insert(MemoryRevisionRecord), revisions)

    def _update_request(
        self, connection: Connection, op: UpdateRequest, documents: dict[str, str], now: float
    ) -> None:
        values: dict[str, Any] = {}
        node: dict[str, Any] = {"updated_at": now}
        if op.status is not None:
            values["status"] = node["status"] = op.status
        if op.constellation_id is not None:
            values["constellation_id"] = op.constellation_id
        if "summary" in documents:
            values["summary"] = node["output"] = documents["summary"]
            values["indexed"] = False  # the recall index must learn the new summary
        if op.finished is not None:
            values["finished_at"] = node["finished_at"] = now if op.finished else None
        if values:
            connection.execute(update(MemoryRequestRecord).where(_Q.id == op.id).values(values))
        connection.execute(update(MemoryNodeRecord).where(_N.id == op.id).values(node))

    def _record_durations(
        self, connection: Connection, durations: Sequence[RecordDuration], now: float
    ) -> None:
        if not durations:
            return
        insert = self.store.insert(ToolDurationRecord)
        new = insert.excluded
        connection.execute(
            insert.on_conflict_do_update(
                index_elements=[_T.tool, _T.device],
                set_={
                    "count": _T.count + 1,
                    "total_seconds": _T.total_seconds + new.last_seconds,
                    "mean_seconds": _T.mean_seconds
                    + DURATION_WEIGHT * (new.last_seconds - _T.mean_seconds),
                    "last_seconds": new.last_seconds,
                    "updated_at": new.updated_at,
                },
            ),
            [
                {
                    "tool": op.tool,
                    "device": op.device,
                    "count": 1,
                    "total_seconds": float(op.seconds),
                    "mean_seconds": float(op.seconds),
                    "last_seconds": float(op.seconds),
                    "updated_at": now,
                }
                for op in durations
            ],
        )

    def mark_indexed(self, request_ids: Iterable[str], indexed: bool = True) -> None:
        """Say these requests are (or are not) in the recall index."""
        ids = list(request_ids)
        if not ids:
            return
        with self.store.writing() as connection:
            connection.execute(
                update(MemoryRequestRecord).where(_Q.id.in_(ids)).values(indexed=indexed)
            )

    def forget(self, request_id: str) -> bool:
        """Take a request out of recall for good (its tree stays); whether it was known."""
        with self.store.writing() as connection:
            changed = connection.execute(
                update(MemoryRequestRecord)
                .where(_Q.id == request_id)
                .values(forgotten=True, indexed=False)  # the index must drop it
            )
            return changed.rowcount > 0

    # -- reading --------------------------------------------------------------------------------

    def node(self, node_id: str) -> MemoryNode | None:
        with self.store.reading() as connection:
            row = connection.execute(select(*_NODE_COLUMNS).where(_N.id == node_id)).one_or_none()
        return None if row is None else self._node(**row._mapping)

    def nodes(self, request_id: str) -> list[MemoryNode]:
        """Every node of a request, parents before children (by creation)."""
        order: dict[str, int] = {kind: index for index, kind in enumerate(NODE_KINDS)}
        with self.store.reading() as connection:
            rows = connection.execute(
                select(*_NODE_COLUMNS).where(_N.request_id == request_id)
            ).all()
        nodes = [self._node(**row._mapping) for row in rows]
        return sorted(
            nodes,
            key=lambda n: (order.get(n.kind, 9), n.created_at, n.started_at or math.inf, n.id),
        )

    def revisions(self, request_id: str) -> dict[str, list[NodeRevision]]:
        """The revisions of every node of a request, by node, oldest first."""
        query = (
            select(_V.node_id, _V.revision, _V.ts, _V.kind, _V.detail)
            .join(_N, _N.id == _V.node_id)
            .where(_N.request_id == request_id)
            .order_by(_V.node_id, _V.revision)
        )
        found: dict[str, list[NodeRevision]] = {}
        with self.store.reading() as connection:
            for node_id, revision, ts, kind, detail in connection.execute(query):
                what = f"revision {revision} of node {node_id!r}"
                found.setdefault(node_id, []).append(
                    NodeRevision(node_id, revision, ts, kind, self.store.load_object(detail, what))
                )
        return found

    def request(self, request_id: str) -> RequestRecord | None:
        found = self.requests([request_id])
        return found.get(request_id)

    def requests(self, request_ids: Sequence[str]) -> dict[str, RequestRecord]:
        """The records of these requests (those that exist), by id."""
        if not request_ids:
            return {}
        with self.store.reading() as connection:
            rows = connection.execute(
                select(*_REQUEST_COLUMNS).where(_Q.id.in_(list(request_ids)))
            ).all()
        return {row[0]: self._request(**row._mapping) for row in rows}

    def recent_requests(self, limit: int = 20) -> list[RequestRecord]:
        """The newest requests first."""
        query = (
            select(*_REQUEST_COLUMNS)
            .order_by(_Q.created_at.desc(), _Q.id.desc())
            .limit(max(1, limit))
        )
        with self.store.reading() as connection:
            rows = connection.execute(query).all()
        return [self._request(**row._mapping) for row in rows]

    def count_requests(self) -> int:
        with self.store.reading() as connection:
            return int(connection.execute(select(func.count()).select_from(_Q)).scalar_one())

    def request_of_constellation(self, constellation_id: str) -> str | None:
        """The request a constellation realises (None if the memory has not seen it)."""
        node = constellation_node_id(constellation_id)
        with self.store.reading() as connection:
            return connection.execute(select(_N.parent_id).where(_N.id == node)).scalar()

    def resolve(self, wanted: str) -> str:
        """The request `wanted` names: a request id, a unique prefix of one, or the id of
        a constellation it ran. `UnknownMemory` otherwise."""
        wanted = wanted.strip()
        if not wanted:
            raise UnknownMemory(wanted, "give a request id (`orrery memory search` lists them)")
        if self.request(wanted) is not None:
            return wanted
        by_constellation = self.request_of_constellation(wanted)
        if by_constellation is not None:
            return by_constellation
        pattern = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.store.reading() as connection:
            matches = set(
                connection.execute(
                    select(_Q.id).where(_Q.id.like(pattern, escape="\\")).limit(6)
                ).scalars()
            )
            if not matches:  # a prefix of a constellation id
                node_pattern = "c-" + pattern
                rows = connection.execute(
                    select(_N.parent_id)
                    .where(and_(_N.kind == "constellation", _N.id.like(node_pattern, escape="\\")))
                    .limit(6)
                ).scalars()
                matches = {row for row in rows if row is not None}
        if len(matches) == 1:
            return matches.pop()
        if matches:
            listed = ", ".join(sorted(matches)[:5])
            raise UnknownMemory(
                wanted, f"{wanted!r} matches several remembered requests ({listed}); give more"
            )
        raise UnknownMemory(
            wanted,
            f"no remembered request {wanted!r} (`orrery memory search TEXT` finds them by "
            "meaning; a request id starts with r-, a constellation id works too)",
        )

    def tree(self, request_id: str) -> RequestTree:
        """A request with its nodes and revisions; `UnknownMemory` if there is none."""
        request = self.request(request_id)
        if request is None:
            raise UnknownMemory(request_id, f"no remembered request {request_id!r}")
        return RequestTree(request, self.nodes(request_id), self.revisions(request_id))

    def to_index(self, limit: int = 100) -> list[RequestRecord]:
        """Finished requests the recall index has yet to learn (or unlearn), oldest first."""
        query = (
            select(*_REQUEST_COLUMNS)
            .where(_Q.indexed.is_(False), _Q.summary.is_not(None))
            .order_by(_Q.finished_at)
            .limit(limit)
        )
        with self.store.reading() as connection:
            rows = connection.execute(query).all()
        return [self._request(**row._mapping) for row in rows]

    def durations(self, tools: Iterable[str]) -> list[Duration]:
        """What is known of these tools' run times, per device."""
        wanted = sorted(set(tools))
        if not wanted:
            return []
        query = select(_T.tool, _T.device, _T.count, _T.mean_seconds, _T.last_seconds).where(
            _T.tool.in_(wanted)
        )
        with self.store.reading() as connection:
            return [Duration(*row) for row in connection.execute(query)]

    # -- rows -----------------------------------------------------------------------------------

    def _node(
        self,
        id: str,
        kind: str,
        parent_id: str | None,
        request_id: str,
        name: str,
        status: str,
        inputs: str,
        output: str | None,
        created_at: float,
        updated_at: float,
        started_at: float | None,
        finished_at: float | None,
        revision: int,
        stale: bool,
    ) -> MemoryNode:
        what = f"node {id!r}"
        return MemoryNode(
            id=id,
            kind=kind,
            parent_id=parent_id,
            request_id=request_id,
            name=name,
            status=status,
            inputs=self.store.load_object(inputs, f"inputs of {what}"),
            output=None if output is None else self.store.load_object(output, f"output of {what}"),
            created_at=created_at,
            updated_at=updated_at,
            started_at=started_at,
            finished_at=finished_at,
            revision=revision,
            stale=bool(stale),
        )

    def _request(
        self,
        id: str,
        text: str,
        source: str,
        status: str,
        created_at: float,
        finished_at: float | None,
        constellation_id: str | None,
        summary: str | None,
        indexed: bool,
        forgotten: bool,
    ) -> RequestRecord:
        loaded = None
        if summary is not None:
            loaded = self.store.load_object(summary, f"summary of request {id!r}")
        return RequestRecord(
            id=id,
            text=text,
            source=source,
            status=status,
            created_at=created_at,
            finished_at=finished_at,
            constellation_id=constellation_id,
            summary=loaded,
            indexed=bool(indexed),
            forgotten=bool(forgotten),
        )
