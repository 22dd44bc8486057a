"""What the constellation view shows, without Qt: a state per star and a kind per line.

`ConstellationModel.set_snapshot(constellation)` reads a constellation as the interface
serialises it (`Snapshot.constellation`, i.e. `Constellation.model_dump(mode="json",
by_alias=True)`); `apply(event)` then follows the typed events of `agents.events` and
returns the ids of the stars whose drawing changed. An `edit.applied` changes the shape of
the graph: the model only notes it (`outdated`), and the owner reads a fresh snapshot and
calls `set_snapshot` again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agents.events import (
    ApprovalGiven,
    ApprovalNeeded,
    AttemptFailed,
    ConstellationFinished,
    EditApplied,
    Event,
    StarFinished,
    StarProgress,
    StarReady,
    StarStarted,
)

Edge = tuple[str, str]

PROGRESS_LIMIT = 160
"""Characters of a progress message or an error kept for the drawing."""


class StarState(StrEnum):
    """What a person sees a star doing (finer than the orchestrator's status)."""

    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    APPROVAL = "approval"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_LABELS = {
    StarState.WAITING: "waiting",
    StarState.READY: "ready",
    StarState.RUNNING: "running",
    StarState.APPROVAL: "waiting for approval",
    StarState.RETRYING: "retrying",
    StarState.SUCCEEDED: "succeeded",
    StarState.FAILED: "failed",
    StarState.SKIPPED: "skipped",
    StarState.CANCELLED: "cancelled",
}
_FINISHED = frozenset(
    {StarState.SUCCEEDED, StarState.FAILED, StarState.SKIPPED, StarState.CANCELLED}
)
_BY_STATUS = {
    "pending": StarState.WAITING,
    "ready": StarState.READY,
    "running": StarState.RUNNING,
    "succeeded": StarState.SUCCEEDED,
    "failed": StarState.FAILED,
    "skipped": StarState.SKIPPED,
    "cancelled": StarState.CANCELLED,
}


@dataclass(slots=True)
class StarView:
    """One star as drawn."""

    id: str
    title: str = ""
    tool: str = "agent.do"
    state: StarState = StarState.WAITING
    device: str = ""
    """The device of the last attempt ("" before the first)."""
    attempt: int = 0
    """The number of the last attempt (0 before the first)."""
    attempts_allowed: int = 1
    progress: str = ""
    """The last progress message of the running attempt."""
    error: str = ""
    approvals: set[str] = field(default_factory=set)
    """Approval requests of this star waiting for a person."""

    @property
    def badge(self) -> str:
        """ "#N" once a star is on its second attempt or later, else ""."""
        return f"#{self.attempt}" if self.attempt > 1 else ""

    @property
    def detail(self) -> str:
        """The third line of the drawing: progress while it runs, else why it stopped."""
        if self.state in (StarState.RUNNING, StarState.APPROVAL) and self.progress:
            return self.progress
        if self.state in (StarState.FAILED, StarState.RETRYING, StarState.CANCELLED):
            return self.error
        if self.state is StarState.SKIPPED:
            return self.error
        return ""

    def tooltip(self) -> str:
        lines = [self.id if not self.title else f"{self.title} ({self.id})"]
        lines.append(f"{self.state.label} · {self.tool}")
        if self.device:
            attempt = f", attempt {self.attempt}/{self.attempts_allowed}" if self.attempt else ""
            lines.append(f"on {self.device}{attempt}")
        if self.approvals:
            lines.append("a tool call waits for your approval")
        if self.progress and not self.state.finished:
            lines.append(self.progress)
        if self.error:
            lines.append(self.error)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class LineView:
    """One line as drawn: its kind and, for a condition, its predicate in words."""

    source: str
    target: str
    kind: str = "success"
    predicate: str = ""

    @property
    def key(self) -> Edge:
        return (self.source, self.target)

    def tooltip(self) -> str:
        head = f"{self.source} → {self.target}: {self.kind}"
        return f"{head}\nwhen {self.predicate}" if self.predicate else head


@dataclass(frozen=True, slots=True)
class SnapshotChange:
    """What a new snapshot changed."""

    new_constellation: bool
    added: frozenset[str]
    removed: frozenset[str]
    changed: frozenset[str]
    """Stars (kept) whose drawing changed."""
    lines_changed: bool
    redrawn_lines: frozenset[Edge] = frozenset()
    """Lines that are new or whose kind or predicate changed."""


class ConstellationModel:
    """The drawable state of one constellation."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.status = ""
        self.version = 0
        self.retry_of: str | None = None
        self.notes: list[str] = []
        """What the drawing cannot show: fan-outs that take joining devices."""
        self.stars: dict[str, StarView] = {}
        self.lines: dict[Edge, LineView] = {}
        self.line_kinds: frozenset[str] = frozenset()
        """The kinds of line the constellation has (for the legend)."""
        self.newest_version = 0
        """The highest version seen, in a snapshot or an `edit.applied`."""
        self._fleet: list[str] = []
        self._seen: dict[str, None] = {}
        """Devices stars of this constellation ran on, in the order first seen."""
        self._summary: tuple[list[str], dict[StarState, int]] | None = None
        self._raw: dict[str, Any] = {}

    @property
    def outdated(self) -> bool:
        """An edit was applied after the snapshot shown: read a fresh one."""
        return self.newest_version > self.version

    # -------------------------------------------------------------- snapshot

    def set_snapshot(
        self, constellation: Mapping[str, Any], *, approvals: Iterable[tuple[str, str]] = ()
    ) -> SnapshotChange:
        """Take the state of `constellation` (a serialised `Constellation`). `approvals`
        are the (star id, request id) pairs waiting for a person (from `approvals()`)."""
        cid = str(constellation.get("id", ""))
        new = cid != self.id or not self.stars
        self.id = cid
        self.name = str(constellation.get("name", ""))
        self.status = str(constellation.get("status", ""))
        self.version = int(constellation.get("version") or 0)
        self.newest_version = self.version if new else max(self.newest_version, self.version)
        retry_of = constellation.get("retry_of")
        self.retry_of = str(retry_of) if retry_of else None
        self.notes = fan_out_notes(constellation)
        if new:
            self._seen = {}
        waiting: dict[str, set[str]] = {}
        for star_id, request in approvals:
            waiting.setdefault(star_id, set()).add(request)
        raw: Mapping[str, Any] = constellation.get("stars") or {}
        stars: dict[str, StarView] = {}
        changed: set[str] = set()
        shown = ({} if new else self.stars).get
        told = ({} if new else self._raw).get
        for star_id, data in raw.items():
            before = shown(star_id)
            if before is not None and told(star_id) == data and star_id not in waiting:
                stars[before.id] = before  # nothing new about it: keep what events told
                continue
            star = _star_from(str(star_id), data, waiting.get(str(star_id), set()))
            if before is not None and star.state is before.state and not star.state.finished:
                star.progress = before.progress  # a snapshot does not carry progress
            if before is not None and before == star:
                star = before  # the same drawing: the item keeps its star
            elif before is not None:
                changed.add(star.id)
            stars[star.id] = star
        lines: dict[Edge, LineView] = {}
        redrawn: set[Edge] = set()
        for a, b, kind, predicate in _lines_of(constellation):
            known = self.lines.get((a, b))
            if known is not None and known.kind == kind and known.predicate == predicate:
                lines[(a, b)] = known
            else:
                lines[(a, b)] = LineView(a, b, kind, predicate)
                redrawn.add((a, b))
        added = frozenset(stars) if new else frozenset(stars.keys() - self.stars.keys())
        removed = frozenset(self.stars) if new else frozenset(self.stars.keys() - stars.keys())
        lines_changed = new or bool(redrawn) or len(lines) != len(self.lines)
        self.stars, self.lines = stars, lines
        if lines_changed:
            self.line_kinds = frozenset(line.kind for line in lines.values())
        self._raw = dict(raw)
        self._summary = None
        return SnapshotChange(
            new, added, removed, frozenset(changed), lines_changed, frozenset(redrawn)
        )

    # -------------------------------------------------------------- devices

    def set_fleet(self, devices: Iterable[str]) -> None:
        """The fleet's devices in a stable order (from `devices()`): their legend colours
        stay the same in every constellation shown."""
        self._fleet = list(dict.fromkeys(devices))
        self._summary = None

    @property
    def devices(self) -> list[str]:
        """The fleet's devices, then any other device a star of this constellation ran
        on, in the order first seen: a device keeps its place (and its colour) as stars
        move between devices."""
        return list(self._summarise()[0])

    def counts(self) -> dict[StarState, int]:
        """Stars per state, in the order of `StarState`."""
        return dict(self._summarise()[1])

    def _summarise(self) -> tuple[list[str], dict[StarState, int]]:
        """Devices and counts, kept until a star changes (the legend asks often)."""
        if self._summary is None:
            counts = dict.fromkeys(StarState, 0)
            for star in self.stars.values():
                counts[star.state] += 1
                if star.device:
                    self._seen.setdefault(star.device)
            devices = dict.fromkeys(self._fleet)
            devices.update(self._seen)
            self._summary = (list(devices), counts)
        return self._summary

    # -------------------------------------------------------------- events

    def apply(self, event: Event) -> frozenset[str]:
        """Follow one event of this constellation; the stars whose drawing changed.
        Events of other constellations and of the fleet change nothing."""
        if event.constellation_id != self.id or not self.id:
            return frozenset()
        if isinstance(event, EditApplied):
            self.newest_version = max(self.newest_version, event.version)
            return frozenset()
        if isinstance(event, ConstellationFinished):
            self.status = event.status
            return frozenset()
        star_id = getattr(event, "star_id", None)
        star = self.stars.get(star_id) if isinstance(star_id, str) else None
        if star is None:
            return frozenset()
        before = (star.state, star.device, star.attempt, star.progress, star.error)
        _follow(star, event)
        after = (star.state, star.device, star.attempt, star.progress, star.error)
        if after == before:
            return frozenset()
        self._summary = None
        return frozenset({star.id})


def _follow(star: StarView, event: Event) -> None:
    finished = star.state.finished
    if isinstance(event, StarReady):
        if not finished:
            star.state = StarState.READY
    elif isinstance(event, StarStarted):
        if not finished and event.attempt >= star.attempt:
            star.state = StarState.APPROVAL if star.approvals else StarState.RUNNING
            star.attempt, star.device, star.progress = event.attempt, event.device, ""
    elif isinstance(event, StarProgress):
        if not finished and event.attempt == star.attempt:
            star.progress = _one_line(event.message)
    elif isinstance(event, AttemptFailed):
        if event.attempt >= star.attempt:
            star.attempt, star.device = event.attempt, event.device or star.device
            star.error = _one_line(event.error)
            star.approvals.clear()
            if event.will_retry and not finished:
                star.state, star.progress = StarState.RETRYING, ""
    elif isinstance(event, StarFinished):
        star.state = _BY_STATUS.get(event.status, star.state)
        star.approvals.clear()
        if event.attempt:
            star.attempt = max(star.attempt, event.attempt)
        star.error = _one_line(event.error) if event.error else star.error
        if star.state is StarState.SUCCEEDED:
            star.error = ""
    elif isinstance(event, ApprovalNeeded):
        if not finished:
            star.approvals.add(event.request)
            star.state = StarState.APPROVAL
            if event.device:
                star.device = event.device
    elif isinstance(event, ApprovalGiven):
        star.approvals.discard(event.request)
        if star.state is StarState.APPROVAL and not star.approvals:
            star.state = StarState.RUNNING


def _star_from(star_id: str, data: Mapping[str, Any], approvals: set[str]) -> StarView:
    attempts: list[Mapping[str, Any]] = list(data.get("attempts") or [])
    last = attempts[-1] if attempts else None
    state = _BY_STATUS.get(str(data.get("status", "pending")), StarState.WAITING)
    error = str(data.get("error") or data.get("skip_reason") or "")
    if state is StarState.RUNNING and last is not None:
        if str(last.get("status")) in ("failed", "timed_out"):
            state = StarState.RETRYING
            error = str(last.get("error") or error)
        elif approvals:
            state = StarState.APPROVAL
    tool = data.get("tool") or "agent.do"
    return StarView(
        id=star_id,
        title=str(data.get("title") or ""),
        tool=str(tool),
        state=state,
        device=str(last.get("device", "")) if last is not None else "",
        attempt=int(last.get("number", len(attempts))) if last is not None else 0,
        attempts_allowed=int(data.get("retries") or 0) + 1,
        error=_one_line(error),
        approvals=set(approvals) if state is StarState.APPROVAL else set(),
    )


def _one_line(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= PROGRESS_LIMIT else flat[: PROGRESS_LIMIT - 1] + "…"


# ------------------------------------------------------------------ lines


def fan_out_notes(constellation: Mapping[str, Any]) -> list[str]:
    """A line for each fanned-out star of a serialised constellation that takes devices
    joining while it runs (docs/plans.md): from its `fan_out` record once expanded, with
    the devices it has branches on (those that joined later marked), else from the
    stars' own `on: {each: true, joining: true}`."""
    record = constellation.get("fan_out")
    notes: list[str] = []
    if isinstance(record, Mapping):
        accepted = record.get("accepted") or {}
        joined = record.get("joined") or {}
        for star in record.get("stars") or []:
            on = star.get("on") if isinstance(star, Mapping) else None
            if not (isinstance(on, Mapping) and on.get("joining")):
                continue
            star_id = str(star.get("id"))
            devices = [str(name) for name in accepted.get(star_id) or []]
            devices += [f"{name} (joined)" for name in joined.get(star_id) or []]
            notes.append(
                f"{star_id} takes joining devices; branches on {', '.join(devices) or 'none'}"
            )
        return notes
    for star_id, star in (constellation.get("stars") or {}).items():
        on = star.get("on") if isinstance(star, dict | Mapping) else None
        if on and isinstance(on, Mapping) and on.get("each") and on.get("joining"):
            notes.append(f"{star_id} fans out, also to devices that join while it runs")
    return notes


def edges_of(constellation: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(from, to, kind) for every line of a serialised constellation, `after` included."""
    return [(a, b, kind) for a, b, kind, _ in _lines_of(constellation)]


def _lines_of(constellation: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    stars: Mapping[str, Any] = constellation.get("stars") or {}
    lines: dict[Edge, tuple[str, str]] = {}
    for line in constellation.get("lines") or []:
        when = line.get("when")
        kind = str(line.get("kind", "success"))
        lines[(str(line["from"]), str(line["to"]))] = (kind, describe_predicate(when))
    for star_id, star in stars.items():
        for upstream in star.get("after") or []:
            lines.setdefault((str(upstream), str(star_id)), ("success", ""))
    return [(a, b, k, p) for (a, b), (k, p) in lines.items() if a in stars and b in stars]


_OPS = {
    "eq": "=",
    "ne": "≠",
    "lt": "<",
    "le": "≤",
    "gt": ">",
    "ge": "≥",
    "contains": "contains",
    "not_contains": "does not contain",
    "matches": "matches",
    "in": "in",
    "not_in": "not in",
}
_UNARY = {"exists": "exists", "missing": "is missing", "truthy": "is true", "falsy": "is false"}


def describe_predicate(when: Any) -> str:
    """A condition line's predicate in words: `output.returncode = 0 and status = succeeded`."""
    if not when:
        return ""
    if isinstance(when, Mapping):
        if "all" in when:
            return " and ".join(_grouped(p) for p in when["all"])
        if "any" in when:
            return " or ".join(_grouped(p) for p in when["any"])
        if "not" in when:
            return f"not {_grouped(when['not'])}"
        if "path" in when:
            op = str(when.get("op", "eq"))
            if op in _UNARY:
                return f"{when['path']} {_UNARY[op]}"
            value = json.dumps(when.get("value"), ensure_ascii=False)
            return f"{when['path']} {_OPS.get(op, op)} {value}"
    return json.dumps(when, ensure_ascii=False, default=str)


def _grouped(predicate: Any) -> str:
    text = describe_predicate(predicate)
    compound = isinstance(predicate, Mapping) and ("all" in predicate or "any" in predicate)
    return f"({text})" if compound else text
