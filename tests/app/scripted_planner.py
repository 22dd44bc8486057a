"""The app's real planner (`app.planning.RequestPlanner`) over a scripted planner model, for
tests of what front ends do with a plan made from words (the model itself: tests/e2e).

`scripted_planner(plan_json(...), ...)` answers each request with the next scripted plan
(the whole-plan strategy, so each plan is exactly the one scripted); `NOTE_PLAN` writes
a note on device `here` and reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from agents.models.manager import LazyModelManager
from app.planning import RequestPlanner
from app.settings import PlannerSettings
from devices.tools import default_tools
from tests.agents.planner.scripted import ScriptedModel, plan_json

NOTE_REQUEST = "write hello into note.txt and read it back"
NOTE_PLAN = plan_json(
    {
        "id": "s1",
        "title": "write the note",
        "tool": "fs.write",
        "on": "here",
        "args": {"path": "note.txt", "content": "hello"},
    },
    {
        "id": "s2",
        "title": "read it back",
        "tool": "fs.read",
        "on": "here",
        "args": {"path": "note.txt"},
        "after": ["s1"],
    },
    rationale="write the note, then read it back",
)


@dataclass
class ScriptedModels:
    """What `RequestPlanner` asks of a model manager: the scripted planner model."""

    model: ScriptedModel

    async def backend(self, role: str) -> ScriptedModel:
        assert role == "planner"
        return self.model

    async def close(self) -> None:
        pass


def scripted_planner(*plans: str) -> RequestPlanner:
    """A `RequestPlanner` whose model answers the requests with `plans`, in order."""
    return RequestPlanner(
        cast(LazyModelManager, ScriptedModels(ScriptedModel(list(plans)))),
        lambda: default_tools().schemas(),
        PlannerSettings(strategy="whole"),
    )
