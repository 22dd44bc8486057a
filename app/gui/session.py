"""The desktop app's link to Orrery: `OrreryApi` calls in, Qt signals out.

`GuiSession` follows the fleet-wide stream and the constellation being shown, and turns
what arrives into signals the widgets draw from; steering (submit, cancel, retry, pin,
approve, enrol) goes straight to the interface. It keeps no run state of its own: the
views change only because an event or a fresh snapshot says so. Every call runs as a
task on the qasync loop, so nothing blocks the UI thread; a refusal becomes `failed`
(a message a person can act on), never an exception in a slot.

A request in words can be looked at first: `propose` asks the interface for a plan that
runs nowhere yet and emits `proposed` (the run shown until then stops being followed);
`start_proposal` runs it and shows the run, `discard_proposal` drops it and shows the
run from before again. One proposal waits at a time: a newer one discards the older.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import QObject, QTimer, Signal

from agents.events import (
    ConstellationFinished,
    EditApplied,
    Event,
    StarFinished,
    StarStarted,
)
from app.control.messages import (
    DeviceEntry,
    HistoryEntry,
    PendingApprovalInfo,
    Proposal,
    Snapshot,
)
from app.errors import OrreryError
from app.interface import OrreryApi, Run

log = logging.getLogger("orrery.gui")

T = TypeVar("T")

SNAPSHOT_EVERY = 0.25  # seconds between snapshot refreshes while events arrive


class GuiSession(QObject):
    """See the module docstring. `api` is the runtime in process or a remote client."""

    fleet_event = Signal(object)  # every fleet-wide event (agents.events.Event)
    run_event = Signal(object)  # an event of the constellation shown
    shown = Signal(object)  # a Snapshot: the constellation shown changed (or is new)
    snapshot_changed = Signal(object)  # a fresher Snapshot of the constellation shown
    devices_changed = Signal(list)  # [DeviceEntry]
    approvals_changed = Signal(list)  # [PendingApprovalInfo]
    history_changed = Signal(list)  # [HistoryEntry]
    planning = Signal(str)  # a request is being planned ("" when done)
    proposed = Signal(object)  # a Proposal to review: planned, nothing run yet
    proposal_closed = Signal()  # the proposal shown was started, discarded or refused
    failed = Signal(str)  # a refusal or an error, said for a person
    notice = Signal(str, str)  # (title, message) worth a tray notification

    def __init__(self, api: OrreryApi, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.api = api
        self.current: str | None = None  # the constellation shown
        self.current_live = False
        self.snapshot: Snapshot | None = None
        self.proposal: Proposal | None = None  # the plan waiting for Start or Discard
        self._shown_before: str | None = None  # what was shown when it was proposed
        self.last_ts = 0.0  # the orchestrator clock of the newest event seen
        self.last_ts_at = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._follow: asyncio.Task[None] | None = None
        self._fleet: asyncio.Task[None] | None = None
        self._refresh = QTimer(self)
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(int(SNAPSHOT_EVERY * 1000))
        self._refresh.timeout.connect(lambda: self._spawn(self._refresh_snapshot()))

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Read devices, approvals and history once, then follow the fleet stream."""
        self._spawn(self.reload())
        self._fleet = self._spawn(self._follow_fleet())

    async def stop(self) -> None:
        self._refresh.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def reload(self) -> None:
        """Read the lists afresh (at start, and when the fleet stream was truncated)."""
        await self._guard(self._reload_lists())

    async def _reload_lists(self) -> None:
        self.devices_changed.emit(await self.api.devices())
        self.approvals_changed.emit(await self.api.approvals())
        self.history_changed.emit(await self.api.history(limit=200))

    # ---------------------------------------------------------------- steering

    def submit(self, target: str | Path) -> None:
        """Run a plan file, plan text or a request in words, and show it."""
        self._spawn(self._submit(target))

    async def _submit(self, target: str | Path) -> None:
        words = isinstance(target, str) and not _is_plan_text(target)
        if words:
            self.planning.emit(str(target))
        try:
            run = await self._guard(self.api.submit(target))
        finally:
            if words:
                self.planning.emit("")
        if run is not None:
            await self.show(run.id)

    def propose(self, request: str) -> None:
        """Plan a request in words and show the plan for review (`proposed`); nothing
        runs until `start_proposal`."""
        self._spawn(self._propose(request))

    async def _propose(self, request: str) -> None:
        self.planning.emit(request)
        try:
            proposal = await self._guard(self.api.propose(request))
        finally:
            self.planning.emit("")
        if proposal is None:
            return
        if self.proposal is not None:  # a newer plan replaces the one waiting
            await self._guard(self.api.discard_proposal(self.proposal.proposal))
        else:
            self._shown_before = self.current
        self._stop_following()
        self.proposal = proposal
        self.proposed.emit(proposal)

    def start_proposal(self) -> None:
        """Run the proposal under review, and show the run."""
        proposal = self._close_proposal()
        if proposal is not None:
            self._spawn(self._start(proposal))

    async def _start(self, proposal: Proposal) -> None:
        run = await self._guard(self.api.start_proposal(proposal.proposal))
        if run is not None:
            await self.show(run.id)
        else:  # refused (it expired meanwhile, say): `failed` said why
            await self._show_again()

    def discard_proposal(self) -> None:
        """Drop the proposal under review (nothing of it runs); show what was shown before."""
        proposal = self._close_proposal()
        if proposal is not None:
            self._spawn(self._discard(proposal))

    async def _discard(self, proposal: Proposal) -> None:
        await self._guard(self.api.discard_proposal(proposal.proposal))
        await self._show_again()

    def _close_proposal(self) -> Proposal | None:
        proposal, self.proposal = self.proposal, None
        if proposal is not None:
            self.proposal_closed.emit()
        return proposal

    async def _show_again(self) -> None:
        before, self._shown_before = self._shown_before, None
        if before is not None and self.current is None and self.proposal is None:
            await self.show(before)  # unless another run was opened meanwhile

    def _stop_following(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            self._follow = None
        self.current = None
        self.current_live = False
        self.snapshot = None

    def cancel_run(self) -> None:
        if self.current is not None:
            cid = self.current
            self._spawn(self._guard(self.api.cancel(cid, "cancelled in the desktop app")))

    def cancel_star(self, star_id: str) -> None:
        if self.current is not None:
            cid = self.current
            self._spawn(self._guard(self.api.cancel_star(cid, star_id, "cancelled in the app")))

    def retry(self, star_id: str | None = None) -> None:
        """Retry the shown run from `star_id` (or from every failure)."""
        if self.current is not None:
            self._spawn(self._retry(self.current, star_id))

    async def _retry(self, cid: str, star_id: str | None) -> None:
        run = await self._guard(self.api.retry(cid, star_id))
        if run is not None:
            await self.show(run.id)

    def pin(self, star_id: str, device: str) -> None:
        if self.current is not None:
            self._spawn(self._guard(self.api.pin_star(self.current, star_id, device)))

    def approve(self, request: str, approved: bool, reason: str = "") -> None:
        self._spawn(self._approve(request, approved, reason))

    async def _approve(self, request: str, approved: bool, reason: str) -> None:
        await self._guard(self.api.approve(request, approved, reason))
        await self._guard(self._approvals())

    def enroll(self, name: str, done: Callable[[str], None]) -> None:
        """Enrol device `name`; `done(token)` is called with its token once made."""

        async def enrol() -> None:
            token = await self._guard(self.api.enroll(name))
            if token is not None:
                done(token)
                await self._guard(self._devices())

        self._spawn(enrol())

    def refresh(self) -> None:
        """Read the shown constellation's snapshot afresh (the view asks after a gap)."""
        self._spawn(self._refresh_snapshot(reshow=True))

    def refresh_devices(self) -> None:
        self._spawn(self._guard(self._devices()))

    def run_again(self, constellation_id: str) -> None:
        """Run a past constellation's plan again, from the start, as a new run."""
        self._spawn(self._run_again(constellation_id))

    async def _run_again(self, constellation_id: str) -> None:
        snapshot = await self._guard(self.api.constellation(constellation_id))
        if snapshot is not None:
            await self._submit(plan_of(snapshot.constellation))

    # ---------------------------------------------------------------- showing a run

    async def show(self, constellation_id: str) -> None:
        """Show one constellation: its snapshot, then (if it runs) its events as they come."""
        snapshot = await self._guard(self.api.constellation(constellation_id))
        if snapshot is None:
            return
        if self._follow is not None:
            self._follow.cancel()
        self.current = snapshot.constellation_id
        self.current_live = snapshot.live and snapshot.status in ("pending", "running")
        self.snapshot = snapshot
        self.shown.emit(snapshot)
        self._follow = self._spawn(self._follow_run(Run(self.api, snapshot.constellation_id)))

    def open(self, constellation_id: str) -> None:
        self._spawn(self.show(constellation_id))

    async def _follow_run(self, run: Run) -> None:
        with contextlib.suppress(OrreryError):
            async for event in run.events():
                if run.id != self.current:
                    return
                self._saw(event)
                self.run_event.emit(event)
                changed = isinstance(event, StarStarted | StarFinished | EditApplied)
                if changed and not self._refresh.isActive():
                    self._refresh.start()
                if isinstance(event, EditApplied):
                    await self._refresh_snapshot(reshow=True)
                if isinstance(event, ConstellationFinished):
                    self.current_live = False
                    await self._refresh_snapshot()
                    self.notice.emit(
                        f"run {event.status}", f"{run.id}: {event.reason or event.status}"
                    )

    async def _refresh_snapshot(self, *, reshow: bool = False) -> None:
        cid = self.current
        if cid is None:
            return
        snapshot = await self._guard(self.api.constellation(cid))
        if snapshot is None or cid != self.current:
            return
        self.snapshot = snapshot
        (self.shown if reshow else self.snapshot_changed).emit(snapshot)

    # ---------------------------------------------------------------- the fleet

    async def _follow_fleet(self) -> None:
        from agents.events import FLEET_EVENT_TYPES

        while True:
            try:
                async for event in self.api.events(types=FLEET_EVENT_TYPES):
                    self._saw(event)
                    self.fleet_event.emit(event)
                    kind = getattr(event, "type", "")
                    if kind.startswith("device."):
                        await self._guard(self._devices())
                    elif kind.startswith("approval."):
                        await self._guard(self._approvals())
                        if kind == "approval.needed":
                            self.notice.emit(
                                "approval needed",
                                f"{getattr(event, 'device', '')}: {getattr(event, 'summary', '')}",
                            )
                    elif kind in ("constellation.submitted", "constellation.finished"):
                        await self._guard(self._history())
            except OrreryError as exc:
                self.failed.emit(f"lost the event stream: {exc}; reconnecting")
                await asyncio.sleep(1.0)
                await self.reload()

    async def _devices(self) -> None:
        self.devices_changed.emit(await self.api.devices())

    async def _approvals(self) -> None:
        self.approvals_changed.emit(await self.api.approvals())

    async def _history(self) -> None:
        self.history_changed.emit(await self.api.history(limit=200))

    # ---------------------------------------------------------------- helpers

    def now(self) -> float:
        """The orchestrator clock now, estimated from the newest event's timestamp."""
        return self.last_ts + (time.monotonic() - self.last_ts_at)

    def _saw(self, event: Event) -> None:
        if event.ts > self.last_ts:
            self.last_ts, self.last_ts_at = event.ts, time.monotonic()

    async def _guard(self, call: Awaitable[T]) -> T | None:
        """`call`'s result; a refusal or error is said through `failed` (None returned)."""
        try:
            return await call
        except OrreryError as exc:
            self.failed.emit(str(getattr(exc, "reason", None) or exc))
        except (OSError, ValueError) as exc:
            self.failed.emit(str(exc))
        return None

    def _spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("a desktop app task failed", exc_info=error)
            self.failed.emit(f"{type(error).__name__}: {error}")


def plan_of(constellation: dict[str, Any]) -> str:
    """A constellation's plan as plan-file YAML (what ran, not how it went)."""
    from agents.constellation import PlanSpec, StarSpec
    from agents.constellation.plan_file import plan_to_yaml

    fields = set(StarSpec.model_fields)
    stars = [
        {key: value for key, value in star.items() if key in fields}
        for star in (constellation.get("stars") or {}).values()
    ]
    spec = PlanSpec.model_validate(
        {
            "name": constellation.get("name", "again"),
            "description": constellation.get("description", ""),
            "rationale": constellation.get("rationale", ""),
            "stars": stars,
            "lines": constellation.get("lines") or [],
        }
    )
    return plan_to_yaml(spec)


def _is_plan_text(text: str) -> bool:
    from app.interface import looks_like_plan

    return looks_like_plan(text)


__all__ = ["DeviceEntry", "GuiSession", "HistoryEntry", "PendingApprovalInfo"]
