"""The symlink race of the outside review (issue 16, finding 3), run for real: a thread
swaps a folder of the workspace for a symbolic link to an outside folder and back, as
fast as it can, while the file tools (and working folders) use paths through it. Every
call must either stay inside the workspace or be refused; nothing is ever written,
read or listed outside. Both ways of opening are tried: openat2 and the per-component
walk that older kernels get."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from devices.tools import (
    FsListTool,
    FsReadTool,
    FsWriteTool,
    PythonTool,
    Tool,
    ToolContext,
    ToolError,
    paths,
)
from devices.tools.artifacts import ArtifactPutTool

SECRET = "OUTSIDE SECRET"
WRITES, READS, LISTS, RUNS = 400, 200, 100, 40


@pytest.fixture(params=["openat2", "walk"])
def opening(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2":
        if not paths.openat2_available:
            pytest.skip("this kernel has no openat2 (Linux 5.6+); the walk is tested instead")
    else:
        monkeypatch.setattr(paths, "openat2_available", False)
    return str(request.param)


class Swapper:
    """Swaps `box` (a real folder) for a link to `outside` and back until stopped."""

    def __init__(self, workspace: Path, outside: Path) -> None:
        self.box = workspace / "box"
        self.real = workspace / ".box-real"
        self.outside = outside
        self.swaps = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._swap()
        except BaseException as error:  # said by __exit__: a dead swapper proves nothing
            self.error = error

    def _swap(self) -> None:
        while not self._stop.is_set():
            os.rename(self.box, self.real)
            os.symlink(self.outside, self.box)
            time.sleep(0.0005)  # each state lasts a moment (the GIL goes to the tools)
            os.unlink(self.box)
            os.rename(self.real, self.box)
            time.sleep(0.0005)
            self.swaps += 1

    def __enter__(self) -> Swapper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert self.error is None, f"the swapper failed: {self.error!r}"


@pytest.fixture
def setting(workspace: Path, tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text(SECRET)
    (outside / "only-outside").mkdir()
    box = workspace / "box"
    box.mkdir()
    (box / "data.txt").write_text("inside")
    (box / "only-inside").mkdir()
    return workspace, outside


async def attempt(tool: Tool[Any, Any], context: ToolContext, **args: object) -> Any:
    """The tool's result, or the `ToolError` it refused with."""
    try:
        result = await tool.run(tool.parse_args(args), context)
    except ToolError as refused:
        return refused
    assert isinstance(result, BaseModel)
    return result


@pytest.mark.slow
async def test_racing_a_link_swap_never_reaches_outside_the_workspace(
    opening: str, setting: tuple[Path, Path], context: ToolContext
) -> None:
    workspace, outside = setting
    before = sorted(p.name for p in outside.iterdir())
    with Swapper(workspace, outside) as swapper:
        outcomes = await asyncio.gather(
            *(attempt(FsWriteTool(), context, path=f"box/w{i}.txt", content="x",
                      make_dirs=False) for i in range(WRITES)),
            *(attempt(FsReadTool(), context, path="box/data.txt") for _ in range(READS)),
            *(attempt(FsListTool(), context, path="box") for _ in range(LISTS)),
            *(attempt(FsListTool(), context, path=".", recursive=True) for _ in range(LISTS)),
        )  # fmt: skip
    assert swapper.swaps >= 10, "the swapper did not run alongside the tools"
    assert sorted(p.name for p in outside.iterdir()) == before, "written outside"
    reads = outcomes[WRITES : WRITES + READS]
    assert [r for r in reads if not isinstance(r, ToolError) and r.content != "inside"] == []
    listings = outcomes[WRITES + READS :]
    names = {e.name for r in listings if not isinstance(r, ToolError) for e in r.entries}
    assert not {n for n in names if "only-outside" in n or n.endswith(f"/{SECRET}")}
    assert "only-inside" in names or "box/only-inside" in names  # some calls did succeed
    written = [r for r in outcomes[:WRITES] if not isinstance(r, ToolError)]
    assert written, "no write succeeded: the test would prove nothing"
    refused = [r for r in outcomes if isinstance(r, ToolError)]
    assert not [r for r in refused if SECRET in r.message]  # a refusal says nothing of it
    assert [r for r in refused if "outside the workspace" in r.message], "no call met the link"


@pytest.mark.slow
async def test_a_working_folder_or_an_upload_never_lands_outside(
    opening: str, setting: tuple[Path, Path], context: ToolContext
) -> None:
    workspace, outside = setting
    code = "import os; print(open('data.txt').read()); open('made-here', 'w').close()"
    runs = []
    with Swapper(workspace, outside):
        for _ in range(RUNS):  # one after another, each at a random phase of the swapping
            await asyncio.sleep(random.uniform(0, 0.003))  # (it would lock step otherwise)
            runs.append(await attempt(PythonTool(), context, code=code, cwd="box"))
    assert not (outside / "made-here").exists()
    printed = [r.stdout for r in runs if not isinstance(r, ToolError) and r.returncode == 0]
    assert SECRET not in "".join(printed)
    assert printed, f"no run succeeded: the test would prove nothing: {runs[:5]}"
    assert len(printed) < RUNS, "no run met the swapped link: the test would prove nothing"
    with Swapper(workspace, outside):
        uploads = await asyncio.gather(
            *(attempt(ArtifactPutTool(), context, path="box/data.txt") for _ in range(RUNS))
        )
    # without an orchestrator every upload fails; what matters is which file it opened
    assert all(isinstance(u, ToolError) for u in uploads)
    assert not [u for u in uploads if SECRET in u.message]
