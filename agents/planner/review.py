"""When the planner edits a running plan: the edit policy and the reviewer that applies it.

`PlanReviewer` listens to one constellation's events. When a star finishes in a way the
policy cares about (`on_failure`: a star failed for good; `always`: any star finished;
and under either, a star whose output asks for it with `"replan": true`), it holds the
constellation open (`Orchestrator.hold`), lets results that arrive together batch up,
asks `Planner.edit` with the bounded view, and applies the returned batch atomically,
or ends the run `failed` when the planner says the request cannot be met. Reviews per run are
bounded; a planner error or a batch the plan outgrew meanwhile changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from agents.constellation import ConstellationError, StarStatus
from agents.events import Event, StarFinished
from agents.orchestrator import ConstellationFinishedError, Orchestrator
from agents.planner.context import PlanningContext
from agents.planner.errors import PlanningError
from agents.planner.planner import EditDecision, Planner

log = logging.getLogger("orrery.planner.review")

MAX_REVIEWS = 5


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
    ) -> None:
        self.orchestrator = orchestrator
        self.planner = planner
        self.cid = constellation_id
        self.request = request
        self.context = context
        self.policy = policy
        self.max_reviews = max_reviews
        self.reviews: list[Review] = []
        self._reasons: list[str] = []
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

    def _on_event(self, event: Event) -> None:
        if event.constellation_id != self.cid or not isinstance(event, StarFinished):
            return
        reason = self._reason(event)
        if reason is None or len(self.reviews) >= self.max_reviews:
            return
        self._reasons.append(reason)
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
                self.reviews.append(await self._review(reasons))
        finally:
            self._task = None
            self._reasons.clear()
            self._let_go()

    async def _review(self, reasons: tuple[str, ...]) -> Review:
        try:
            constellation = self.orchestrator.constellation(self.cid)
            decision = await self.planner.edit(
                self.request, constellation, self.context(), reasons=reasons
            )
        except PlanningError as exc:
            log.warning("c=%s review failed, plan unchanged: %s", self.cid, exc)
            return Review(reasons, None, problem=str(exc))
        log.info("c=%s planner says %s: %s", self.cid, decision.action, decision.rationale)
        if decision.action == "fail":
            self.orchestrator.cancel(
                self.cid, f"the planner gave up: {decision.rationale}", failed=True
            )
            return Review(reasons, decision)
        if decision.batch is None:
            return Review(reasons, decision)
        try:
            version = self.orchestrator.apply_edits(self.cid, decision.batch)
        except (ConstellationError, ConstellationFinishedError) as exc:
            log.warning("c=%s edit no longer applies, plan unchanged: %s", self.cid, exc)
            return Review(reasons, decision, problem=str(exc))
        return Review(reasons, decision, applied_version=version)

    def _let_go(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
