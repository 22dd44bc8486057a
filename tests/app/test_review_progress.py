"""A review after a failure, as a person running `orrery run` sees it, in process and through
`orrery serve`'s control API (real WebSocket on 127.0.0.1, real SQLite, a real device agent
and real tools): "reviewing the failure of s1..." while it runs, its outcome after, the
`review.started` / `review.finished` events in the stream and in the store. The planner
model is scripted and never answers the review, so its deadline (from the `[planner]`
settings, on the real clock) passes and the run ends by its plan."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from rich.console import Console

from agents.events import ReviewFinished, ReviewStarted
from agents.models.manager import LazyModelManager
from app.client import Orrery
from app.commands.follow import Display, follow
from app.exit_codes import EXIT_FAILED
from app.interface import OrreryApi, Run
from app.planning import RequestPlanner
from app.progress import LiveProgress
from app.runtime import InProcessDevice, Runtime
from app.settings import PlannerSettings
from devices.tools import default_tools
from memory import Store
from tests.agents.planner.scripted import SlowModel, plan_json
from tests.app.in_process_device import in_process_device
from tests.served import Served

WAIT = 30.0
DEADLINE = 0.5
REQUEST = "read missing.txt"


class Models:
    """What `RequestPlanner` asks of a model manager, with a scripted planner model."""

    def __init__(self, model: SlowModel) -> None:
        self.model = model

    async def backend(self, role: str) -> SlowModel:
        assert role == "planner"
        return self.model

    async def close(self) -> None:
        self.model.gate.set()


def planner(device: str) -> tuple[RequestPlanner, SlowModel]:
    """A planner whose plan reads a file that is not there, and whose review never
    answers (the second model call waits for a gate nobody opens)."""
    plan = plan_json(
        {
            "id": "s1",
            "title": "read it",
            "tool": "fs.read",
            "on": device,
            "args": {"path": "missing.txt"},
        },
        rationale="one read",
    )
    model = SlowModel([plan, '{"decision": {"action": "continue", "rationale": "late"}}'],
                      slow_from=2)  # fmt: skip
    settings = PlannerSettings(strategy="whole", review_deadline_s=DEADLINE)
    models = cast(LazyModelManager, Models(model))
    return RequestPlanner(models, lambda: default_tools().schemas(), settings), model


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a line each, as a wide terminal shows them


async def followed(api: OrreryApi, run: Run, display: Display) -> int:
    return await asyncio.wait_for(follow(api, run, display, asyncio.Event()), WAIT)


def assert_review_shown(out: str) -> None:
    lines = [line.strip() for line in out.splitlines()]
    started = lines.index(f"planner reviewing the failure of s1... (deadline {DEADLINE:g}s)")
    ended = next(i for i, line in enumerate(lines) if line.startswith("planner no answer"))
    assert lines[ended].startswith(
        "planner no answer within the deadline, the run goes on by its plan ("
    )
    failed = next(i for i, line in enumerate(lines) if line.startswith("failed    s1: "))
    assert failed < started < ended


def test_the_live_display_shows_a_review_while_it_runs_and_escapes_model_text() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=300, color_system=None)
    with LiveProgress(console) as live:
        live(ReviewStarted(constellation_id="c", reasons=["star [b]x failed"], failed=["[b]x"],
                           deadline_s=10))  # fmt: skip
        running = [task.description for task in live._progress.tasks]
        live(ReviewFinished(constellation_id="c", outcome="edited", version=3,
                            detail="add a retry\x1b[2J", seconds=2.25))  # fmt: skip
        after = [task.description for task in live._progress.tasks]
    assert running == ["reviewing the failure of \\[b]x..."]  # markup escaped
    assert after == []
    text = out.getvalue()
    assert "planner reviewing the failure of [b]x... (deadline 10s)" in text
    assert "planner edited to version 3 (2.2s): add a retry\\x1b[2J" in text
    assert "\x1b[2J" not in text


def assert_review_events(types: list[str], events: list[object]) -> None:
    assert types[-3:] == ["review.started", "review.finished", "constellation.finished"]
    started = next(e for e in events if isinstance(e, ReviewStarted))
    finished = next(e for e in events if isinstance(e, ReviewFinished))
    assert (started.failed, started.deadline_s) == (["s1"], DEADLINE)
    assert finished.outcome == "timed_out"
    assert DEADLINE <= finished.seconds < WAIT


async def test_orrery_run_shows_the_review_and_its_deadline_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request_planner, model = planner("here")
    device = InProcessDevice(tmp_path / "workspace", name="here")
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Runtime(store, [device], planner=request_planner) as runtime:
            run = await runtime.submit(request=REQUEST)
            code = await followed(runtime, run, Display(where="this machine"))
            events = [e async for e in run.events()]  # the run's record, replayed
        stored = [row.type for row in store.events(run.id)]
    assert code == EXIT_FAILED
    assert_review_shown(capsys.readouterr().out)
    assert_review_events([str(getattr(e, "type", "")) for e in events], events)
    assert stored[-3:] == ["review.started", "review.finished", "constellation.finished"]
    assert model.cancelled == 1  # the review's model call was cancelled at the deadline


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        yield opened


async def test_orrery_run_server_streams_and_shows_the_review(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request_planner, model = planner("worker")
    async with (
        Served(store, tmp_path, planner=request_planner) as served,
        in_process_device(served, store, tmp_path, shutdown_grace=0.5, within=WAIT),
        Orrery(served.control_url, data_dir=tmp_path) as client,
    ):
        run = await client.submit(request=REQUEST)
        code = await followed(client, run, Display(server=served.control_url))
        events = [e async for e in run.events()]  # read again over the WebSocket
    assert code == EXIT_FAILED
    assert_review_shown(capsys.readouterr().out)
    assert_review_events([str(getattr(e, "type", "")) for e in events], events)
    assert model.cancelled == 1
