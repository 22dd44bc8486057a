"""Keeps the durable record of runs: every event and the latest snapshot go to the store.

Events are buffered and written in one transaction whenever a star or the constellation
reaches a milestone (finished, edited), so a result is on disk as soon as its star ends
while progress chatter costs no extra writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agents.constellation import Constellation
from agents.events import (
    ConstellationFinished,
    ConstellationSubmitted,
    EditApplied,
    Event,
    StarFinished,
    event_to_dict,
)
from memory import EventRecordIn, Store, StoreError

log = logging.getLogger("orrery.recorder")

_MILESTONES = (ConstellationSubmitted, StarFinished, EditApplied, ConstellationFinished)
MAX_BUFFERED = 500


class RunRecorder:
    """An `EventStream` listener writing to a `Store`; `lookup` gives a constellation by id."""

    def __init__(self, store: Store, lookup: Callable[[str], Constellation]) -> None:
        self.store = store
        self.lookup = lookup
        self._buffer: list[EventRecordIn] = []
        self._reasons: dict[str, str | None] = {}
        self.failure: StoreError | None = None

    def __call__(self, event: Event) -> None:
        if self.failure is not None or not event.constellation_id:
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

    def flush(self, snapshot_of: str | None = None) -> None:
        """Write buffered events (and a snapshot of one constellation) in one go."""
        try:
            if snapshot_of is not None:
                self._save(self.lookup(snapshot_of))
            if self._buffer:
                self.store.append_events(self._buffer)
                self._buffer = []
        except StoreError as exc:
            # Keep running: the run's result matters more than its record. Say so loudly.
            self.failure = exc
            log.error("recording stopped: %s", exc)

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
