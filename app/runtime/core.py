"""`Runtime`: the orchestrator and everything around it, behind one typed, async interface.

A runtime owns the event stream, the orchestrator, the recorder that writes every run
to the store, the journal that replays events to late subscribers, the dispatchers
(joined into one `FleetDispatcher`: AIP devices, this machine in process, or both),
the planner and its reviews, the approval policy (all given to its constructor), and
`JoiningDevices`, which gives devices that join the branches of fan-outs that take them.
It satisfies `app.interface.OrreryApi`, the interface the CLI, the desktop app and the
control API server drive; every refusal is a `RequestRejected` with its code.

It never prints, installs signal handlers, reads command-line options or creates an
event loop: use it as `async with Runtime(...) as runtime:` on the caller's loop
(asyncio's, or Qt's through qasync). Serving it on a port is `app.endpoint`'s
job; building one from a data dir is `app.runtime.assembly`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from pydantic import ValidationError

from agents.clock import Clock
from agents.constellation import (
    Constellation,
    NothingToRetry,
    UnknownStar,
    retry_plan,
)
from agents.constellation.fanout import NoFanOutDevice
from agents.dispatch import ApprovalAsked, Dispatcher, UnknownApproval
from agents.events import (
    ApprovalGiven,
    ApprovalNeeded,
    DeviceJoined,
    DeviceStateChanged,
    EditApplied,
    Event,
    EventStream,
    PlanningFinished,
    PlanningStarted,
    Subscription,
    event_from_dict,
)
from agents.fleet_dispatcher import FleetDispatcher
from agents.orchestrator import ConstellationFinishedError, Orchestrator, UnknownConstellation
from agents.remember import MemoryRecorder
from app.control.messages import (
    DeviceEntry,
    Discarded,
    EditEntry,
    ErrorCode,
    HistoryEntry,
    MemoryForgotten,
    MemoryHit,
    MemoryTree,
    PendingApprovalInfo,
    Proposal,
    Snapshot,
)
from app.errors import RequestRejected
from app.interface import Run, read_submission
from app.recorder import RunRecorder
from app.runtime.approval_policy import ApprovalPolicy, ask_a_person
from app.runtime.joining_devices import JoiningDevices
from app.runtime.journal import EventJournal
from app.runtime.memory import RuntimeMemory, memory_hit, memory_tree
from app.runtime.proposals import Ending, Held, ProposalBook, ProposalGone, describe_stars
from app.runtime.recovery import recover
from devices.registry import DeviceInfo
from memory import ConstellationRow, Store, StoreError, UnknownMemory
from memory.errors import RecallUnavailable

log = logging.getLogger("orrery.runtime")

FLEET = "fleet"
"""The `status` a fleet-wide stream reports when it opens."""

PLAN_PARSERS = 2
"""Plans parsed at once, each in a worker thread: a large plan (up to 1 MiB of YAML takes
seconds) never holds the event loop, and a burst of them cannot take every thread."""
PLAN_BUDGET = 30.0
"""Seconds one plan's YAML may take to read in a worker thread before it is refused."""


class Planner(Protocol):
    """Turns requests in words into constellations and reviews the runs it planned
    (`app.planning.RequestPlanner`; a scripted one in tests)."""

    async def plan(self, request: str, devices: Sequence[DeviceInfo]) -> Constellation: ...

    def review_runs(
        self, orchestrator: Orchestrator, devices: Callable[[], Sequence[DeviceInfo]]
    ) -> Callable[[], None]: ...

    def forget(self, constellation_id: str) -> None:
        """A constellation `plan` made will never run (its proposal was discarded)."""
        ...

    async def close(self) -> None: ...


class DevicesMissing(Exception):
    """Fewer devices connected than a run needs, within the time allowed."""


@dataclass(slots=True)
class StreamStart:
    """What a subscriber gets when it subscribes, taken in one step of the event loop so
    no event falls between the replay and the live part, and none is in both.

    `replay` holds typed events (from memory) or event dicts (from the store); `live` is
    None when nothing more will come (the constellation has finished); `interrupted`
    says the record ends without an end (its orchestrator stopped); `truncated` that
    older fleet events were no longer kept."""

    status: str
    replay: list[Event | dict[str, Any]]
    live: Subscription | None
    interrupted: bool = False
    truncated: bool = False


class Runtime:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        dispatchers: Sequence[Dispatcher],
        *,
        planner: Planner | None = None,
        approval_policy: ApprovalPolicy = ask_a_person,
        fleet_tools: Collection[str] = (),
        clock: Clock | None = None,
        memory: RuntimeMemory | None = None,
        proposals: ProposalBook | None = None,
    ) -> None:
        """`fleet_tools`: tools a plan may name although no connected device offers them
        now (those every `orrery device` offers); `planner` None refuses requests in words;
        `memory` the task memory (by default the tree in `store`, without recall), which
        the runtime records every run into and closes with itself; `proposals` holds
        the plans `propose` made until they are started or discarded (by default 32 of
        them, for 15 minutes each)."""
        self.store = store
        self.epoch = uuid.uuid4().hex[:12]
        self.stream = EventStream()
        self.journal = EventJournal()
        self.stream.listen(self.journal)
        self.dispatcher = FleetDispatcher(dispatchers)
        self.orchestrator = Orchestrator(self.dispatcher, events=self.stream, clock=clock)
        self.recorder = RunRecorder(store, self.orchestrator.constellation)
        self.stream.listen(self.recorder)
        self.memory = memory or RuntimeMemory(store)
        self.remembering = MemoryRecorder(
            self.memory.tree,
            self.orchestrator.constellation,
            self.dispatcher.devices,
            on_consolidated=lambda _request: self.memory.index_soon(),
        )
        self.stream.listen(self.remembering)
        self.stream.listen(self._record_device)
        self.stream.listen(self._on_approval_needed)
        self.joining = JoiningDevices(self.orchestrator)
        self.stream.listen(self.joining)
        self.planner = planner
        self.approval_policy = approval_policy
        self.fleet_tools = frozenset(fleet_tools)
        self.proposals = proposals if proposals is not None else ProposalBook()
        self._stop_reviews = (
            planner.review_runs(self.orchestrator, self.dispatcher.devices) if planner else None
        )
        self._started = False
        self._states: dict[str, str] = {}  # device -> its last reported state
        self._parsers = asyncio.Semaphore(PLAN_PARSERS)

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Announce the in-process devices (their `device.joined` events)."""
        if self._started:
            return
        self._started = True
        for dispatcher in self.dispatcher.dispatchers:
            announce = getattr(dispatcher, "announce", None)
            if announce is not None:
                announce()

    def recover(self, patience: float) -> list[str]:
        """Take up the constellations an earlier process on this store left unfinished
        (it was killed); their ids. For `patience` seconds stars wait for devices to
        reconnect rather than fail for want of one. See `app.runtime.recovery`."""
        return recover(self.store, self.stream, self.journal, self.orchestrator, patience)

    async def aclose(self) -> None:
        """Cancel what still runs, stop the dispatchers and the planner, flush the record."""
        for constellation in self.orchestrator.constellations():
            if not constellation.status.terminal:
                self.orchestrator.cancel(constellation.id, "the orchestrator stopped")
        if self._stop_reviews is not None:
            self._stop_reviews()
            self._stop_reviews = None
        for dispatcher in self.dispatcher.dispatchers:
            close = getattr(dispatcher, "aclose", None)
            if close is not None:
                await close()
        if self.planner is not None:
            await self.planner.close()
        self.recorder.flush()
        self.remembering.flush()
        await self.memory.aclose()

    # ---------------------------------------------------------------- submitting

    async def submit(
        self,
        plan_or_request: str | Path | None = None,
        request: str | None = None,
        *,
        plan_text: str | None = None,
        source: str = "<submitted plan>",
    ) -> Run:
        """As `OrreryApi.submit`."""
        try:
            given = await read_submission(plan_or_request, request, plan_text, source)
        except OSError as exc:
            raise RequestRejected.of(
                ErrorCode.INVALID_PLAN, f"{plan_or_request}: cannot read the plan: {exc}", "plan"
            ) from None
        except ValueError as exc:
            raise RequestRejected.of(ErrorCode.MALFORMED, str(exc)) from None
        if given.plan_text is not None:
            constellation = await self.parse_plan_off_loop(given.plan_text, given.source)
        else:
            assert given.request is not None
            return self.start_planned(await self.plan(given.request), given.request)
        return self.start_constellation(constellation)

    def start_planned(self, constellation: Constellation, request: str) -> Run:
        """Run a constellation `plan` made for `request` (after a person looked at it):
        the memory records it as that request's run."""
        self.remembering.note_request(
            constellation.id, request, recalled=self.memory.planned_from(constellation.id)
        )
        return self.start_constellation(constellation)

    # ---------------------------------------------------------------- looking first

    async def propose(self, request: str) -> Proposal:
        """As `OrreryApi.propose`: plan `request` and hold the plan, untouched by any
        device, until `start_proposal` or `discard_proposal` (or it expires)."""
        constellation = await self.plan(request)
        self._sweep_proposals(room=1)
        held = self.proposals.add(constellation, request)
        log.info("p=%s c=%s proposed (%d stars): %s", held.id, constellation.id,
                 len(constellation.stars), constellation.rationale)  # fmt: skip
        return self._proposal(held)

    async def start_proposal(self, proposal_id: str) -> Run:
        """As `OrreryApi.start_proposal`: run the proposal as it was shown. Refused with
        `unknown_proposal` when it does not wait (the message says why); a plan that
        cannot start now (`invalid_plan`: nothing to fan out over) keeps waiting."""
        self._sweep_proposals()
        held = self._waiting_proposal(proposal_id)
        run = self.start_planned(held.constellation, held.request)
        self.proposals.end(proposal_id, Ending.STARTED, run.id)
        log.info("p=%s started as c=%s", proposal_id, run.id)
        return run

    async def discard_proposal(self, proposal_id: str) -> Discarded:
        """As `OrreryApi.discard_proposal`: drop a waiting proposal; `discarded` false if
        it had ended already (discarded or expired). `unknown_proposal` for one that was
        started (cancel its constellation instead) or never made here."""
        self._sweep_proposals()
        ending = self.proposals.ending(proposal_id)
        if ending is not None and ending.how is not Ending.STARTED:
            return Discarded(id="", proposal=proposal_id, discarded=False)
        self._waiting_proposal(proposal_id)
        self._forget_plan(self.proposals.end(proposal_id, Ending.DISCARDED))
        log.info("p=%s discarded", proposal_id)
        return Discarded(id="", proposal=proposal_id, discarded=True)

    def _waiting_proposal(self, proposal_id: str) -> Held:
        try:
            return self.proposals.waiting(proposal_id)
        except ProposalGone as gone:
            raise RequestRejected.of(ErrorCode.UNKNOWN_PROPOSAL, gone.message, "proposal") from None

    def _sweep_proposals(self, room: int = 0) -> None:
        for held in self.proposals.sweep(room=room):
            log.info("p=%s c=%s dropped unstarted", held.id, held.constellation.id)
            self._forget_plan(held)

    def _forget_plan(self, held: Held) -> None:
        """What planning kept for a constellation that will never run goes."""
        self.memory.planned_from(held.constellation.id)
        if self.planner is not None:
            self.planner.forget(held.constellation.id)

    def _proposal(self, held: Held) -> Proposal:
        constellation = held.constellation
        return Proposal(
            id="",
            proposal=held.id,
            request=held.request,
            constellation=constellation.id,
            name=constellation.name,
            rationale=constellation.rationale,
            stars=describe_stars(constellation, list(self.dispatcher.devices())),
            plan=constellation.model_dump(mode="json", by_alias=True),
            expires_in=round(self.proposals.expires_in(held), 3),
        )

    # ---------------------------------------------------------------- plans

    def parse_plan(
        self,
        text: str,
        source: str = "<plan>",
        known_tools: frozenset[str] | None = None,
        budget: float | None = None,
    ) -> Constellation:
        """A plan's YAML text as a constellation for this fleet; `RequestRejected`
        (`invalid_plan`, with `file:line:col: what`) if it is not a valid plan, or
        reading it took more than `budget` seconds. Blocks for as long as parsing takes:
        on the event loop, use `parse_plan_off_loop`."""
        from agents.constellation.plan_file import PlanFileError, parse_plan

        tools = self.known_tools() if known_tools is None else known_tools
        try:
            return parse_plan(text, source=source, known_tools=tools, budget=budget)
        except PlanFileError as exc:
            raise RequestRejected.of(ErrorCode.INVALID_PLAN, str(exc), "plan") from None

    async def parse_plan_off_loop(self, text: str, source: str = "<plan>") -> Constellation:
        """`parse_plan` in a worker thread (at most `PLAN_PARSERS` at once, each within
        `PLAN_BUDGET` seconds), so the event loop goes on serving devices and clients."""
        tools = self.known_tools()  # read on the loop, where the fleet changes
        async with self._parsers:
            return await asyncio.to_thread(self.parse_plan, text, source, tools, PLAN_BUDGET)

    async def plan(self, request: str) -> Constellation:
        """The planner's constellation for `request` and the devices connected now, with
        `planning.started`/`planning.finished` events; `RequestRejected` if none."""
        if self.planner is None:
            raise RequestRejected.of(
                ErrorCode.NO_PLANNER,
                "this orchestrator has no planner; submit a plan (YAML) instead of a request",
                "request",
            )
        from agents.models.errors import ModelError
        from agents.planner.errors import NoCapableDevice, PlanningError

        planning_id = uuid.uuid4().hex[:12]
        self.orchestrator.emit(
            PlanningStarted(constellation_id="", planning_id=planning_id, request=request)
        )
        started = time.monotonic()
        error: RequestRejected | None = None
        try:
            constellation = await self.planner.plan(request, list(self.dispatcher.devices()))
        except NoCapableDevice as exc:
            error = RequestRejected.of(ErrorCode.NO_CAPABLE_DEVICE, str(exc), "request")
        except PlanningError as exc:
            error = RequestRejected.of(ErrorCode.PLAN_REJECTED, str(exc), "request")
        except ModelError as exc:  # a planner model that is missing, corrupt or failing
            message = f"the planner's model failed: {exc}"
            error = RequestRejected.of(ErrorCode.PLAN_REJECTED, message, "request")
        except BaseException as exc:  # a bug or a cancellation: say it ended, then re-raise
            self._planning_ended(planning_id, started, f"{type(exc).__name__}: {exc}")
            raise
        if error is not None:
            self._planning_ended(planning_id, started, error.reason)
            raise error
        self._planning_ended(planning_id, started, None, planned=constellation.id)
        return constellation

    def _planning_ended(
        self, planning_id: str, started: float, error: str | None, planned: str | None = None
    ) -> None:
        self.orchestrator.emit(
            PlanningFinished(
                constellation_id="",
                planning_id=planning_id,
                planned=planned,
                error=error,
                seconds=round(time.monotonic() - started, 3),
            )
        )

    def start_constellation(self, constellation: Constellation) -> Run:
        """Run a constellation built elsewhere (a plan file, the planner, a retry); stars
        without an estimate get their tool's remembered run time."""
        self.memory.fill_estimates(constellation)
        try:
            self.orchestrator.submit(constellation)
        except NoFanOutDevice as exc:
            raise RequestRejected.of(ErrorCode.INVALID_PLAN, str(exc), "plan") from None
        log.info(
            "c=%s submitted (%s, %d stars)",
            constellation.id,
            constellation.name,
            len(constellation.stars),
        )
        return self._run_of(constellation)

    def run(self, constellation_id: str) -> Run:
        return Run(self, constellation_id)

    async def retry(self, constellation_id: str, star_id: str | None = None) -> Run:
        """As `OrreryApi.retry`."""
        old = self._constellation_or_stored(constellation_id)
        try:
            again = retry_plan(old, star_id)
        except UnknownStar as exc:
            raise RequestRejected.of(ErrorCode.UNKNOWN_STAR, exc.message, "star") from None
        except NothingToRetry as exc:
            raise RequestRejected.of(ErrorCode.NOT_RETRYABLE, str(exc), "constellation") from None
        log.info("c=%s retries c=%s from %s", again.id, old.id, star_id or "its failures")
        return self.start_constellation(again)

    def known_tools(self) -> frozenset[str]:
        """Tools a submitted plan may name: the fleet's, and what connected devices offer."""
        extra = (tool for device in self.dispatcher.devices() for tool in device.tools)
        return self.fleet_tools | frozenset(extra)

    # ---------------------------------------------------------------- steering

    async def cancel(self, constellation_id: str, reason: str = "cancelled by a client") -> str:
        try:
            self.orchestrator.cancel(constellation_id, reason)
            status = self.orchestrator.constellation(constellation_id).status.value
        except UnknownConstellation:
            status = self._stored(constellation_id).status
        log.info("c=%s cancel: %s (%s)", constellation_id, status, reason)
        return status

    async def cancel_star(
        self, constellation_id: str, star_id: str, reason: str = "cancelled by a client"
    ) -> str:
        try:
            self.orchestrator.cancel_star(constellation_id, star_id, reason)
        except UnknownConstellation:
            stored = self._stored(constellation_id).snapshot.get("stars") or {}
            if star_id not in stored:
                raise _unknown_star(constellation_id, star_id) from None
            return str(stored[star_id].get("status"))
        except UnknownStar:
            raise _unknown_star(constellation_id, star_id) from None
        except ConstellationFinishedError:
            pass  # it had finished: the star keeps the status it ended with
        star = self.orchestrator.constellation(constellation_id).stars.get(star_id)
        if star is None:
            raise _unknown_star(constellation_id, star_id)
        log.info("c=%s s=%s cancel: %s (%s)", constellation_id, star_id, star.status, reason)
        return star.status.value

    async def pin_star(self, constellation_id: str, star_id: str, device: str) -> int:
        """Run a star that has not started on `device` (an edit); the new version.
        `RequestRejected`: `unknown_star`, `not_editable` (it started or finished), or
        `unknown_device` (not connected, or it cannot run the star: the reason says why)."""
        from agents.constellation import (
            ConstellationError,
            DeviceSelector,
            EditBatch,
            StarChanges,
            StarStatus,
            UpdateStar,
        )
        from agents.orchestrator import device_mismatch

        try:
            live = self.orchestrator.constellation(constellation_id)
        except UnknownConstellation:
            self._stored(constellation_id)
            raise RequestRejected.of(
                ErrorCode.NOT_EDITABLE,
                f"constellation {constellation_id!r} has finished; nothing in it can change",
                "constellation",
            ) from None
        star = live.stars.get(star_id)
        if star is None:
            raise _unknown_star(constellation_id, star_id)
        if star.status not in (StarStatus.PENDING, StarStatus.READY):
            raise RequestRejected.of(
                ErrorCode.NOT_EDITABLE,
                f"star {star_id!r} is {star.status}; only a star that has not started can be "
                "pinned to a device",
                "star",
            )
        connected = {d.name: d for d in self.dispatcher.devices()}
        info = connected.get(device)
        why = (
            "is not connected" if info is None else device_mismatch(info, star.effective_tool, None)
        )
        if why is not None:
            known = ", ".join(sorted(connected)) or "none"
            raise RequestRejected.of(
                ErrorCode.UNKNOWN_DEVICE,
                f"device {device!r} {why}; connected: {known}",
                "device",
            )
        selector = (star.on or DeviceSelector()).model_copy(update={"name": device})
        batch = EditBatch(
            edits=[UpdateStar(id=star_id, changes=StarChanges(on=selector))],
            rationale=f"pinned {star_id} to {device} by a person",
        )
        try:
            return self.orchestrator.apply_edits(constellation_id, batch)
        except (ConstellationError, ConstellationFinishedError) as exc:
            raise RequestRejected.of(ErrorCode.NOT_EDITABLE, str(exc), "star") from None

    async def enroll(self, name: str) -> str:
        """Create (or rotate) device `name`'s enrolment token; it is returned once (only a
        derived key is stored). `RequestRejected` (`malformed`) for a name that is not
        1-64 letters, digits, '.', '_' or '-'."""
        import re

        from protocol.auth import enroll

        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
            raise RequestRejected.of(
                ErrorCode.MALFORMED,
                f"device name {name!r} must be 1-64 letters, digits, '.', '_' or '-'",
                "name",
            )
        token, key = enroll(name)
        self.store.enroll_device(name, salt=key.salt, key=key.key)
        log.info("device %s enrolled (a new token)", name)
        return token

    async def approve(
        self, request: str, approved: bool = True, reason: str = "", *, by: str = "a person"
    ) -> None:
        """Allow (or refuse) a tool call a device waits on."""
        try:
            asked = self.dispatcher.decide(request, approved, by=by, reason=reason)
        except UnknownApproval as exc:
            raise RequestRejected.of(ErrorCode.UNKNOWN_APPROVAL, str(exc), "request") from None
        self.orchestrator.emit(
            ApprovalGiven(
                constellation_id=asked.constellation_id,
                star_id=asked.star_id,
                request=request,
                approved=approved,
                by=by,
                reason=reason,
            )
        )

    # ---------------------------------------------------------------- queries

    async def approvals(self) -> list[PendingApprovalInfo]:
        return [
            PendingApprovalInfo(
                request=p.request,
                constellation=p.constellation_id,
                star=p.star_id,
                attempt=p.attempt,
                device=p.device,
                tool=p.tool,
                summary=p.summary,
            )
            for p in self.dispatcher.pending_approvals()
        ]

    async def devices(self) -> list[DeviceEntry]:
        connected = {d.name: d for d in self.dispatcher.devices()}
        running: dict[str, list[str]] = {}
        for a in self.orchestrator.running_attempts():
            running.setdefault(a.device, []).append(f"{a.constellation_id}/{a.star_id}#{a.attempt}")
        in_process = self._in_process_names()
        silence = self.dispatcher.silence()
        entries = []
        for row in self.store.devices():
            info = connected.pop(row.name, None)
            state = self._states.get(row.name, row.state) if info else row.state
            entries.append(_device_entry(row.name, state, info, running, in_process, row))
        for info in connected.values():  # in process, or connected but not in the store
            state = self._states.get(info.name, "online")
            entries.append(_device_entry(info.name, state, info, running, in_process, None))
        entries = [
            e.model_copy(update={"heartbeat_age": round(silence[e.name], 2)})
            if e.name in silence and e.connected
            else e
            for e in entries
        ]
        return sorted(entries, key=lambda e: (not e.in_process, e.name))

    def connected(self) -> list[str]:
        return sorted(device.name for device in self.dispatcher.devices())

    async def wait_for_devices(self, count: int, within: float) -> list[str]:
        """Return (the names) once `count` devices are connected; `DevicesMissing` after
        `within` seconds. Woken by device events, never by polling."""
        changes = self.stream.subscribe(types=frozenset({"device.joined", "device.left"}))
        arrivals = aiter(changes)
        try:
            async with asyncio.timeout(within):
                while len(self.connected()) < count:
                    await anext(arrivals)
        except TimeoutError:
            names = ", ".join(self.connected()) or "none"
            raise DevicesMissing(
                f"{len(self.connected())} of {count} devices connected within {within:g}s "
                f"({names}); check that they run and are enrolled (`orrery devices list`)"
            ) from None
        finally:
            changes.close()
        return self.connected()

    async def history(self, limit: int = 20, status: str | None = None) -> list[HistoryEntry]:
        rows = self.store.constellations(limit=limit, status=status)
        return [
            HistoryEntry(
                id=row.id,
                name=row.name,
                status=row.status,
                version=row.version,
                stars=len(row.snapshot.get("stars") or {}),
                created_at=row.created_at,
                finished_at=row.finished_at,
                reason=row.reason,
            )
            for row in rows
        ]

    async def constellation(self, constellation_id: str) -> Snapshot:
        """One constellation now; `constellation_id` may be a unique prefix of its id."""
        cid = self._resolve(constellation_id)
        try:
            live: Constellation | None = self.orchestrator.constellation(cid)
        except UnknownConstellation:
            live = None
        row = self.store.constellation(cid)
        if live is not None and self.journal.has(cid):
            edits = [
                _edit_entry(e.version, e.rationale, e.undo, len(e.edits))
                for e in self.journal.after(cid, 0)
                if isinstance(e, EditApplied)
            ]
        else:
            edits = [
                _edit_entry(
                    int(e.payload.get("version", 0)),
                    str(e.payload.get("rationale", "")),
                    bool(e.payload.get("undo", False)),
                    len(e.payload.get("edits") or []),
                )
                for e in self.store.events(cid)
                if e.type == "edit.applied"
            ]
        times = {
            "created_at": row.created_at if row else None,
            "finished_at": row.finished_at if row else None,
        }
        if live is not None:
            return Snapshot(
                id="",
                constellation_id=cid,
                name=live.name,
                status=live.status.value,
                version=live.version,
                rationale=live.rationale,
                reason=row.reason if row is not None else None,
                live=True,
                constellation=live.model_dump(mode="json", by_alias=True),
                edits=edits,
                **times,
            )
        assert row is not None  # `_resolve` found it in the store
        return Snapshot(
            id="",
            constellation_id=cid,
            name=row.name,
            status=row.status,
            version=row.version,
            rationale=str(row.snapshot.get("rationale", "")),
            reason=row.reason,
            live=False,
            constellation=row.snapshot,
            edits=edits,
            **times,
        )

    # ---------------------------------------------------------------- memory

    async def memory_search(self, text: str, limit: int = 5) -> list[MemoryHit]:
        """As `OrreryApi.memory_search`."""
        try:
            found = await self.memory.search(text, limit)
        except RecallUnavailable as exc:
            raise RequestRejected.of(ErrorCode.MEMORY_UNAVAILABLE, exc.message) from None
        return [memory_hit(item) for item in found]

    async def memory_show(self, request_id: str) -> MemoryTree:
        """As `OrreryApi.memory_show`."""
        self.remembering.flush()  # what this runtime recorded last is part of it
        try:
            return memory_tree(await self.memory.show(request_id))
        except UnknownMemory as exc:
            raise RequestRejected.of(ErrorCode.UNKNOWN_MEMORY, exc.message, "request") from None

    async def memory_forget(self, request_id: str) -> MemoryForgotten:
        """As `OrreryApi.memory_forget`."""
        try:
            forgotten_id, was_remembered = await self.memory.forget(request_id)
        except UnknownMemory as exc:
            raise RequestRejected.of(ErrorCode.UNKNOWN_MEMORY, exc.message, "request") from None
        log.info("memory: forgot %s", forgotten_id)
        return MemoryForgotten(id="", request=forgotten_id, forgotten=was_remembered)

    # ---------------------------------------------------------------- streams

    def open_stream(
        self,
        constellation_id: str | None,
        after_seq: int = 0,
        types: Collection[str] | None = None,
    ) -> StreamStart:
        """Replay and live subscription in one step (see `StreamStart`); for one
        constellation, or the whole fleet without an id. `RequestRejected`
        (`unknown_constellation`) for an id no one knows.

        Synchronous on purpose: nothing can be published between the two parts."""
        kinds = frozenset(types) if types is not None else None
        if constellation_id is None:
            events, truncated = self.journal.fleet_after(after_seq, kinds)
            live = self.stream.subscribe(types=kinds)
            return StreamStart(FLEET, list(events), live, truncated=truncated)
        cid = constellation_id
        try:
            constellation: Constellation | None = self.orchestrator.constellation(cid)
        except UnknownConstellation:
            constellation = None
        if constellation is not None and self.journal.has(cid):
            replay: list[Event | dict[str, Any]] = list(self.journal.after(cid, after_seq))
            following = None if constellation.status.terminal else self.stream.subscribe(cid)
            return StreamStart(constellation.status.value, replay, following)
        row = self._stored(cid)
        stored: list[Event | dict[str, Any]] = [
            e.payload for e in self.store.events(cid, after_seq=after_seq)
        ]
        if constellation is not None:  # in memory, its log evicted: finished, all stored
            return StreamStart(constellation.status.value, stored, None)
        interrupted = row.status not in ("succeeded", "failed", "cancelled")
        return StreamStart(row.status, stored, None, interrupted=interrupted)

    async def events(
        self,
        constellation_id: str | None = None,
        *,
        after_seq: int = 0,
        types: Collection[str] | None = None,
    ) -> AsyncIterator[Event]:
        """As `OrreryApi.events`."""
        start = self.open_stream(constellation_id, after_seq, types)
        try:
            for item in start.replay:
                if isinstance(item, Event):
                    yield item
                    continue
                try:
                    yield event_from_dict(item)
                except ValidationError:
                    log.warning("skipped an unreadable stored event of %s", constellation_id)
            if start.interrupted:
                raise RequestRejected.of(
                    ErrorCode.INTERRUPTED, _interrupted(str(constellation_id), start.status)
                )
            if start.live is not None:
                async for event in start.live:
                    yield event
        finally:
            if start.live is not None:
                start.live.close()

    # ---------------------------------------------------------------- listeners

    def _record_device(self, event: Event) -> None:
        """Keep the store's device table (`orrery devices list`) current."""
        if isinstance(event, DeviceJoined):
            update: dict[str, Any] = {"labels": event.labels}
        elif isinstance(event, DeviceStateChanged):
            update = {"state": event.state}
            self._states[event.device] = event.state
        else:
            return
        try:
            self.store.update_device(event.device, last_seen=time.time(), **update)
        except StoreError as exc:
            log.error("recording the state of device %s failed: %s", event.device, exc)

    def _on_approval_needed(self, event: Event) -> None:
        if not isinstance(event, ApprovalNeeded):
            return
        asked = ApprovalAsked(
            request=event.request,
            constellation_id=event.constellation_id,
            star_id=event.star_id,
            attempt=event.attempt,
            device=event.device,
            tool=event.tool,
            summary=event.summary,
        )
        decision = self.approval_policy(asked)
        if decision is not None:  # after this event has reached every listener
            approved, reason = decision
            asyncio.get_running_loop().call_soon(self._decide_by_policy, asked, approved, reason)

    def _decide_by_policy(self, asked: ApprovalAsked, approved: bool, reason: str) -> None:
        try:
            self.dispatcher.decide(asked.request, approved, by="policy", reason=reason)
        except UnknownApproval:
            return  # its attempt ended meanwhile
        self.orchestrator.emit(
            ApprovalGiven(
                constellation_id=asked.constellation_id,
                star_id=asked.star_id,
                request=asked.request,
                approved=approved,
                by="policy",
                reason=reason,
            )
        )

    # ---------------------------------------------------------------- helpers

    def _run_of(self, constellation: Constellation) -> Run:
        return Run(
            self,
            constellation.id,
            constellation.name,
            len(constellation.stars),
            rationale=constellation.rationale,
        )

    def _in_process_names(self) -> set[str]:
        from app.runtime.this_machine import InProcessDevice

        return {
            device.name
            for dispatcher in self.dispatcher.dispatchers
            if isinstance(dispatcher, InProcessDevice)
            for device in dispatcher.devices()
        }

    def _stored(self, constellation_id: str) -> ConstellationRow:
        row = self.store.constellation(constellation_id)
        if row is None:
            raise _unknown(constellation_id)
        return row

    def _constellation_or_stored(self, constellation_id: str) -> Constellation:
        cid = self._resolve(constellation_id)
        try:
            return self.orchestrator.constellation(cid)
        except UnknownConstellation:
            return Constellation.model_validate(self._stored(cid).snapshot)

    def _resolve(self, wanted: str) -> str:
        """The id of the constellation `wanted` names (its id, or a unique prefix)."""
        try:
            self.orchestrator.constellation(wanted)
            return wanted
        except UnknownConstellation:
            pass
        if self.store.constellation(wanted) is not None:
            return wanted
        matches = {c.id for c in self.orchestrator.constellations() if c.id.startswith(wanted)}
        matches |= {r.id for r in self.store.constellations(limit=1000) if r.id.startswith(wanted)}
        if len(matches) == 1:
            return matches.pop()
        if matches:
            ids = ", ".join(sorted(matches)[:5])
            raise RequestRejected.of(
                ErrorCode.UNKNOWN_CONSTELLATION,
                f"{wanted!r} matches several constellations ({ids}); give more of the id",
                "constellation",
            )
        raise _unknown(wanted)


def _device_entry(
    name: str,
    state: str,
    info: DeviceInfo | None,
    running: dict[str, list[str]],
    in_process: set[str],
    row: Any,
) -> DeviceEntry:
    labels = sorted(info.labels) if info else list((row.labels if row else None) or [])
    return DeviceEntry(
        name=name,
        state=state,
        connected=info is not None,
        labels=labels,
        last_seen=row.last_seen if row is not None else None,
        platform=info.platform if info else None,
        tools=sorted(info.tools) if info else [],
        gpu=info.gpu if info else False,
        vram_free_mb=info.vram_free_mb if info else 0,
        max_tasks=info.max_tasks if info else None,
        running=sorted(running.get(name, [])),
        in_process=name in in_process,
    )


def _edit_entry(version: int, rationale: str, undo: bool, edits: int) -> EditEntry:
    return EditEntry(version=version, rationale=rationale, undo=undo, edits=edits)


def _unknown(constellation_id: str) -> RequestRejected:
    return RequestRejected.of(
        ErrorCode.UNKNOWN_CONSTELLATION,
        f"no constellation {constellation_id!r} here (`orrery history` lists them)",
        "constellation",
    )


def _unknown_star(constellation_id: str, star_id: str) -> RequestRejected:
    return RequestRejected.of(
        ErrorCode.UNKNOWN_STAR,
        f"no star {star_id!r} in constellation {constellation_id!r} "
        f"(`orrery show {constellation_id}` lists its stars)",
        "star",
    )


def _interrupted(constellation_id: str, status: str) -> str:
    return (
        f"constellation {constellation_id!r} was {status} in an orchestrator that "
        "stopped before it finished; its record ends here"
    )
