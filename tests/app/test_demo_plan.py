"""`orrery demo`'s request in words becomes one collection per device and the summary."""

from __future__ import annotations

from agents.constellation import DeviceSelector
from agents.planner.context import PlanningContext
from agents.planner.decompose import StepPlanner
from app.commands.serve import DEMO_DEVICES, DEMO_REQUESTS
from devices.registry import DeviceInfo
from devices.tools import default_tools
from tests.agents.planner.scripted import ScriptedModel


async def test_the_demo_request_collects_on_every_device_and_summarises_on_atlas() -> None:
    schemas = default_tools().schemas()
    devices = [
        DeviceInfo(name=name, labels=frozenset(labels), tools=frozenset(schemas))
        for name, labels in DEMO_DEVICES
    ]
    context = PlanningContext.from_devices(devices, schemas)
    (request,) = DEMO_REQUESTS
    outcome = await StepPlanner(ScriptedModel([])).create(request, context)
    *collections, summary = outcome.constellation.stars.values()
    names = [star.on.name for star in collections if isinstance(star.on, DeviceSelector)]
    assert sorted(names) == ["atlas", "borealis", "cygnus"]
    assert len({star.effective_tool for star in collections}) == 1
    assert summary.effective_tool == "fs.write"
    assert summary.on == DeviceSelector(name="atlas")
    lines = {line.key for line in outcome.constellation.lines}
    assert lines == {(star.id, summary.id) for star in collections}
