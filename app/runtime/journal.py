"""The runtime's memory of recent events, for subscribers that start late or reconnect.

`EventJournal` listens to the event stream and keeps, by constellation, every event of
the constellations in memory (whole while they run; of finished ones, the last
`keep_finished`), and, for the fleet-wide stream, the last `keep_fleet` events of all
kinds. Older events of a constellation are replayed from the store, which has them all;
older fleet events are gone, and a replay that cannot reach back says so (`truncated`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Collection

from agents.events import ConstellationFinished, Event, event_type

KEEP_FINISHED = 64
KEEP_FLEET = 10_000


class EventJournal:
    """An `EventStream` listener; see the module docstring."""

    def __init__(self, keep_finished: int = KEEP_FINISHED, keep_fleet: int = KEEP_FLEET) -> None:
        self._logs: dict[str, list[Event]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._keep = keep_finished
        self._fleet: deque[Event] = deque(maxlen=keep_fleet)
        self._dropped_upto = 0  # the seq of the newest event no longer in `_fleet`

    def __call__(self, event: Event) -> None:
        if len(self._fleet) == self._fleet.maxlen:
            self._dropped_upto = self._fleet[0].seq
        self._fleet.append(event)
        cid = event.constellation_id
        if not cid:
            return
        self._logs.setdefault(cid, []).append(event)
        if isinstance(event, ConstellationFinished):
            self._finished[cid] = None
            while len(self._finished) > self._keep:
                old, _ = self._finished.popitem(last=False)
                self._logs.pop(old, None)

    def preload(self, constellation_id: str, events: list[Event]) -> None:
        """Keep `events` (read back from the store) as the start of a constellation's
        log: one an earlier orchestrator process ran and this one takes up."""
        self._logs[constellation_id] = [*events, *self._logs.get(constellation_id, ())]

    def has(self, constellation_id: str) -> bool:
        return constellation_id in self._logs

    def after(self, constellation_id: str, after_seq: int) -> list[Event]:
        """The kept events of one constellation numbered after `after_seq`."""
        return [e for e in self._logs.get(constellation_id, ()) if e.seq > after_seq]

    def fleet_after(
        self, after_seq: int, types: Collection[str] | None = None
    ) -> tuple[list[Event], bool]:
        """(kept events of every kind numbered after `after_seq`, of `types` if given;
        whether some events after `after_seq` are no longer kept)."""
        truncated = after_seq < self._dropped_upto
        events = [
            e
            for e in self._fleet
            if e.seq > after_seq and (types is None or event_type(e) in types)
        ]
        return events, truncated
