"""When the planner edits a running plan: the edit policy and the reviewer that applies it.

`PlanReviewer` listens to one constellation's events. When a star finishes in a way the
policy cares about (`on_failure`: a star failed for good; `always`: any star finished;
and under either, a star whose output asks for it with `"replan": true`), it holds the
constellation open (`Orchestrator.hold`), lets results that arrive together batch up,
asks `Planner.edit` with the bounded view, and applies the returned batch atomically,
or ends the run `failed` when the planner says the request cannot be met. Reviews per run are
bounded; a planner error or a batch the plan outgrew meanwhile changes nothing.

Each review is announced (`review.started`, with its reasons and deadline) and its end
told (`review.finished`, with the outcome). It is bounded by a deadline on the
orchestrator's clock: when the deadline passes first, the hold is released and the run
goes on by its plan; the model call is cancelled and not waited for (a generation stops at
its next token; a prompt llama.cpp is evaluating is finished first), and whatever it
still answers is discarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agents.constellation import ConstellationError, StarStatus
from agents.events import Event, ReviewFinished, ReviewOutcome, ReviewStarted, StarFinished
from agents.models.errors import ModelError
from agents.orchestrator import ConstellationFinishedError, Orchestrator
from agents.planner.context import PlanningContext
from agents.planner.errors import PlanningError
from agents.planner.planner import EditDecision, Planner

log = logging.getLogger("orrery.planner.review")

MAX_REVIEWS = 5
DEADLINE_S = 10.0
"""Seconds a review may take by default (`[planner] review_deadline_s`)."""


class EditPolicy(StrEnum):
    ON_FAILURE = "on_failure"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class Review:
    """One review of a running plan: why it ran and what came of it."""

    reasons: tuple[str, ...]
    decision: EditDecision | None
    applied_version: int | None = None
    problem: str | None = None
    timed_out: bool = False


class PlanReviewer:
    """Runs `Planner.edit` on one constellation as the policy says; see the module docstring."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        planner: Planner,
        constellation_id: str,
        *,
        request: str,
        context: Callable[[], PlanningContext],
        policy: EditPolicy = EditPolicy.ON_FAILURE,
        max_reviews: int = MAX_REVIEWS,
        deadline_s: float = DEADLINE_S,
    ) -> None:
        if not deadline_s > 0:
            raise ValueError(f"a review's deadline must be positive seconds, not {deadline_s}")
        self.orchestrator = orchestrator
        self.planner = planner
        self.cid = constellation_id
        self.request = request
        self.context = context
        self.policy = policy
        self.max_reviews = max_reviews
        self.deadline_s = deadline_s
        self.reviews: list[Review] = []
        self.discarded: list[EditDecision] = []  # answers that came after their deadline
        self._reasons: list[str] = []
        self._failed: list[str] = []
        self._abandoned: set[asyncio.Task[EditDecision]] = set()
        self._task: asyncio.Task[None] | None = None
        self._release: Callable[[], None] | None = None
        self._stop = orchestrator.events.listen(self._on_event)

    def close(self) -> None:
        """Stop listening; a review in progress is cancelled and its hold released."""
        self._stop()
        if self._task is not None:
            self._task.cancel()
        self._let_go()

    async def idle(self) -> None:
        """Wait until no review is running (for tests and orderly shutdown)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def settled(self) -> None:
        """Wait until no review runs and every model call a deadline left behind ended."""
        await self.idle()
        while self._abandoned:
            await asyncio.wait(set(self._abandoned))

    def _on_event(self, event: Event) -> None:
        if event.constellation_id != self.cid or not isinstance(event, StarFinished):
            return
        reason = self._reason(event)
        if reason is None or len(self.reviews) >= self.max_reviews:
            return
        self._reasons.append(reason)
        if event.status == StarStatus.FAILED.value:
            self._failed.append(event.star_id)
        if self._task is None:
            try:
                self._release = self.orchestrator.hold(self.cid)
            except ConstellationFinishedError:
                return
            self._task = asyncio.get_running_loop().create_task(self._review_loop())

    def _reason(self, event: StarFinished) -> str | None:
        if self.policy is EditPolicy.NEVER:
            return None
        output = event.output
        if isinstance(output, Mapping) and output.get("replan") is True:
            return f"star {event.star_id} asked for a new plan"
        if event.status == StarStatus.FAILED.value:
            return f"star {event.star_id} failed"
        if self.policy is EditPolicy.ALWAYS and event.status == StarStatus.SUCCEEDED.value:
            return f"star {event.star_id} succeeded"
        return None

    async def _review_loop(self) -> None:
        try:
            while self._reasons and len(self.reviews) < self.max_reviews:
                await asyncio.sleep(0)  # results that arrive together are reviewed together
                reasons, self._reasons = tuple(self._reasons), []
                failed, self._failed = tuple(self._failed), []
                self.reviews.append(await self._review(reasons, failed))
        finally:
            self._task = None
            self._reasons.clear()
            self._failed.clear()
            self._let_go()

    async def _review(self, reasons: tuple[str, ...], failed: tuple[str, ...]) -> Review:
        started = self.orchestrator.clock.now()

        def finished(outcome: ReviewOutcome, detail: str = "", version: int | None = None) -> None:
            seconds = round(self.orchestrator.clock.now() - started, 3)
            self.orchestrator.emit(
                ReviewFinished(
                    constellation_id=self.cid,
                    outcome=outcome,
                    version=version,
                    detail=detail,
                    seconds=seconds,
                )
            )

        self.orchestrator.emit(
            ReviewStarted(
                constellation_id=self.cid,
                reasons=list(reasons),
                failed=list(dict.fromkeys(failed)),
                deadline_s=self.deadline_s,
            )
        )
        constellation = self.orchestrator.constellation(self.cid)
        asking = asyncio.get_running_loop().create_task(
            self.planner.edit(self.request, constellation, self.context(), reasons=reasons)
        )
        try:
            answered = await self._within_deadline(asking)
        finally:
            if not asking.done():  # the deadline passed, or the review was cancelled
                self._abandon(asking)
        if not answered:
            problem = f"no answer within the {self.deadline_s:g}s deadline"
            log.warning("c=%s review timed out, the run goes on by its plan: %s", self.cid, problem)
            finished("timed_out")
            return Review(reasons, None, problem=problem, timed_out=True)
        try:
            decision = asking.result()
        except (PlanningError, ModelError) as exc:
            log.warning("c=%s review failed, plan unchanged: %s", self.cid, exc)
            finished("error", str(exc))
            return Review(reasons, None, problem=str(exc))
        log.info("c=%s planner says %s: %s", self.cid, decision.action, decision.rationale)
        if decision.action == "fail":
            finished("gave_up", decision.rationale)  # before the run's end is told
            self.orchestrator.cancel(
                self.cid, f"the planner gave up: {decision.rationale}", failed=True
            )
            return Review(reasons, decision)
        if decision.batch is None:
            finished("unchanged", decision.rationale)
            return Review(reasons, decision)
        try:
            version = self.orchestrator.apply_edits(self.cid, decision.batch)
        except (ConstellationError, ConstellationFinishedError) as exc:
            log.warning("c=%s edit no longer applies, plan unchanged: %s", self.cid, exc)
            finished("unchanged", f"the edit no longer applies: {exc}")
            return Review(reasons, decision, problem=str(exc))
        finished("edited", decision.rationale, version)
        return Review(reasons, decision, applied_version=version)

    async def _within_deadline(self, asking: asyncio.Task[EditDecision]) -> bool:
        """Wait for `asking` until the deadline passes on the orchestrator's clock;
        whether it is done."""
        expired: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def expire() -> None:
            if not expired.done():
                expired.set_result(None)

        timer = self.orchestrator.clock.call_later(self.deadline_s, expire)
        try:
            either: set[asyncio.Future[Any]] = {asking, expired}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            expired.cancel()
        return asking.done()

    def _abandon(self, asking: asyncio.Task[EditDecision]) -> None:
        """Cancel a model call nobody waits for any more; what it still returns is
        discarded (kept in `discarded` and logged)."""
        asking.cancel()
        self._abandoned.add(asking)
        asking.add_done_callback(self._late)

    def _late(self, asking: asyncio.Task[EditDecision]) -> None:
        self._abandoned.discard(asking)
        if asking.cancelled():
            log.debug("c=%s the abandoned review's model call stopped", self.cid)
            return
        error = asking.exception()
        if error is not None:
            log.info("c=%s the abandoned review ended with an error, ignored: %s", self.cid, error)
            return
        decision = asking.result()
        self.discarded.append(decision)
        log.warning(
            "c=%s an answer after the deadline was discarded (%s: %s)",
            self.cid,
            decision.action,
            decision.rationale,
        )

    def _let_go(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
