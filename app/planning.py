"""Requests in words: the planner model, plan creation and plan review for the app.

`RequestPlanner` owns the "planner" model role (loaded on first use from the
`[models]` configuration; the embedded default otherwise) and the `[planner]`
settings. `plan` turns a request into a constellation for the devices connected now;
`review_runs` gives each such constellation, once submitted, a `PlanReviewer` that edits
it by the edit policy while it runs, each review within `[planner] review_deadline_s`.

With a task memory, `plan` first recalls the nearest past requests
(`agents.planner.recall`): the plan that succeeded for the same request is run again,
adapted to the devices connected now, without asking the model; otherwise the plans
that succeeded for similar requests are the model's worked examples (the bundled ones
fill up, and remain the only ones while the memory is empty), and a plan that failed
for a similar request is shown as what not to repeat. The rationale says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from agents.constellation import Constellation
from agents.events import ConstellationFinished, ConstellationSubmitted, Event
from agents.models.manager import LazyModelManager
from agents.orchestrator import Orchestrator
from agents.planner.context import PlanningContext
from agents.planner.decompose import StepPlanner
from agents.planner.planner import Planner
from agents.planner.recall import (
    RecalledPlans,
    memory_rationale,
    prompt_avoid,
    prompt_examples,
    recall_plans,
    recalled_from,
    reuse_plan,
)
from agents.planner.review import EditPolicy, PlanReviewer
from app.device_run import device_models
from app.settings import PlannerSettings, load_planner_settings
from devices.registry import DeviceInfo
from memory.recall import Recollection

log = logging.getLogger("orrery.planning")

ToolSchemas = Callable[[], Mapping[str, Mapping[str, Any]]]


class PlanMemory(Protocol):
    """What the planner needs of the task memory (`app.runtime.memory.RuntimeMemory`)."""

    async def recall(self, request: str) -> Sequence[Recollection]: ...

    def note_plan(self, constellation_id: str, request_id: str) -> None: ...


class RequestPlanner:
    """Plans requests with the configured planner model; see the module docstring."""

    def __init__(
        self,
        models: LazyModelManager,
        tool_schemas: ToolSchemas,
        settings: PlannerSettings | None = None,
        *,
        memory: PlanMemory | None = None,
    ) -> None:
        self.models = models
        self.tool_schemas = tool_schemas
        self.settings = settings or PlannerSettings()
        self.memory = memory
        self._planner: Planner | None = None
        self._requests: dict[str, str] = {}  # constellation id -> the request it realises

    @classmethod
    def from_data_dir(cls, data_dir: Path, tool_schemas: ToolSchemas) -> RequestPlanner:
        """The planner `DATA_DIR/orrery.toml` configures (`ConfigError` if it is wrong)."""
        return cls(device_models(data_dir), tool_schemas, load_planner_settings(data_dir))

    def set_edit_policy(self, policy: str) -> None:
        """Use edit policy `policy` ("on_failure", "always" or "never") for runs submitted
        from now on (a person changed it in the desktop app's settings)."""
        self.settings = PlannerSettings.model_validate(
            {**self.settings.model_dump(), "edit_policy": policy}
        )

    def context(self, devices: Sequence[DeviceInfo]) -> PlanningContext:
        return PlanningContext.from_devices(devices, self.tool_schemas())

    async def planner(self) -> Planner:
        if self._planner is None:
            backend = await self.models.backend("planner")
            kind = StepPlanner if self.settings.strategy == "steps" else Planner
            self._planner = kind(
                backend,
                max_repairs=self.settings.max_repairs,
                max_stars=self.settings.max_stars,
            )
        return self._planner

    async def plan(self, request: str, devices: Sequence[DeviceInfo]) -> Constellation:
        """A validated constellation for `request`; `PlanningError` if there is none."""
        context = self.context(devices)
        recalled = await self.recalled(request, context)
        reused = reuse_plan(request, recalled, context)
        if reused is not None:
            constellation = reused[1]
            log.info("c=%s reused from memory: %s", constellation.id, constellation.rationale)
        else:
            planner = await self.planner()
            outcome = await planner.create(
                request,
                context,
                examples=prompt_examples(request, recalled),
                avoid=prompt_avoid(recalled),
            )
            constellation = outcome.constellation
            constellation.rationale = memory_rationale(recalled, outcome.rationale)
            log.info(
                "c=%s planned in %.1fs (%d attempt(s)): %s",
                constellation.id,
                outcome.seconds,
                outcome.attempts,
                constellation.rationale,
            )
        past = recalled_from(recalled)
        if past is not None and self.memory is not None:
            self.memory.note_plan(constellation.id, past)
        self._requests[constellation.id] = request
        return constellation

    async def recalled(self, request: str, context: PlanningContext) -> RecalledPlans:
        """What the memory offers for `request` on this fleet (nothing without one)."""
        if self.memory is None:
            return RecalledPlans()
        return recall_plans(await self.memory.recall(request), context, request=request)

    def forget(self, constellation_id: str) -> None:
        """Constellation `constellation_id`, which `plan` made, will never run."""
        self._requests.pop(constellation_id, None)

    def review_runs(
        self, orchestrator: Orchestrator, devices: Callable[[], Sequence[DeviceInfo]]
    ) -> Callable[[], None]:
        """From now on, every constellation this planner made gets a `PlanReviewer` when it
        is submitted to `orchestrator` (by the `[planner] edit_policy`) until it finishes.
        Returns a function that stops this."""
        reviewers: dict[str, PlanReviewer] = {}

        def on_event(event: Event) -> None:
            cid = event.constellation_id
            if isinstance(event, ConstellationSubmitted) and cid in self._requests:
                if self._planner is None or self.settings.edit_policy == "never":
                    return
                reviewers[cid] = PlanReviewer(
                    orchestrator,
                    self._planner,
                    cid,
                    request=self._requests[cid],
                    context=lambda: self.context(devices()),
                    policy=EditPolicy(self.settings.edit_policy),
                    deadline_s=self.settings.review_deadline_s,
                )
            elif isinstance(event, ConstellationFinished):
                self._requests.pop(cid, None)
                reviewer = reviewers.pop(cid, None)
                if reviewer is not None:
                    reviewer.close()

        stop_listening = orchestrator.events.listen(on_event)

        def stop() -> None:
            stop_listening()
            for reviewer in reviewers.values():
                reviewer.close()
            reviewers.clear()

        return stop

    async def close(self) -> None:
        await self.models.close()
