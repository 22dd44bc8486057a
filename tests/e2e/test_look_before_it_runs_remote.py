"""`orrery run --server URL "words"` from a terminal shows the plan the server made and
waits for the answer: nothing runs before `y`, and `n` discards the proposal. Outside a
terminal the client's `[planner] unattended` decides, and `--yes` runs at once.

A served runtime in the test's loop on 127.0.0.1 (the app's planner over a scripted
model, this machine in process with real tools); `orrery run` a real subprocess on a
pseudo-terminal (as a person runs it) or on pipes (as a script does)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.runtime import InProcessDevice
from memory import Store
from tests.app.scripted_planner import NOTE_PLAN, NOTE_REQUEST, scripted_planner
from tests.e2e.processes import orrery
from tests.e2e.test_look_before_it_runs import QUESTION, in_terminal
from tests.served import Served

pytestmark = pytest.mark.slow

TIMEOUT = 60.0


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, plans: int) -> AsyncIterator[Served]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        here = InProcessDevice(tmp_path / "workspace", name="here")
        planner = scripted_planner(*[NOTE_PLAN] * plans)
        async with Served(store, tmp_path, planner=planner, extra=[here]) as running:
            yield running


def client(tmp_path: Path, running: Served, *options: str) -> list[str]:
    """`orrery run --server` from a data dir of its own, with the server's token file."""
    home = tmp_path / "client"
    return orrery(
        home, "run", "--server", running.control_url,
        "--token-file", str(tmp_path / "control.token"), *options, NOTE_REQUEST,
    )  # fmt: skip


async def test_from_a_terminal_the_servers_plan_is_shown_and_runs_only_on_yes(
    tmp_path: Path,
) -> None:
    note = tmp_path / "workspace" / "note.txt"
    async with serving(tmp_path, plans=2) as running:
        proposals = running.runtime.proposals

        def nothing_ran() -> None:
            assert len(proposals) == 1  # planned and held on the server ...
            assert not note.exists()  # ... and no device has seen it
            assert running.runtime.orchestrator.constellations() == []

        shown, code = await asyncio.to_thread(
            in_terminal, client(tmp_path, running), "n", nothing_ran, TIMEOUT
        )
        assert code == 0, shown
        assert "not run" in shown
        assert "plan: write the note, then read it back" in shown
        assert "s1     here           fs.write      note.txt" in shown
        assert "s2     here           fs.read       note.txt (after s1)" in shown
        assert len(proposals) == 0  # "n" discarded it on the server
        assert running.store.constellations(limit=5) == []
        assert not await asyncio.to_thread(note.exists)

        shown, code = await asyncio.to_thread(
            in_terminal, client(tmp_path, running), "y", nothing_ran, TIMEOUT
        )
        assert code == 0, shown
        assert await asyncio.to_thread(note.read_text) == "hello"
        (ran,) = running.store.constellations(limit=5)
        assert ran.status == "succeeded"


async def test_outside_a_terminal_the_clients_policy_decides_and_yes_runs_at_once(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, plans=2) as running:
        strict = tmp_path / "client"
        strict.mkdir()
        (strict / "orrery.toml").write_text("[planner]\nunattended = false\n")
        refused = await asyncio.to_thread(
            subprocess.run, client(tmp_path, running), capture_output=True, text=True,
            timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert "--yes" in refused.stderr
        assert len(running.runtime.proposals) == 0  # not even planned
        allowed = await asyncio.to_thread(
            subprocess.run, client(tmp_path, running, "--yes"), capture_output=True,
            text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert allowed.returncode == 0, allowed.stderr
        (strict / "orrery.toml").unlink()  # the default: planned runs may start unattended
        unattended = await asyncio.to_thread(
            subprocess.run, client(tmp_path, running), capture_output=True, text=True,
            timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert unattended.returncode == 0, unattended.stderr
        assert QUESTION not in unattended.stdout
        runs = running.store.constellations(limit=5)
        assert [run.status for run in runs] == ["succeeded", "succeeded"]
