"""Crash recovery: the runs an orchestrator process left unfinished, taken up again.

An orchestrator that stops on purpose cancels what it runs ("the orchestrator stopped");
one that is killed leaves constellations `running` in the store. `recover` rebuilds each
of them when the next process starts on the same data dir:

- the last snapshot (`RunRecorder` writes one at every finished star, edit and start), plus
  the `star.started` and `attempt.failed` events recorded after it (each is stored before
  its `task.assign` goes out: `RunRecorder` flushes on them), give every star its state
  and every attempt its number and device;
- what finished stays finished: a star that succeeded is never dispatched again;
- an attempt that was out on a device is adopted back with the same number
  (`Orchestrator.resume`, `AipDispatcher.adopt`): its result, if the store already has it
  (stored before the crash, never applied), is applied at once; otherwise the device
  reports it when it reconnects (running: its result is taken; in its outbox: re-sent and
  taken; neither: interrupted, retried at once); a device that does not come back within
  the reconnect grace is lost and its attempts retried;
- the event numbering continues above every number the old process can have used (from
  the clock, in microseconds), and the events stored so far are replayed to clients that
  follow the run (`orrery run --server` reconnecting), so they see it through to its end.
"""

from __future__ import annotations

import logging
import time

from pydantic import ValidationError

from agents.constellation import Attempt, AttemptStatus, Constellation, StarStatus
from agents.events import AttemptFailed, Event, EventStream, StarStarted, event_from_dict
from agents.orchestrator import Orchestrator
from app.runtime.journal import EventJournal
from memory import EventRow, Store, StoreError
from protocol.tasks import TaskResult

log = logging.getLogger("orrery.recovery")

UNFINISHED = ("running", "pending")
"""Stored statuses of a constellation whose orchestrator stopped before it finished."""
MAX_RECOVERED = 10_000


def recover(
    store: Store,
    stream: EventStream,
    journal: EventJournal,
    orchestrator: Orchestrator,
    patience: float,
) -> list[str]:
    """Take up every unfinished constellation of a runtime's store (see the module
    doc); the ids taken up. For `patience` seconds (the devices' reconnect grace) a star
    that no connected device can run waits instead of failing. A constellation whose
    record cannot be read is left as it is (its stream says it was interrupted) with an
    error in the log."""
    rows = [row for status in UNFINISHED for row in store.constellations(MAX_RECOVERED, status)]
    floor = store.last_seq()
    if rows:
        # The old process also numbered events it never stored (progress, devices); a
        # client may have seen those. Numbering from the clock in microseconds puts the new
        # events above any of them (no process publishes one event per microsecond).
        floor = max(floor, time.time_ns() // 1000)
        orchestrator.be_patient(patience)
    stream.continue_after(floor)
    resumed: list[str] = []
    for row in sorted(rows, key=lambda row: row.created_at):
        try:
            constellation = Constellation.model_validate(row.snapshot)
            stored = store.events(row.id)
            results = [TaskResult.model_validate(r.payload) for r in store.results(row.id)]
        except (ValidationError, StoreError) as exc:
            log.error("c=%s cannot be taken up after the restart: %s", row.id, exc)
            continue
        events = _typed(stored)
        catch_up(constellation, events)
        journal.preload(row.id, events)
        orchestrator.resume(constellation, results)
        resumed.append(row.id)
    if resumed:
        log.warning(
            "took up %d constellation(s) an earlier orchestrator left unfinished: %s",
            len(resumed),
            ", ".join(resumed),
        )
    return resumed


def _typed(rows: list[EventRow]) -> list[Event]:
    events = []
    for row in rows:
        try:
            events.append(event_from_dict(row.payload))
        except ValidationError:
            log.warning(
                "c=%s: skipped an unreadable stored event #%d", row.constellation_id, row.seq
            )
    return events


def catch_up(constellation: Constellation, events: list[Event]) -> None:
    """Bring a snapshot up to the attempts its events record after it: an attempt started
    (a new number, on its device) or failed since the snapshot was written."""
    for event in events:
        star = constellation.stars.get(getattr(event, "star_id", ""))
        if star is None or star.status.terminal:
            continue
        if isinstance(event, StarStarted) and event.attempt > len(star.attempts):
            if star.attempts and star.attempts[-1].status is AttemptStatus.RUNNING:
                star.attempts[-1].status = AttemptStatus.FAILED  # superseded: it had ended
            star.attempts.append(
                Attempt(number=event.attempt, device=event.device, started_at=event.ts)
            )
            if star.status is StarStatus.PENDING:
                star.move_to(StarStatus.READY)
            if star.status is StarStatus.READY:
                star.move_to(StarStatus.RUNNING)
        elif isinstance(event, AttemptFailed) and event.attempt == len(star.attempts):
            attempt = star.attempts[-1]
            if attempt.status is AttemptStatus.RUNNING:
                attempt.status = (
                    AttemptStatus.TIMED_OUT if event.timed_out else AttemptStatus.FAILED
                )
                attempt.error = event.error
                attempt.finished_at = event.ts


__all__ = ["UNFINISHED", "catch_up", "recover"]
