"""What the planner's reviewer learns of real tool results: the exit code of shell.run and
python.run (which they report as `returncode`), sizes of text, never the text itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agents.constellation import PlanSpec, StarStatus, build_constellation
from agents.orchestrator import Orchestrator
from agents.planner.context import PlanningContext
from agents.planner.prompt import edit_messages
from agents.planner.summary import TextFacts, summarise
from devices.local import LocalDispatcher

WAIT = 30.0

PLAN = {
    "name": "exit-codes",
    "stars": [
        {"id": "sh", "tool": "shell.run", "args": {"cmd": "echo out; exit 3", "check": False}},
        {"id": "py", "tool": "python.run", "args": {"code": "raise SystemExit(4)", "check": False}},
        {"id": "failing", "tool": "shell.run", "args": {"cmd": "echo secret >&2; exit 5"}},
        {"id": "fine", "tool": "shell.run", "args": {"cmd": "true"}},
    ],
}


async def test_the_reviewer_sees_the_exit_codes_of_real_shell_and_python_results(
    tmp_path: Path,
) -> None:
    local = LocalDispatcher(tmp_path / "workspace", name="box")
    try:
        constellation = build_constellation(PlanSpec.model_validate(PLAN))
        final = await asyncio.wait_for(Orchestrator(local).run(constellation), WAIT)
    finally:
        await local.aclose()
    stars = final.stars
    assert "returncode" in stars["sh"].output  # the real field, as the tools report it

    codes = {star_id: summarise(star).exit_code for star_id, star in stars.items()}
    assert codes == {"sh": 3, "py": 4, "failing": 5, "fine": 0}
    assert stars["failing"].status is StarStatus.FAILED
    failing = summarise(stars["failing"])
    assert "returncode" not in failing.fields  # said once, as exit_code
    assert failing.fields["stderr"] == TextFacts(chars=len("secret\n"), lines=2)

    context = PlanningContext.from_devices(local.devices(), local.tool_schemas())
    messages = edit_messages(
        "check the exit codes", final, context, reasons=["a star failed"], new_prefix="v2s"
    )
    view = json.loads(messages[-1]["content"].split("results so far: ")[1].split("\n")[0])
    seen = {star["id"]: star.get("exit_code") for star in view["stars"]}
    assert seen == {"sh": 3, "py": 4, "failing": 5, "fine": 0}
    assert "secret" not in messages[-1]["content"]
