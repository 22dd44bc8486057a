"""Recording runs into the task memory tree, and consolidating each request when it ends.

`MemoryRecorder` is an `EventStream` listener beside the run recorder (which keeps the
raw event log): it turns events into the tree of `memory.tree` — a request, the
constellations that realise it (a retry joins the request of the constellation it
retries), their stars and each star's attempts — with inputs, bounded outputs, status,
timing and revisions. An accepted edit batch is a revision of the constellation and of
every star it touches, and marks the stars downstream of those stale. When a
constellation finishes, `consolidate` writes the request's compact summary: what was
asked, the plan that finally ran, the outcome, what failed and how it was repaired, and
the fleet it ran on; then `on_consolidated(request_id)` is called (the runtime indexes the
request for recall there).

Outputs are `agents.planner.summary.ResultSummary`s and error *kinds*, never raw device
text: a future planner reads this memory. Writes are buffered: the tree of a running
constellation is written in one transaction at a milestone (a star finished, an edit) at
most every `FLUSH_INTERVAL` seconds, and always when it finishes (the event log of
`app.recorder` is what crash recovery reads; this is memory). A store failure is logged
and recording stops; the runs go on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.constellation import Constellation, Star
from agents.constellation.model import LineKind
from agents.events import (
    AttemptFailed,
    ConstellationFinished,
    ConstellationSubmitted,
    EditApplied,
    Event,
    StarFinished,
    StarStarted,
)
from agents.planner.summary import error_kind, summarise
from devices.registry import DeviceInfo
from memory import StoreError
from memory.tree import (
    AddNode,
    MemoryNode,
    NodeRevision,
    OpenRequest,
    Operation,
    RecordDuration,
    RequestRecord,
    TaskTree,
    UpdateNode,
    UpdateRequest,
    attempt_node_id,
    constellation_node_id,
    request_node_id,
    star_node_id,
)

log = logging.getLogger("orrery.memory")

MAX_BUFFERED = 500
FLUSH_INTERVAL = 2.0
"""Seconds between writes while a constellation runs (it is written when it finishes)."""
MAX_TEXT = 1000
"""Longest plan text kept (an argument, a title, a rationale); longer is cut."""
MAX_REQUEST = 20_000
"""Longest request text kept (the control API takes no longer ones)."""
MAX_FAILURES = 20
MAX_FLEET = 64


@dataclass(frozen=True, slots=True)
class NotedRequest:
    """What the runtime says about a constellation before submitting it."""

    text: str
    source: str = "request"
    recalled: str | None = None
    """The remembered request its plan came from, if any."""


class MemoryRecorder:
    """An `EventStream` listener writing the task memory tree; see the module docstring.

    `lookup` gives a constellation by id (the orchestrator's), `devices` the devices
    connected now (the fleet a constellation runs on). Nodes are timed by `clock` (unix
    seconds); durations come from the attempts' own (monotonic) times."""

    def __init__(
        self,
        tree: TaskTree,
        lookup: Callable[[str], Constellation],
        devices: Callable[[], Sequence[DeviceInfo]] = tuple,
        *,
        on_consolidated: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tree = tree
        self.clock = clock
        self.lookup = lookup
        self.devices = devices
        self.on_consolidated = on_consolidated
        self.failure: StoreError | None = None
        self._buffer: list[Operation] = []
        self._noted: dict[str, NotedRequest] = {}
        self._requests: dict[str, str] = {}  # constellation id -> request id
        self._strangers: set[str] = set()  # constellations the memory never saw
        self._flushed = clock()

    def note_request(
        self,
        constellation_id: str,
        text: str,
        *,
        source: str = "request",
        recalled: str | None = None,
    ) -> None:
        """Say, before submitting it, which request in words a constellation realises
        (a plan file's request is its name and description) and whether its plan came
        from memory."""
        self._noted[constellation_id] = NotedRequest(text, source, recalled)

    def request_of(self, constellation_id: str) -> str | None:
        """The request a constellation realises, once it was submitted."""
        return self._requests.get(constellation_id)

    # -- events ---------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if self.failure is not None or not event.constellation_id:
            return
        try:
            self._record(event)
        except StoreError as exc:
            self._failed(exc)

    def _record(self, event: Event) -> None:
        cid = event.constellation_id
        if isinstance(event, ConstellationSubmitted):
            self._submitted(cid)
            return
        rid = self._requests.get(cid) or self._resumed(cid)
        if rid is None:
            return  # submitted before this recorder listened, and never remembered
        constellation = self._constellation(cid)
        if constellation is None:
            return
        if isinstance(event, StarStarted):
            self._started(constellation, event, rid)
        elif isinstance(event, AttemptFailed):
            self._buffer.append(
                UpdateNode(
                    attempt_node_id(cid, event.star_id, event.attempt),
                    status="timed_out" if event.timed_out else "failed",
                    finished_at=self.clock(),
                    output={
                        "error": error_kind(event.error),
                        "timed_out": event.timed_out,
                        "will_retry": event.will_retry,
                    },
                    revision="finished",
                )
            )
        elif isinstance(event, StarFinished):
            self._star_finished(constellation, event)
        elif isinstance(event, EditApplied):
            self._edited(constellation, event, rid)
        elif isinstance(event, ConstellationFinished):
            self._finished(constellation, event, rid)
            return
        milestone = isinstance(event, StarFinished | EditApplied)
        if len(self._buffer) >= MAX_BUFFERED or (
            milestone and self.clock() - self._flushed >= FLUSH_INTERVAL
        ):
            self.flush()

    def _resumed(self, cid: str) -> str | None:
        """The request of a constellation an earlier process submitted and this one took
        up again after a crash (`Orchestrator.resume` announces no submission): from the
        tree, once per constellation; None when the memory never saw it."""
        if cid in self._strangers:
            return None
        rid = self.tree.request_of_constellation(cid)
        if rid is None:
            self._strangers.add(cid)
            return None
        log.info("c=%s resumed: recorded under its request %s again", cid, rid)
        self._requests[cid] = rid
        return rid

    def _submitted(self, cid: str) -> None:
        constellation = self._constellation(cid)
        if constellation is None:
            return
        noted = self._noted.pop(cid, None)
        rid = None
        if constellation.retry_of is not None:
            rid = self._requests.get(constellation.retry_of)
            if rid is None:
                self.flush()
                rid = self.tree.request_of_constellation(constellation.retry_of)
        if rid is None:
            rid = request_node_id()
            text = noted.text if noted is not None else plan_request_text(constellation)
            source = noted.source if noted is not None else "plan"
            self._buffer.append(OpenRequest(rid, text[:MAX_REQUEST], source))
        self._requests[cid] = rid
        con = constellation_node_id(cid)
        self._buffer += [
            UpdateRequest(rid, status="running", constellation_id=cid, finished=False),
            AddNode(
                con,
                "constellation",
                rid,
                rid,
                constellation.name,
                "running",
                started_at=self.clock(),
                inputs={
                    "constellation": cid,
                    "version": constellation.version,
                    "retry_of": constellation.retry_of,
                    "rationale": _cut(constellation.rationale),
                    "from_memory": noted.recalled if noted is not None else None,
                    "fleet": fleet_shape(self.devices()),
                },
            ),
        ]
        self._buffer += [
            self._star_node(constellation, star, rid) for star in _stars(constellation)
        ]

    def _star_node(self, constellation: Constellation, star: Star, rid: str) -> AddNode:
        cid = constellation.id
        done = star.status.terminal
        return AddNode(
            star_node_id(cid, star.id),
            "star",
            constellation_node_id(cid),
            rid,
            star.title or star.id,
            star.status.value,
            star_inputs(constellation, star),
            output=summarise(star).model_dump(mode="json") if done else None,
        )

    def _started(self, constellation: Constellation, event: StarStarted, rid: str) -> None:
        cid = constellation.id
        now = self.clock()
        self._buffer += [
            AddNode(
                attempt_node_id(cid, event.star_id, event.attempt),
                "attempt",
                star_node_id(cid, event.star_id),
                rid,
                f"attempt {event.attempt} on {event.device}",
                "running",
                {"number": event.attempt, "device": event.device},
                started_at=now,
            ),
            # A star marked stale runs now on the revised plan: no longer stale.
            UpdateNode(
                star_node_id(cid, event.star_id),
                status="running",
                started_at=now if event.attempt == 1 else None,
                stale=False,
            ),
        ]

    def _star_finished(self, constellation: Constellation, event: StarFinished) -> None:
        cid = constellation.id
        star = constellation.stars.get(event.star_id)
        if star is None:
            return
        self._buffer.append(
            UpdateNode(
                star_node_id(cid, star.id),
                status=star.status.value,
                output=summarise(star).model_dump(mode="json"),
                finished_at=self.clock(),
                revision="finished",
                detail={"status": star.status.value},
            )
        )
        if event.attempt is None or not 0 < event.attempt <= len(star.attempts):
            return
        attempt = star.attempts[event.attempt - 1]
        self._buffer.append(
            UpdateNode(
                attempt_node_id(cid, star.id, attempt.number),
                status=attempt.status.value,
                finished_at=self.clock(),
                output={
                    "status": attempt.status.value,
                    "error": error_kind(attempt.error) if attempt.error else None,
                },
            )
        )
        if attempt.status.value == "succeeded" and attempt.finished_at is not None:
            seconds = max(0.0, attempt.finished_at - attempt.started_at)
            self._buffer.append(RecordDuration(star.effective_tool, attempt.device, seconds))

    def _edited(self, constellation: Constellation, event: EditApplied, rid: str) -> None:
        cid = constellation.id
        version = event.version
        self._buffer.append(
            UpdateNode(
                constellation_node_id(cid),
                revision="edited",
                detail={
                    "version": version,
                    "rationale": _cut(event.rationale),
                    "undo": event.undo,
                    "edits": [_edit_line(edit) for edit in event.edits][:50],
                },
            )
        )
        revised: set[str] = set()
        for edit in event.edits:
            op = edit.get("op")
            if op == "add_star":
                star = constellation.stars.get(str((edit.get("star") or {}).get("id")))
                if star is not None:
                    self._buffer.append(self._star_node(constellation, star, rid))
                continue
            if op == "remove_star":
                star_id, kind = str(edit.get("id")), "removed"
            elif op == "update_star":
                star_id, kind = str(edit.get("id")), "edited"
            elif op == "add_line":
                star_id, kind = str((edit.get("line") or {}).get("to")), "edited"
            elif op == "remove_line":
                star_id, kind = str(edit.get("to")), "edited"
            else:
                continue
            revised.add(star_id)
            star = constellation.stars.get(star_id)
            self._buffer.append(
                UpdateNode(
                    star_node_id(cid, star_id),
                    status="removed" if kind == "removed" else None,
                    inputs=star_inputs(constellation, star) if star is not None else None,
                    revision=kind,
                    detail={"version": version, "edit": _edit_line(edit)},
                )
            )
        for star_id, because in downstream(constellation, revised).items():
            self._buffer.append(
                UpdateNode(
                    star_node_id(cid, star_id),
                    stale=True,
                    revision="stale",
                    detail={"version": version, "because": sorted(because)},
                )
            )

    def _finished(
        self, constellation: Constellation, event: ConstellationFinished, rid: str
    ) -> None:
        cid = constellation.id
        failed = constellation.stars.get(event.failed_star or "")
        self._buffer.append(
            UpdateNode(
                constellation_node_id(cid),
                status=event.status,
                finished_at=self.clock(),
                output={
                    "status": event.status,
                    "version": constellation.version,
                    "failed_star": event.failed_star,
                    "error": error_kind(failed.error) if failed and failed.error else None,
                    "no_capable_device": event.no_capable_device,
                },
                revision="finished",
                detail={"status": event.status},
            )
        )
        self.flush()
        if self.failure is not None:
            return
        record = self.tree.request(rid)
        if record is None:
            return
        summary = consolidate(
            record, self.tree.nodes(rid), self.tree.revisions(rid), constellation, event
        )
        self._buffer.append(
            UpdateRequest(
                rid, status=event.status, constellation_id=cid, summary=summary, finished=True
            )
        )
        self.flush()
        self._requests.pop(cid, None)
        if self.failure is None and self.on_consolidated is not None:
            self.on_consolidated(rid)

    # -- writing --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what is buffered, in one transaction."""
        if not self._buffer or self.failure is not None:
            return
        operations, self._buffer = self._buffer, []
        self._flushed = self.clock()
        try:
            self.tree.apply(operations)
        except StoreError as exc:
            self._failed(exc)

    def _failed(self, exc: StoreError) -> None:
        self.failure = exc
        self._buffer = []
        log.error("task memory recording stopped: %s", exc)

    def _constellation(self, cid: str) -> Constellation | None:
        try:
            return self.lookup(cid)
        except Exception:  # the orchestrator no longer knows it
            return None


# ------------------------------------------------------------------------------ consolidation


def consolidate(
    record: RequestRecord,
    nodes: Sequence[MemoryNode],
    revisions: Mapping[str, Sequence[NodeRevision]],
    final: Constellation,
    finished: ConstellationFinished,
) -> dict[str, Any]:
    """The compact memory of a request whose constellation `final` just finished: what was
    asked, the plan that finally ran, the outcome, what failed and how it was repaired,
    and the fleet it ran on. Bounded; no raw device text."""
    by_id = {node.id: node for node in nodes}
    constellations = [node for node in nodes if node.kind == "constellation"]
    final_node = by_id.get(constellation_node_id(final.id))
    failed = final.stars.get(finished.failed_star or "")
    seconds = sum(
        node.finished_at - node.started_at
        for node in constellations
        if node.finished_at is not None and node.started_at is not None
    )
    return {
        "asked": record.text,
        "source": record.source,
        "status": finished.status,
        "plan": plan_of(final),
        "outcome": {
            "status": finished.status,
            "failed_star": finished.failed_star,
            "error": error_kind(failed.error) if failed is not None and failed.error else None,
            "no_capable_device": finished.no_capable_device,
            "stars": {
                star.id: summarise(star).model_dump(mode="json", exclude_defaults=True)
                for star in _stars(final)
            },
        },
        "failures": failures(nodes, revisions, by_id),
        "edits": sum(
            1
            for node in constellations
            for revision in revisions.get(node.id, ())
            if revision.kind == "edited"
        ),
        "constellations": [node.inputs.get("constellation") for node in constellations],
        "fleet": (final_node.inputs.get("fleet") if final_node else None) or [],
        "from_memory": final_node.inputs.get("from_memory") if final_node else None,
        "seconds": round(max(0.0, seconds), 3),
    }


def failures(
    nodes: Sequence[MemoryNode],
    revisions: Mapping[str, Sequence[NodeRevision]],
    by_id: Mapping[str, MemoryNode],
) -> list[dict[str, Any]]:
    """Each failed attempt (and each star that failed without one) and how it was
    repaired: a later attempt, a retry of the constellation, or an edit of the plan."""
    found: list[dict[str, Any]] = []
    succeeded_later: dict[str, list[MemoryNode]] = {}
    for node in nodes:
        if node.kind == "star" and node.status == "succeeded":
            succeeded_later.setdefault(_star_key(node), []).append(node)
    for node in nodes:
        if len(found) >= MAX_FAILURES:
            break
        if node.kind == "attempt" and node.status in ("failed", "timed_out"):
            star = by_id.get(node.parent_id or "")
            if star is None:
                continue
            entry = {
                "constellation": _constellation_of(star),
                "star": _star_key(star),
                "tool": star.inputs.get("tool"),
                "device": node.inputs.get("device"),
                "attempt": node.inputs.get("number"),
                "error": (node.output or {}).get("error") or node.status,
            }
            entry["repaired"] = _repair(node, star, succeeded_later, revisions, by_id)
            found.append(entry)
        elif node.kind == "star" and node.status == "failed" and not _has_attempts(node, nodes):
            entry = {
                "constellation": _constellation_of(node),
                "star": _star_key(node),
                "tool": node.inputs.get("tool"),
                "device": None,
                "attempt": None,
                "error": (node.output or {}).get("error") or "failed",
            }
            entry["repaired"] = _repair(node, node, succeeded_later, revisions, by_id)
            found.append(entry)
    return found


def _repair(
    failure: MemoryNode,
    star: MemoryNode,
    succeeded: Mapping[str, Sequence[MemoryNode]],
    revisions: Mapping[str, Sequence[NodeRevision]],
    by_id: Mapping[str, MemoryNode],
) -> str | None:
    when = failure.finished_at or failure.updated_at
    for later in succeeded.get(_star_key(star), ()):
        if later.id == star.id:
            return "retried: a later attempt succeeded"
        if later.created_at >= failure.created_at:
            return f"run again by retry {_constellation_of(later)}"
    constellation = by_id.get(star.parent_id or "")
    if constellation is not None and constellation.status == "succeeded":
        for revision in revisions.get(constellation.id, ()):
            if revision.kind == "edited" and revision.ts >= when:
                version = revision.detail.get("version")
                rationale = str(revision.detail.get("rationale") or "")[:200]
                return f"plan edited (version {version}): {rationale}".rstrip(": ")
    return None


def _has_attempts(star: MemoryNode, nodes: Iterable[MemoryNode]) -> bool:
    return any(node.parent_id == star.id for node in nodes)


def _star_key(node: MemoryNode) -> str:
    return node.id.rpartition("/")[2]


def _constellation_of(node: MemoryNode) -> str:
    return node.id.partition("-")[2].partition("/")[0]


# ------------------------------------------------------------------------------ plain views


def plan_request_text(constellation: Constellation) -> str:
    """What a plan file asked for, in words: its name and description."""
    if constellation.description:
        return f"{constellation.name}: {constellation.description}"
    return constellation.name


def plan_of(constellation: Constellation) -> dict[str, Any]:
    """The plan a constellation is now (its stars and lines, without run-time state),
    with long texts cut."""
    stars = []
    for star in _stars(constellation):
        spec = star.spec().model_dump(mode="json", by_alias=True, exclude_defaults=True)
        spec["after"] = [
            line.source
            for line in constellation.lines
            if line.target == star.id and line.kind is LineKind.SUCCESS
        ]
        stars.append(_bounded(spec))
    lines = [
        line.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for line in constellation.lines
        if line.kind is not LineKind.SUCCESS
    ]
    return {
        "name": constellation.name,
        "rationale": _cut(constellation.rationale),
        "stars": stars,
        "lines": lines,
    }


def star_inputs(constellation: Constellation, star: Star) -> dict[str, Any]:
    """What a star was given: tool, arguments, device, what it waits for (bounded)."""
    spec = star.spec().model_dump(mode="json", by_alias=True, exclude_defaults=True)
    spec["tool"] = star.effective_tool
    spec["after"] = [line.source for line in constellation.incoming(star.id)]
    bounded: dict[str, Any] = _bounded(spec)
    return bounded


def fleet_shape(devices: Iterable[DeviceInfo]) -> list[dict[str, Any]]:
    """The devices a run had: name, platform, labels, tools, GPU."""
    return [
        {
            "name": device.name,
            "platform": device.platform,
            "labels": sorted(device.labels),
            "tools": sorted(device.tools),
            "gpu": device.gpu,
        }
        for device in sorted(devices, key=lambda d: d.name)[:MAX_FLEET]
    ]


def downstream(constellation: Constellation, revised: Iterable[str]) -> dict[str, set[str]]:
    """The stars downstream of `revised` (not themselves revised), each with the revised
    stars it depends on."""
    outgoing: dict[str, list[str]] = {}
    for line in constellation.lines:
        outgoing.setdefault(line.source, []).append(line.target)
    seeds = set(revised)
    found: dict[str, set[str]] = {}
    for seed in seeds:
        queue = deque(outgoing.get(seed, ()))
        seen: set[str] = set()
        while queue:
            star_id = queue.popleft()
            if star_id in seen:
                continue
            seen.add(star_id)
            if star_id not in seeds:
                found.setdefault(star_id, set()).add(seed)
            queue.extend(outgoing.get(star_id, ()))
    return found


def _stars(constellation: Constellation) -> list[Star]:
    return list(constellation.stars.values())


def _edit_line(edit: Mapping[str, Any]) -> str:
    op = str(edit.get("op", "?"))
    if op in ("add_star",):
        return f"add star {(edit.get('star') or {}).get('id')}"
    if op in ("remove_star", "update_star"):
        return f"{op.replace('_', ' ')} {edit.get('id')}"
    if op == "add_line":
        line = edit.get("line") or {}
        return f"add line {line.get('from')}->{line.get('to')}"
    if op == "remove_line":
        return f"remove line {edit.get('from')}->{edit.get('to')}"
    return op


def _cut(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _bounded(value: Any, depth: int = 0) -> Any:
    """`value` with every string cut to MAX_TEXT and nesting stopped at depth 6."""
    if isinstance(value, str):
        return _cut(value)
    if depth > 6:
        return None
    if isinstance(value, dict):
        return {str(k): _bounded(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [_bounded(v, depth + 1) for v in value[:50]]
    return value
