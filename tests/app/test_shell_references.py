"""The outside review's injection, run again (issue 16, finding 4): content one star
fetched, passed to a shell command with `${...}`, is printed as text, never run. A real
runtime with this machine as its device, real processes, a real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.runtime import RuntimeOptions, ThisMachine, open_runtime

FETCHED = "hi; touch X; $(touch Y) `touch Z` '; touch W; ' \"; touch V; \"\n"
SHOWN = FETCHED.rstrip("\n")

PLAN = """
name: relay
stars:
  - id: a
    tool: fs.read
    args: {path: fetched.txt}
  - id: b
    after: [a]
    tool: shell.run
    args: {cmd: "echo got ${a.output.content}"}
  - id: c
    after: [a]
    tool: shell.run
    args: {cmd: "echo \\"got: ${a.output.content}\\""}
  - id: d
    after: [a]
    tool: shell.run
    args: {cmd: "echo \\"$B\\"", env: {B: "${a.output.content}"}}
"""


async def test_fetched_content_passed_to_a_shell_is_printed_not_run(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "fetched.txt").write_text(FETCHED)  # what a star fetched from the web
    options = RuntimeOptions(
        tmp_path / "data", this_machine=ThisMachine(workspace=workspace), planner=False
    )
    async with open_runtime(options) as parts:
        run = await parts.runtime.submit(plan_text=PLAN)
        result = await asyncio.wait_for(run.wait(), 60)
        snapshot = await parts.runtime.constellation(run.id)
    assert result.succeeded, result.reason
    stars = snapshot.constellation["stars"]
    assert stars["b"]["output"]["stdout"] == f"got {SHOWN}\n"
    assert stars["c"]["output"]["stdout"] == f"got: {SHOWN}\n"
    assert stars["d"]["output"]["stdout"] == f"{FETCHED}\n"  # a whole value, as it is
    made = sorted(p.name for p in workspace.iterdir())
    assert made == ["fetched.txt"], f"the content ran as shell code: {made}"
