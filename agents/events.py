"""What the orchestrator tells the world: typed events and the stream that carries them.

Every state change of a constellation becomes one event with a sequence number.
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


AnyEvent = (
    ConstellationSubmitted
    | StarReady
    | StarStarted
    | StarProgress
    | AttemptFailed
    | StarFinished
    | StaleResultIgnored
    | EditApplied
    | ConstellationFinished
    | ApprovalNeeded
    | ApprovalGiven
)

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def event_to_json(event: Event) -> str:
    """One event as a single JSON line (for `--json` output and the control API)."""
    return _ADAPTER.dump_json(event).decode()  # type: ignore[arg-type]


def event_to_dict(event: Event) -> dict[str, Any]:
    result: dict[str, Any] = _ADAPTER.dump_python(event, mode="json")  # type: ignore[arg-type]
    return result


Listener = Callable[[Event], None]


class Subscription:
    """An async iterator over events; ends after its constellation finishes or on `close()`."""

    def __init__(self, stream: EventStream, constellation_id: str | None) -> None:
        self._stream = stream
        self._constellation_id = constellation_id
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def _offer(self, event: Event) -> None:
        if self._constellation_id is not None and event.constellation_id != self._constellation_id:
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

    def subscribe(self, constellation_id: str | None = None) -> Subscription:
        """Events from now on, of one constellation (ending when it finishes) or of all."""
        subscription = Subscription(self, constellation_id)
        self._subscriptions.add(subscription)
        return subscription
