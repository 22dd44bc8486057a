"""The orchestrator: owns constellations, schedules ready stars onto devices, applies edits.

Scheduling is event-driven: a star enters the ready queue the moment its last incoming
line is decided, and the queue is drained whenever a device slot frees up, a result
arrives, an edit lands or devices change. Nothing polls and nothing sleeps. Ready stars
go out highest priority first, then longest remaining path (by estimated run time).

All methods run on one thread (the event loop's); dispatchers call back through the
`TaskSink` methods. A result of any attempt but the current one is ignored (fencing).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from agents.clock import Clock, RealClock, Timer
from agents.constellation import (
    Attempt,
    AttemptStatus,
    Constellation,
    ConstellationEditor,
    ConstellationError,
    ConstellationStatus,
    EditBatch,
    Star,
    StarStatus,
    UnknownStar,
)
from agents.constellation.fanout import expand_fan_out
from agents.constellation.joining import branches_for
from agents.constellation.model import DeviceSelector
from agents.constellation.references import UnresolvedReference, resolve_references
from agents.constellation.shell_words import SHELL_ARGS, UnsafeShellReference
from agents.dispatch import ApprovalAsked, DeviceChange, Dispatcher
from agents.events import (
    ApprovalNeeded,
    AttemptFailed,
    ConstellationFinished,
    ConstellationSubmitted,
    DeviceJoined,
    DeviceLeft,
    DeviceStateChanged,
    EditApplied,
    Event,
    EventStream,
    StaleResultIgnored,
    StarFinished,
    StarProgress,
    StarReady,
    StarStarted,
)
from agents.run_state import RunState
from devices.registry import DeviceInfo
from protocol.tasks import TaskAssignment, TaskOutcome, TaskProgress, TaskResult

log = logging.getLogger("orrery.orchestrator")


class OrchestratorError(RuntimeError):
    """Base of the orchestrator's own refusals (edits and cancels on the wrong object)."""


class UnknownConstellation(OrchestratorError, LookupError):
    def __init__(self, constellation_id: str) -> None:
        super().__init__(
            f"no constellation {constellation_id!r} in this orchestrator; "
            "list them with `orrery status`"
        )
        self.constellation_id = constellation_id


class ConstellationFinishedError(OrchestratorError):
    def __init__(self, constellation_id: str, status: ConstellationStatus) -> None:
        super().__init__(
            f"constellation {constellation_id!r} has already {status}; submit a new request"
        )
        self.constellation_id = constellation_id
        self.status = status


class DuplicateConstellation(OrchestratorError):
    def __init__(self, constellation_id: str) -> None:
        super().__init__(f"constellation {constellation_id!r} was already submitted")
        self.constellation_id = constellation_id


@dataclass(slots=True)
class _Running:
    """An attempt out on a device."""

    assignment: TaskAssignment
    timer: Timer | None


class RunHandle:
    """A submitted constellation: watch it, wait for it, edit or cancel it."""

    def __init__(self, orchestrator: Orchestrator, constellation_id: str) -> None:
        self._orchestrator = orchestrator
        self.id = constellation_id

    @property
    def constellation(self) -> Constellation:
        return self._orchestrator.constellation(self.id)

    async def wait(self) -> Constellation:
        """Wait until every star is terminal; returns the final constellation."""
        return await self._orchestrator.wait(self.id)

    def cancel(self, reason: str = "cancelled by user") -> None:
        self._orchestrator.cancel(self.id, reason)


KEEP_FINISHED = 500
"""Finished constellations an orchestrator keeps in memory (the newest); older ones are
dropped from it (`UnknownConstellation`): the store keeps them, and the runtime reads them
from there. So a long-running orchestrator's memory does not grow with its history."""


class Orchestrator:
    """Runs constellations on the devices of one dispatcher."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        clock: Clock | None = None,
        events: EventStream | None = None,
        known_tools: Collection[str] | None = None,
        keep_finished: int = KEEP_FINISHED,
    ) -> None:
        if keep_finished < 1:
            raise ValueError(f"keep_finished must be at least 1, not {keep_finished}")
        self.dispatcher = dispatcher
        self.keep_finished = keep_finished
        self._finished: deque[str] = deque()  # finished runs still in memory, oldest first
        self.clock: Clock = clock or RealClock()
        self.events = events or EventStream()
        self.known_tools = known_tools
        self._runs: dict[str, RunState] = {}
        self._ready: list[tuple[int, float, int, str, str]] = []
        self._queued: dict[tuple[str, str], int] = {}  # (cid, sid) -> seq of the live entry
        self._seq = itertools.count()
        self._running: dict[tuple[str, str], _Running] = {}
        self._devices: dict[str, DeviceInfo] = {}
        self._load: dict[str, int] = {}
        self._free: dict[str, DeviceInfo] = {}  # devices with at least one free slot
        self._free_slots = 0
        self._pumping = False
        self._pump_again = False
        self._doomed: list[tuple[str, str, str]] = []  # (cid, sid, why no device can run it)
        self._capability_gaps: dict[tuple[str, DeviceSelector | None], str | None] = {}
        self._unrunnable: dict[str, set[str]] = {}  # cid -> stars failed for want of a device
        self._patience: Timer | None = None  # while set, no star fails for want of a device
        dispatcher.attach(self)
        self._read_devices()

    # ---------------------------------------------------------------- public API

    def submit(self, constellation: Constellation) -> RunHandle:
        """Start running a constellation (built by `build_constellation`); returns at once."""
        if constellation.id in self._runs:
            raise DuplicateConstellation(constellation.id)
        if expand_fan_out(constellation, self.dispatcher.devices()):
            log.info("constellation %s: fanned-out stars expanded", constellation.id)
        run = RunState(editor=ConstellationEditor(constellation, known_tools=self.known_tools))
        self._runs[constellation.id] = run
        constellation.status = ConstellationStatus.RUNNING
        self.emit(
            ConstellationSubmitted(
                constellation_id=constellation.id,
                name=constellation.name,
                version=constellation.version,
                stars=len(constellation.stars),
            )
        )
        log.info("constellation %s submitted: %d stars", constellation.id, len(constellation.stars))
        self._decide(run, run.rebuild())
        self._check_finished(run)
        self._pump()
        return RunHandle(self, constellation.id)

    def resume(
        self, constellation: Constellation, stored: Collection[TaskResult] = ()
    ) -> RunHandle:
        """Take up a constellation that an earlier orchestrator process was running (as
        rebuilt from the store after a crash). Finished stars stay as they are, ready ones
        are queued, and each attempt that was out on a device is adopted again, keeping its
        number: the dispatcher's `adopt` waits for its device to report it as it reconnects
        (fencing by attempt number refuses anything older); where no dispatcher can adopt
        it, it fails as interrupted and is retried within its budget. `stored` holds the
        results the store already has of such attempts; they are applied at once."""
        cid = constellation.id
        if cid in self._runs:
            raise DuplicateConstellation(cid)
        run = RunState(editor=ConstellationEditor(constellation, known_tools=self.known_tools))
        self._runs[cid] = run
        constellation.status = ConstellationStatus.RUNNING
        decided = run.rebuild()
        adopted: list[TaskAssignment] = []
        ended: list[Star] = []  # running, but its last attempt had ended: decide again
        for star in run.stars.values():
            attempt = star.current_attempt
            if star.status is StarStatus.READY:
                self._enqueue(run, star)
            elif star.status is StarStatus.RUNNING:
                if attempt is None or attempt.status is not AttemptStatus.RUNNING:
                    ended.append(star)
                    continue
                assignment = self._adopted(run, star, attempt.number, attempt.device)
                if assignment is not None:
                    adopted.append(assignment)
        log.info("constellation %s resumed: %d attempts out", cid, len(adopted))
        self._read_devices()
        self._decide(run, decided)
        results = {result.key: result for result in stored}
        adopt = getattr(self.dispatcher, "adopt", None)
        for assignment in adopted:
            result = results.get(assignment.key)
            if result is not None:
                self.on_result(result)
            elif adopt is None or not adopt(assignment):
                self.on_result(
                    TaskResult.failure(
                        assignment,
                        "interrupted: the orchestrator restarted while it ran, and its "
                        f"device {assignment.device!r} cannot report it",
                    )
                )
        for star in ended:
            if len(star.attempts) <= star.retries:
                self._enqueue(run, star)
            else:
                star.error = star.error or star.attempts[-1].error or "failed"
                self._finish_star(run, star, StarStatus.FAILED)
        self._check_finished(run)
        self._pump()
        return RunHandle(self, cid)

    def _adopted(
        self, run: RunState, star: Star, number: int, device: str
    ) -> TaskAssignment | None:
        """The assignment of a running attempt taken over from an earlier process (its
        timeout starts again now), or None when its arguments no longer resolve (the star
        has failed)."""
        args = star.effective_args
        try:
            if star.id in run.referencing:
                args = resolve_references(
                    args,
                    lambda sid: _finished_value(run.stars, sid),
                    shell_args=SHELL_ARGS.get(star.effective_tool, ()),
                )
        except (UnresolvedReference, UnsafeShellReference) as exc:
            star.error = str(exc)
            self._finish_star(run, star, StarStatus.FAILED)
            return None
        assignment = TaskAssignment(
            constellation_id=run.cid,
            star_id=star.id,
            attempt=number,
            device=device,
            tool=star.effective_tool,
            args=args,
            timeout=star.timeout,
        )
        key = (run.cid, star.id)
        timer = None
        if star.timeout is not None:
            timer = self.clock.call_later(
                star.timeout, lambda: self._on_timeout(key[0], key[1], number)
            )
        self._running[key] = _Running(assignment, timer)
        return assignment

    async def run(self, constellation: Constellation) -> Constellation:
        """Submit and wait for the end."""
        return await self.submit(constellation).wait()

    def constellation(self, constellation_id: str) -> Constellation:
        return self._run(constellation_id).constellation

    def constellations(self) -> list[Constellation]:
        return [run.constellation for run in self._runs.values()]

    def running_attempts(self) -> list[TaskAssignment]:
        """The attempts out on devices now."""
        return [running.assignment for running in self._running.values()]

    async def wait(self, constellation_id: str) -> Constellation:
        run = self._run(constellation_id)
        if run.finished:
            return run.constellation
        future: asyncio.Future[Constellation] = asyncio.get_running_loop().create_future()
        run.waiters.append(future)
        return await future

    def apply_edits(self, constellation_id: str, batch: EditBatch) -> int:
        """Apply an atomic edit batch between scheduling steps; returns the new version.

        Raises `ConstellationError` (nothing changed) when the batch is invalid.
        """
        run = self._live_run(constellation_id)
        run.editor.apply(batch)
        self._after_edit(run, batch, undo=False)
        return run.constellation.version

    def branch_joined_device(self, constellation_id: str, device: str) -> int | None:
        """Give `device`, connected now, its branches of the constellation's fan-outs that
        take joining devices (`agents.constellation.joining`): an edit batch applied as
        `apply_edits` applies one, with the constellation's `fan_out` record naming the
        device. Returns the new version, or None when the device gets no branch (why is
        logged). Raises `UnknownConstellation` or `ConstellationFinishedError`."""
        run = self._live_run(constellation_id)
        info = self._devices.get(device)
        if info is None:
            return None
        joined = branches_for(run.constellation, info)
        for star_id, why in joined.declined.items():
            log.info("c=%s device %s gets no branch of %s: %s", run.cid, device, star_id, why)
        if joined.batch is None:
            return None
        try:
            updated = run.editor.apply(joined.batch)
        except ConstellationError as exc:
            log.warning("c=%s device %s gets no branches: %s", run.cid, device, exc)
            return None
        updated.fan_out = joined.record
        log.info(
            "c=%s device %s joined: %s",
            run.cid,
            device,
            ", ".join(f"{star_id} -> {branch}" for star_id, branch in joined.branches.items()),
        )
        self._after_edit(run, joined.batch, undo=False)
        return updated.version

    def undo(self, constellation_id: str) -> int:
        """Undo the last accepted edit batch (as a new version); returns the new version."""
        run = self._live_run(constellation_id)
        _, inverse = run.editor.undo()
        self._after_edit(run, inverse, undo=True)
        return run.constellation.version

    def hold(self, constellation_id: str) -> Callable[[], None]:
        """Keep a running constellation from finishing until the returned release is called.

        A planner reviewing the plan holds it, so a failure of the last star leaves room
        for an edit that adds stars. Cancelling ignores holds. Release is idempotent.
        """
        run = self._live_run(constellation_id)
        run.holds += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            run.holds -= 1
            self._check_finished(run)
            self._pump()

        return release

    def cancel_star(self, constellation_id: str, star_id: str, reason: str = "cancelled") -> bool:
        """Cancel one star (running or not yet started). False if it had already finished."""
        run = self._live_run(constellation_id)
        star = run.stars.get(star_id)
        if star is None:
            raise UnknownStar(f"no star {star_id!r} in {constellation_id!r}", item=star_id)
        if star.status.terminal:
            return False
        self._cancel_star(run, star, reason)
        self._check_finished(run)
        self._pump()
        return True

    def cancel(
        self, constellation_id: str, reason: str = "cancelled by user", *, failed: bool = False
    ) -> None:
        """Cancel every star that has not finished; the constellation ends `cancelled`, or
        with `failed=True` (the run cannot meet its request: the planner gave up) `failed`
        with `reason`."""
        run = self._run(constellation_id)
        if run.finished:
            return
        run.giving_up = failed
        run.cancelling = True
        run.cancel_reason = reason
        for star in list(run.stars.values()):
            if not star.status.terminal:
                self._cancel_star(run, star, reason)
        self._check_finished(run)
        self._pump()

    # ---------------------------------------------------------------- TaskSink

    def on_progress(self, progress: TaskProgress) -> None:
        running = self._running.get((progress.constellation_id, progress.star_id))
        if running is None or running.assignment.attempt != progress.attempt:
            return
        self.emit(
            StarProgress(
                constellation_id=progress.constellation_id,
                star_id=progress.star_id,
                attempt=progress.attempt,
                message=progress.message,
                stream=progress.stream,
            )
        )

    def on_result(self, result: TaskResult) -> None:
        key = (result.constellation_id, result.star_id)
        running = self._running.get(key)
        if running is None or running.assignment.attempt != result.attempt:
            self._ignore_stale(result)
            return
        run = self._runs[result.constellation_id]
        star = run.stars[result.star_id]
        self._release(key)
        attempt = star.attempts[-1]
        attempt.finished_at = self.clock.now()
        if result.status is TaskOutcome.SUCCEEDED:
            attempt.status = AttemptStatus.SUCCEEDED
            star.output = result.output
            self._finish_star(run, star, StarStatus.SUCCEEDED)
        else:
            attempt.status = AttemptStatus.FAILED
            star.output = result.output
            self._attempt_failed(run, star, result.error or "failed without a reason")
        self._check_finished(run)
        self._pump()

    def on_device_change(self, change: DeviceChange) -> None:
        info = change.info
        if change.joined and info is not None:
            self.emit(
                DeviceJoined(
                    constellation_id="",
                    device=change.device,
                    platform=info.platform,
                    labels=sorted(info.labels),
                    tools=sorted(info.tools),
                    max_tasks=info.max_tasks,
                    gpu=info.gpu,
                    vram_free_mb=info.vram_free_mb,
                )
            )
        self.emit(
            DeviceStateChanged(
                constellation_id="",
                device=change.device,
                state=change.state,
                reason=change.reason,
                running=change.running,
            )
        )
        if change.left:
            self.emit(
                DeviceLeft(
                    constellation_id="",
                    device=change.device,
                    reason=change.reason,
                    lost=change.state == "lost",
                )
            )

    def on_approval(self, asked: ApprovalAsked) -> None:
        self.emit(
            ApprovalNeeded(
                constellation_id=asked.constellation_id,
                star_id=asked.star_id,
                attempt=asked.attempt,
                device=asked.device,
                request=asked.request,
                tool=asked.tool,
                summary=asked.summary,
            )
        )

    def on_devices_changed(self) -> None:
        self._read_devices()
        for key in list(self._queued):
            known = self._runs.get(key[0])
            star = known.constellation.stars.get(key[1]) if known is not None else None
            gap = self._capability_gap(star) if star is not None else None
            if gap is not None:
                del self._queued[key]
                self._doomed.append((key[0], key[1], gap))
        self._pump()

    # ---------------------------------------------------------------- scheduling

    def _pump(self) -> None:
        """Hand ready stars to free device slots, best first, until either runs out."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._drain_ready()
        finally:
            self._pumping = False

    def _drain_ready(self) -> None:
        while self._doomed:
            cid, sid, reason = self._doomed.pop()
            run = self._runs.get(cid)
            if run is None:
                continue
            star = run.stars.get(sid)
            if star is None or star.status.terminal:
                continue
            star.error = reason
            self._unrunnable.setdefault(cid, set()).add(sid)
            self._finish_star(run, star, StarStatus.FAILED)
            self._check_finished(run)
        blocked: list[tuple[int, float, int, str, str]] = []
        ready = self._ready
        while ready and self._free_slots > 0:
            entry = heapq.heappop(ready)
            _, _, seq, cid, sid = entry
            if self._queued.get((cid, sid)) != seq:
                continue  # superseded or withdrawn (or its run dropped: `_forget`)
            run = self._runs[cid]
            star = run.stars.get(sid)
            if star is None or star.status.terminal:
                del self._queued[(cid, sid)]
                continue
            device = self._choose_device(star)
            if device is None:
                blocked.append(entry)
                continue
            del self._queued[(cid, sid)]
            self._start_attempt(run, star, device)
        for entry in blocked:
            heapq.heappush(ready, entry)

    def _enqueue(self, run: RunState, star: Star) -> None:
        cid = run.cid
        gap = self._capability_gap(star)
        if gap is not None:
            self._doomed.append((cid, star.id, gap))
            self._pump_again = True
            return
        seq = next(self._seq)
        self._queued[(cid, star.id)] = seq
        level = run.bottom_level.get(star.id, 0.0)
        heapq.heappush(self._ready, (-star.priority, -level, seq, cid, star.id))

    def _choose_device(self, star: Star) -> DeviceInfo | None:
        """The least-loaded capable device with a free slot, avoiding the last failed one."""
        selector = star.on
        tool = star.effective_tool
        avoid = star.attempts[-1].device if star.attempts else None
        best: DeviceInfo | None = None
        best_load = 2.0
        fallback: DeviceInfo | None = None
        for name, device in self._free.items():
            load = self._load[name]
            if selector is None:
                if tool not in device.tools:  # the common case, kept cheap
                    continue
            elif device_mismatch(device, tool, selector) is not None:
                continue
            if name == avoid:
                fallback = device
                continue
            ratio = load / device.max_tasks
            if ratio < best_load:
                best, best_load = device, ratio
                if load == 0:
                    break
        return best or fallback

    def be_patient(self, seconds: float) -> None:
        """For the next `seconds`, a star no connected device can run waits for one instead
        of failing at once (after a restart, while the devices reconnect); then it fails."""
        if self._patience is not None:
            self._patience.cancel()

        def over() -> None:
            self._patience = None
            log.info("the devices had %gs to reconnect; stars none can run now fail", seconds)
            self.on_devices_changed()

        self._patience = self.clock.call_later(seconds, over)

    def _capability_gap(self, star: Star) -> str | None:
        """Why no connected device could ever run this star (cached per tool and selector);
        None while the orchestrator is patient (`be_patient`)."""
        if self._patience is not None:
            return None
        key = (star.effective_tool, star.on)
        if key not in self._capability_gaps:
            self._capability_gaps[key] = self._missing_capability(star)
        gap = self._capability_gaps[key]
        return f"no device can run star {star.id!r} {gap}" if gap is not None else None

    def _missing_capability(self, star: Star) -> str | None:
        """What no connected device offers for this star ("(needs ...): why each device
        does not fit"), or None if some device could run it."""
        selector = star.on
        reasons = []
        for device in self._devices.values():
            why = device_mismatch(device, star.effective_tool, selector)
            if why is None:
                return None
            reasons.append(f"{device.name} {why}")
        wanted = [f"tool {star.effective_tool!r}"]
        if selector is not None and not selector.is_any:
            wanted.append(selector.model_dump_json(exclude_defaults=True))
        considered = "; ".join(reasons) if reasons else "no devices are connected"
        return f"(needs {', '.join(wanted)}): {considered}"

    def _start_attempt(self, run: RunState, star: Star, device: DeviceInfo) -> None:
        cid = run.cid
        stars = run.stars
        number = len(star.attempts) + 1
        try:
            args = star.effective_args
            if star.id in run.referencing:
                args = resolve_references(  # in shell syntax, as quoted words: data only
                    args,
                    lambda sid: _finished_value(stars, sid),
                    shell_args=SHELL_ARGS.get(star.effective_tool, ()),
                )
        except (UnresolvedReference, UnsafeShellReference) as exc:
            if star.status is StarStatus.READY:
                star.move_to(StarStatus.RUNNING)
            star.error = str(exc)
            self._finish_star(run, star, StarStatus.FAILED)
            self._check_finished(run)
            return
        now = self.clock.now()
        star.attempts.append(Attempt(number=number, device=device.name, started_at=now))
        if star.status is StarStatus.READY:
            star.move_to(StarStatus.RUNNING)
        assignment = TaskAssignment(
            constellation_id=cid,
            star_id=star.id,
            attempt=number,
            device=device.name,
            tool=star.effective_tool,
            args=args,
            timeout=star.timeout,
        )
        key = (cid, star.id)
        timer = None
        if star.timeout is not None:
            timer = self.clock.call_later(
                star.timeout, lambda: self._on_timeout(key[0], key[1], number)
            )
        self._running[key] = _Running(assignment, timer)
        load = self._load[device.name] + 1
        self._load[device.name] = load
        self._free_slots -= 1
        if load >= device.max_tasks:
            del self._free[device.name]
        self.emit(
            StarStarted(
                constellation_id=cid,
                star_id=star.id,
                attempt=number,
                device=device.name,
            )
        )
        log.debug("c=%s s=%s a=%d dispatched to %s", cid, star.id, number, device.name)
        self.dispatcher.assign(assignment)

    def _release(self, key: tuple[str, str]) -> _Running:
        running = self._running.pop(key)
        if running.timer is not None:
            running.timer.cancel()
        device = running.assignment.device
        if device in self._load:
            load = self._load[device] - 1
            self._load[device] = load
            info = self._devices[device]
            if load < info.max_tasks:
                self._free_slots += 1
                self._free[device] = info
        return running

    def _on_timeout(self, cid: str, sid: str, number: int) -> None:
        running = self._running.get((cid, sid))
        if running is None or running.assignment.attempt != number:
            return
        run = self._runs[cid]
        star = run.stars[sid]
        self._release((cid, sid))
        reason = f"timed out after {star.timeout:g}s"
        self.dispatcher.cancel(running.assignment, reason)
        attempt = star.attempts[-1]
        attempt.status = AttemptStatus.TIMED_OUT
        attempt.finished_at = self.clock.now()
        self._attempt_failed(run, star, reason, timed_out=True)
        self._check_finished(run)
        self._pump()

    def _attempt_failed(
        self, run: RunState, star: Star, error: str, timed_out: bool = False
    ) -> None:
        attempt = star.attempts[-1]
        attempt.error = error
        will_retry = len(star.attempts) <= star.retries and not run.cancelling
        self.emit(
            AttemptFailed(
                constellation_id=run.cid,
                star_id=star.id,
                attempt=attempt.number,
                device=attempt.device,
                error=error,
                timed_out=timed_out,
                will_retry=will_retry,
            )
        )
        log.info(
            "c=%s s=%s a=%d failed on %s: %s%s",
            run.cid,
            star.id,
            attempt.number,
            attempt.device,
            error,
            " (will retry)" if will_retry else "",
        )
        if will_retry:
            self._enqueue(run, star)
        else:
            star.error = f"attempt {attempt.number}/{star.retries + 1}: {error}"
            self._finish_star(run, star, StarStatus.FAILED)

    def _cancel_star(self, run: RunState, star: Star, reason: str) -> None:
        key = (run.cid, star.id)
        self._queued.pop(key, None)
        if key in self._running:
            running = self._release(key)
            self.dispatcher.cancel(running.assignment, reason)
            attempt = star.attempts[-1]
            attempt.status = AttemptStatus.CANCELLED
            attempt.finished_at = self.clock.now()
            attempt.error = reason
        star.error = reason
        self._finish_star(run, star, StarStatus.CANCELLED)

    def _finish_star(
        self, run: RunState, star: Star, status: StarStatus, skip_reason: str | None = None
    ) -> None:
        """Move a star to a terminal status and settle everything downstream of it."""
        cid = run.cid
        stack: list[tuple[Star, StarStatus, str | None]] = [(star, status, skip_reason)]
        stars = run.stars
        while stack:
            current, target, skip_reason = stack.pop()
            current.move_to(target)
            if skip_reason is not None:
                current.skip_reason = skip_reason
            run.unfinished -= 1
            if (
                target in (StarStatus.FAILED, StarStatus.CANCELLED)
                and not current.allow_failure
                and run.first_failure is None
                and not run.cancelling
            ):
                run.first_failure = (current.id, current.error or str(target))
            self.emit(
                StarFinished(
                    constellation_id=cid,
                    star_id=current.id,
                    status=target.value,
                    attempt=len(current.attempts) or None,
                    error=current.error or skip_reason,
                    output=current.output if target is StarStatus.SUCCEEDED else None,
                )
            )
            if run.cancelling:
                continue
            for next_id, reason in run.downstream_decisions(current.id):
                downstream = stars[next_id]
                if reason is None:
                    self._make_ready(run, downstream)
                else:
                    stack.append((downstream, StarStatus.SKIPPED, reason))

    def _make_ready(self, run: RunState, star: Star) -> None:
        star.move_to(StarStatus.READY)
        self.emit(StarReady(constellation_id=run.cid, star_id=star.id))
        self._enqueue(run, star)

    def _decide(self, run: RunState, decided: Sequence[tuple[str, str | None]]) -> None:
        stars = run.stars
        for star_id, reason in decided:
            star = stars[star_id]
            if star.status is not StarStatus.PENDING:
                continue
            if reason is None:
                self._make_ready(run, star)
            else:
                self._finish_star(run, star, StarStatus.SKIPPED, reason)

    def _after_edit(self, run: RunState, batch: EditBatch, *, undo: bool) -> None:
        constellation = run.constellation
        cid = constellation.id
        # Withdraw queue entries of removed stars (and of stars removed and added again
        # under the same id, now pending), requeue the rest with fresh priorities.
        for key in [key for key in self._queued if key[0] == cid]:
            star = constellation.stars.get(key[1])
            if star is None or star.status is StarStatus.PENDING:
                del self._queued[key]
        decided = run.rebuild()
        for key in [key for key in self._queued if key[0] == cid]:
            self._enqueue(run, constellation.stars[key[1]])
        self.emit(
            EditApplied(
                constellation_id=cid,
                version=constellation.version,
                rationale=batch.rationale,
                edits=[edit.model_dump(mode="json", by_alias=True) for edit in batch.edits],
                undo=undo,
            )
        )
        log.info("c=%s edit applied: version %d", cid, constellation.version)
        self._decide(run, decided)
        self._check_finished(run)
        self._pump()

    def _check_finished(self, run: RunState) -> None:
        if run.unfinished > 0 or run.finished or (run.holds and not run.cancelling):
            return
        constellation = run.constellation
        status, reason, failed_star = run.final_status()
        constellation.status = status
        unrunnable = self._unrunnable.pop(constellation.id, set())
        self.emit(
            ConstellationFinished(
                constellation_id=constellation.id,
                status=status.value,
                reason=reason,
                failed_star=failed_star,
                no_capable_device=failed_star in unrunnable,
            )
        )
        log.info("constellation %s finished: %s %s", constellation.id, status, reason or "")
        for waiter in run.waiters:
            if not waiter.done():
                waiter.set_result(constellation)
        run.waiters.clear()
        self._finished.append(constellation.id)
        while len(self._finished) > self.keep_finished:
            self._forget(self._finished.popleft())

    def _forget(self, cid: str) -> None:
        """Drop a finished run from memory (what refers to it by id finds it no more)."""
        run = self._runs.get(cid)
        if run is None or not run.finished:
            return
        del self._runs[cid]
        for key in [key for key in self._queued if key[0] == cid]:
            del self._queued[key]
        log.debug("constellation %s dropped from memory (finished; the store keeps it)", cid)

    # ---------------------------------------------------------------- helpers

    def _read_devices(self) -> None:
        self._capability_gaps.clear()  # what no device can run depends on the devices
        devices = {device.name: device for device in self.dispatcher.devices()}
        # Count from the attempts out, so a device that left and came back keeps its load.
        out = Counter(running.assignment.device for running in self._running.values())
        load = {name: out[name] for name in devices}
        self._devices, self._load = devices, load
        self._free = {n: d for n, d in devices.items() if load[n] < d.max_tasks}
        self._free_slots = sum(max(0, d.max_tasks - load[n]) for n, d in devices.items())

    def _run(self, constellation_id: str) -> RunState:
        run = self._runs.get(constellation_id)
        if run is None:
            raise UnknownConstellation(constellation_id)
        return run

    def _live_run(self, constellation_id: str) -> RunState:
        run = self._run(constellation_id)
        if run.finished:
            raise ConstellationFinishedError(constellation_id, run.constellation.status)
        return run

    def _ignore_stale(self, result: TaskResult) -> None:
        run = self._runs.get(result.constellation_id)
        star = run.stars.get(result.star_id) if run else None
        current = star.attempts[-1].number if star and star.attempts else None
        log.info(
            "c=%s s=%s a=%d: stale result ignored (current attempt %s)",
            result.constellation_id,
            result.star_id,
            result.attempt,
            current,
        )
        if run is not None:
            self.emit(
                StaleResultIgnored(
                    constellation_id=result.constellation_id,
                    star_id=result.star_id,
                    attempt=result.attempt,
                    current_attempt=current,
                )
            )

    def emit(self, event: Event) -> None:
        """Publish `event` on this orchestrator's stream, stamped with its clock."""
        event.ts = self.clock.now()
        self.events.publish(event)


def device_mismatch(device: DeviceInfo, tool: str, selector: DeviceSelector | None) -> str | None:
    """Why `device` cannot run `tool` for a star with this selector, or None if it can."""
    if selector is None:
        return device.mismatch(tool=tool)
    if selector.names and device.name not in selector.names:
        return f"is not one of {', '.join(selector.names)}"
    return device.mismatch(
        tool=tool,
        name=selector.name,
        labels=selector.labels,
        platform=selector.platform,
        gpu=selector.gpu,
        min_vram_mb=selector.min_vram_mb,
    )


def _finished_value(stars: dict[str, Star], star_id: str) -> tuple[object, str | None] | None:
    star = stars.get(star_id)
    if star is None or not star.status.terminal:
        return None
    return star.output, star.error
