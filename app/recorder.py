"""Keeps the durable record of runs: every event and the latest snapshot go to the store.

Events are buffered and written in one transaction whenever a star or the constellation
reaches a milestone (finished, edited), so a result is on disk as soon as its star ends
while progress chatter costs no extra writes. A star's start and a failed attempt are
written (without a snapshot) as they happen, before the orchestrator sends the attempt
out: a restarted orchestrator knows every attempt number it gave out
(`app.runtime.recovery`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agents.constellation import Constellation
from agents.events import (
    AttemptFailed,
    ConstellationFinished,
    ConstellationSubmitted,
    EditApplied,
    Event,
    StarFinished,
    StarStarted,
    event_to_dict,
)
from memory import EventRecordIn, Store, StoreError

log = logging.getLogger("orrery.recorder")

_MILESTONES = (ConstellationSubmitted, StarFinished, EditApplied, ConstellationFinished)
_DISPATCHES = (StarStarted, AttemptFailed)  # stored before the attempt goes out
MAX_BUFFERED = 500
MAX_HELD = 100_000


class RunRecorder:
    """An `EventStream` listener writing to a `Store`; `lookup` gives a constellation by id."""

    def __init__(self, store: Store, lookup: Callable[[str], Constellation]) -> None:
        self.store = store
        self.lookup = lookup
        self._buffer: list[EventRecordIn] = []
        self._reasons: dict[str, str | None] = {}
        self._unsaved: set[str] = set()  # constellations whose snapshot is not written yet
        self.failure: StoreError | None = None  # the store's error while it fails
        self.stopped = False  # it failed for longer than MAX_HELD events: no more records

    def __call__(self, event: Event) -> None:
        if self.stopped or not event.constellation_id:
            return  # fleet events (devices, planning) are not part of a run's record
        if isinstance(event, ConstellationFinished):
            self._reasons[event.constellation_id] = event.reason
        payload = event_to_dict(event)
        self._buffer.append(
            EventRecordIn(
                constellation_id=event.constellation_id,
                seq=event.seq,
                type=str(payload["type"]),
                ts=time.time(),
                payload=payload,
            )
        )
        if isinstance(event, _MILESTONES) or len(self._buffer) >= MAX_BUFFERED:
            self.flush(snapshot_of=event.constellation_id)
        elif isinstance(event, _DISPATCHES):
            self.flush()

    def flush(self, snapshot_of: str | None = None) -> None:
        """Write buffered events (and a snapshot of one constellation) in one go.

        When the store fails (a full or read-only disk) the run goes on (its result matters
        more than its record): the events are held, and written with fresh snapshots at
        the next flush that succeeds; after `MAX_HELD` held events recording stops.
        """
        if snapshot_of is not None:
            self._unsaved.add(snapshot_of)
        try:
            for constellation_id in sorted(self._unsaved):
                self._save(self.lookup(constellation_id))
                self._unsaved.discard(constellation_id)
            if self._buffer:
                self.store.append_events(self._buffer)
                self._buffer = []
        except StoreError as exc:
            if self.failure is None:
                log.error("recording paused, events are held until the store works: %s", exc)
            self.failure = exc
            if len(self._buffer) > MAX_HELD:
                self.stopped = True
                self._buffer, self._unsaved = [], set()
                log.error("recording stopped: the store failed for %d events", MAX_HELD)
            return
        if self.failure is not None:
            log.warning("recording resumed: the store works again")
            self.failure = None

    def _save(self, constellation: Constellation) -> None:
        finished = constellation.status.terminal
        self.store.save_constellation(
            constellation.id,
            name=constellation.name,
            status=constellation.status.value,
            version=constellation.version,
            snapshot=constellation.model_dump(mode="json", by_alias=True),
            reason=self._reasons.get(constellation.id),
            finished=finished,
        )
