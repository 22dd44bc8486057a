"""What the orchestrator tells the world: typed events and the stream that carries them.

Every state change of a constellation becomes one event with a sequence number, and so
does every change of the fleet: a device joining, going busy or online, leaving or being
lost; a request being planned; a planner reviewing a run (`review.started`,
`review.finished`, published by `agents.planner.review`); a tool call waiting for a
person. Fleet events that belong to no constellation have `constellation_id == ""`.
Synchronous listeners (the store, a progress display) see each event as it happens;
async subscribers (the GUI, the control API) read from their own queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter

log = logging.getLogger("orrery.events")


@dataclass(slots=True, kw_only=True)
class Event:
    constellation_id: str
    seq: int = 0
    ts: float = 0.0


@dataclass(slots=True, kw_only=True)
class ConstellationSubmitted(Event):
    type: Literal["constellation.submitted"] = "constellation.submitted"
    name: str
    version: int
    stars: int


@dataclass(slots=True, kw_only=True)
class StarReady(Event):
    type: Literal["star.ready"] = "star.ready"
    star_id: str


@dataclass(slots=True, kw_only=True)
class StarStarted(Event):
    type: Literal["star.started"] = "star.started"
    star_id: str
    attempt: int
    device: str


@dataclass(slots=True, kw_only=True)
class StarProgress(Event):
    type: Literal["star.progress"] = "star.progress"
    star_id: str
    attempt: int
    message: str
    stream: str | None = None


@dataclass(slots=True, kw_only=True)
class AttemptFailed(Event):
    type: Literal["attempt.failed"] = "attempt.failed"
    star_id: str
    attempt: int
    device: str
    error: str
    timed_out: bool = False
    will_retry: bool = False


@dataclass(slots=True, kw_only=True)
class StarFinished(Event):
    type: Literal["star.finished"] = "star.finished"
    star_id: str
    status: str
    attempt: int | None = None
    error: str | None = None
    output: Any = None


@dataclass(slots=True, kw_only=True)
class StaleResultIgnored(Event):
    type: Literal["result.stale"] = "result.stale"
    star_id: str
    attempt: int
    current_attempt: int | None


@dataclass(slots=True, kw_only=True)
class EditApplied(Event):
    type: Literal["edit.applied"] = "edit.applied"
    version: int
    rationale: str
    edits: list[dict[str, Any]] = field(default_factory=list)
    undo: bool = False


@dataclass(slots=True, kw_only=True)
class ReviewStarted(Event):
    """The planner began reviewing a running plan (`agents.planner.review`): `reasons` as
    the model is told them ("star s1 failed"), `failed` the stars among them that failed,
    `deadline_s` the seconds it may take before the run goes on by its plan."""

    type: Literal["review.started"] = "review.started"
    reasons: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deadline_s: float = 0.0

    def describe(self) -> str:
        """What a person is shown while it runs: "reviewing the failure of s1"."""
        if self.failed:
            return f"reviewing the failure of {', '.join(self.failed)}"
        return f"reviewing the plan ({'; '.join(self.reasons)})"


ReviewOutcome = Literal["edited", "unchanged", "gave_up", "timed_out", "error"]


@dataclass(slots=True, kw_only=True)
class ReviewFinished(Event):
    """A review ended: `edited` (to `version`), `unchanged` (the plan goes on as it is),
    `gave_up` (the planner failed the run), `timed_out` (the deadline passed: the run goes
    on by its plan and a late answer is discarded) or `error` (the planner had no usable
    answer). `detail` is the model's rationale or the problem; `seconds` the time taken."""

    type: Literal["review.finished"] = "review.finished"
    outcome: ReviewOutcome
    version: int | None = None
    detail: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        """The outcome in words: "edited to version 2 in 3.1s: <rationale>"."""
        said = {
            "edited": f"edited to version {self.version}",
            "unchanged": "plan unchanged",
            "gave_up": "the planner gave up",
            "timed_out": "no answer within the deadline, the run goes on by its plan",
            "error": "planner error, plan unchanged",
        }[self.outcome]
        detail = f": {self.detail}" if self.detail else ""
        return f"{said} ({self.seconds:.1f}s){detail}"


@dataclass(slots=True, kw_only=True)
class ConstellationFinished(Event):
    """The end of a constellation. `failed_star` is the first star whose failure failed
    it; `no_capable_device` is True when that star failed because no connected device
    could run it (a capability gap, not a run-time error)."""

    type: Literal["constellation.finished"] = "constellation.finished"
    status: str
    reason: str | None = None
    failed_star: str | None = None
    no_capable_device: bool = False


@dataclass(slots=True, kw_only=True)
class ApprovalNeeded(Event):
    """A device waits for a person to allow one tool call of a star."""

    type: Literal["approval.needed"] = "approval.needed"
    star_id: str
    attempt: int
    device: str
    request: str
    tool: str
    summary: str


@dataclass(slots=True, kw_only=True)
class ApprovalGiven(Event):
    type: Literal["approval.given"] = "approval.given"
    star_id: str
    request: str
    approved: bool
    by: str = ""
    reason: str = ""


@dataclass(slots=True, kw_only=True)
class DeviceJoined(Event):
    """A device connected (or came back) and can take work: what it offers."""

    type: Literal["device.joined"] = "device.joined"
    device: str
    platform: str
    labels: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    max_tasks: int = 1
    gpu: bool = False
    vram_free_mb: int = 0


@dataclass(slots=True, kw_only=True)
class DeviceStateChanged(Event):
    """A device is now "online", "busy" (every slot taken), "offline" or "lost"."""

    type: Literal["device.state"] = "device.state"
    device: str
    state: str
    reason: str = ""
    running: int = 0


@dataclass(slots=True, kw_only=True)
class DeviceLeft(Event):
    """A device is gone: it said goodbye (`lost` False) or was declared lost."""

    type: Literal["device.left"] = "device.left"
    device: str
    reason: str = ""
    lost: bool = False


@dataclass(slots=True, kw_only=True)
class PlanningStarted(Event):
    """The planner began turning a request in words into a constellation."""

    type: Literal["planning.started"] = "planning.started"
    planning_id: str
    request: str


@dataclass(slots=True, kw_only=True)
class PlanningFinished(Event):
    """The planner is done: `planned` names the new constellation, else `error` says why."""

    type: Literal["planning.finished"] = "planning.finished"
    planning_id: str
    planned: str | None = None
    error: str | None = None
    seconds: float = 0.0


AnyEvent = (
    ConstellationSubmitted
    | StarReady
    | StarStarted
    | StarProgress
    | AttemptFailed
    | StarFinished
    | StaleResultIgnored
    | EditApplied
    | ReviewStarted
    | ReviewFinished
    | ConstellationFinished
    | ApprovalNeeded
    | ApprovalGiven
    | DeviceJoined
    | DeviceStateChanged
    | DeviceLeft
    | PlanningStarted
    | PlanningFinished
)

FLEET_EVENT_TYPES = frozenset(
    {
        "constellation.submitted",
        "constellation.finished",
        "approval.needed",
        "approval.given",
        "device.joined",
        "device.state",
        "device.left",
        "planning.started",
        "planning.finished",
    }
)
"""What a dashboard follows: the fleet and the runs coming and going, without star chatter."""

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def event_to_json(event: Event) -> str:
    """One event as a single JSON line (for `--json` output and the control API)."""
    return _ADAPTER.dump_json(event).decode()  # type: ignore[arg-type]


def event_to_dict(event: Event) -> dict[str, Any]:
    result: dict[str, Any] = _ADAPTER.dump_python(event, mode="json")  # type: ignore[arg-type]
    return result


def event_from_dict(payload: dict[str, Any]) -> Event:
    """The typed event of `event_to_dict`'s output; pydantic's `ValidationError` otherwise."""
    event: Event = _ADAPTER.validate_python(payload)
    return event


def event_type(event: Event) -> str:
    """The event's `type` ("star.finished", "device.state", ...)."""
    return str(getattr(event, "type", ""))


Listener = Callable[[Event], None]


class Subscription:
    """An async iterator over events; ends after its constellation finishes or on `close()`.

    Without a constellation it sees every event (of the `types` given, if any) until closed.
    """

    def __init__(
        self,
        stream: EventStream,
        constellation_id: str | None,
        types: frozenset[str] | None = None,
    ) -> None:
        self._stream = stream
        self._constellation_id = constellation_id
        self._types = types
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def _offer(self, event: Event) -> None:
        if self._constellation_id is not None and event.constellation_id != self._constellation_id:
            return
        if self._types is not None and event_type(event) not in self._types:
            return
        self._queue.put_nowait(event)
        if self._constellation_id is not None and isinstance(event, ConstellationFinished):
            self._queue.put_nowait(None)

    def close(self) -> None:
        self._stream._subscriptions.discard(self)
        self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        try:
            while True:
                event = await self._queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._stream._subscriptions.discard(self)


class EventStream:
    """Numbers events and fans them out to listeners and subscriptions."""

    def __init__(self) -> None:
        self._seq = 0
        self._listeners: list[Listener] = []
        self._subscriptions: set[Subscription] = set()

    def publish(self, event: Event) -> None:
        self._seq += 1
        event.seq = self._seq
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on event #%d", listener, event.seq)
        for subscription in tuple(self._subscriptions):
            subscription._offer(event)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` synchronously for every event; returns a function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    @property
    def last_seq(self) -> int:
        """The sequence number of the last event published (0 before the first)."""
        return self._seq

    def continue_after(self, seq: int) -> None:
        """Number the next event after `seq` (an orchestrator that restarts continues
        after the events its store holds, so new ones are not taken for old ones)."""
        self._seq = max(self._seq, seq)

    def subscribe(
        self, constellation_id: str | None = None, types: frozenset[str] | None = None
    ) -> Subscription:
        """Events from now on, of one constellation (ending when it finishes) or of all
        (of `types` only, if given)."""
        subscription = Subscription(self, constellation_id, types)
        self._subscriptions.add(subscription)
        return subscription
