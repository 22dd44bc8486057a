"""A fanned-out star runs once per matching device, end to end on in-process devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import RequestRejected
from app.runtime import InProcessDevice, Runtime
from memory import Store

PLAN = """
name: hosts
stars:
  - id: host
    tool: shell.run
    on: {each: true, labels: [workers]}
    args: {cmd: "cat name.txt"}
  - id: summary
    tool: fs.write
    on: atlas
    args: {path: summary.txt, content: "hosts:\\n${host.output.stdout}"}
    after: [host]
"""


def devices(tmp_path: Path, *, named: tuple[str, ...]) -> list[InProcessDevice]:
    made = [InProcessDevice(tmp_path / "atlas", name="atlas")]
    for name in ("borealis", "cygnus"):
        workspace = tmp_path / name
        workspace.mkdir()
        if name in named:
            (workspace / "name.txt").write_text(name + "\n")
        made.append(InProcessDevice(workspace, name=name, labels=["workers"]))
    return made


async def test_every_branch_runs_and_the_summary_gets_their_outputs(tmp_path: Path) -> None:
    with Store.open_path(tmp_path / "orrery.db") as store:
        fleet = devices(tmp_path, named=("borealis", "cygnus"))
        async with Runtime(store, fleet) as runtime:
            run = await runtime.submit(plan_text=PLAN)
            assert (await run.wait()).succeeded
            snapshot = await runtime.constellation(run.id)
    assert set(snapshot.constellation["stars"]) == {"host-borealis", "host-cygnus", "summary"}
    assert (tmp_path / "atlas" / "summary.txt").read_text() == "hosts:\nborealis\ncygnus"


async def test_a_failed_branch_skips_what_waits_for_all_and_fails_the_run(tmp_path: Path) -> None:
    with Store.open_path(tmp_path / "orrery.db") as store:
        fleet = devices(tmp_path, named=("borealis",))
        async with Runtime(store, fleet) as runtime:
            run = await runtime.submit(plan_text=PLAN)
            result = await run.wait()
            snapshot = await runtime.constellation(run.id)
    assert not result.succeeded
    stars = snapshot.constellation["stars"]
    assert stars["host-borealis"]["status"] == "succeeded"
    assert stars["host-cygnus"]["status"] == "failed"
    assert stars["summary"]["status"] == "skipped"
    assert not (tmp_path / "atlas" / "summary.txt").exists()


async def test_a_fan_out_no_device_matches_is_refused(tmp_path: Path) -> None:
    plan = PLAN.replace("labels: [workers]", "labels: [gpu]")
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Runtime(store, devices(tmp_path, named=())) as runtime:
            with pytest.raises(RequestRejected, match="fans out over label"):
                await runtime.submit(plan_text=plan)
