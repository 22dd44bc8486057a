"""Shared fixtures for the device tests: a workspace, a progress recorder, a fake sink."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from devices.local import LocalDispatcher
from devices.tools import ToolContext
from protocol.tasks import TaskProgress, TaskResult

T = TypeVar("T")

WAIT = 15.0  # generous bound for anything awaited in these tests (test modules repeat it)


class Recorder(Generic[T]):
    """A list that can be awaited until an item matching a predicate arrives."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[T], bool]) -> T:
        async with asyncio.timeout(WAIT):
            while True:
                self._changed.clear()
                for item in self.items:
                    if predicate(item):
                        return item
                await self._changed.wait()


class ProgressLog(Recorder[tuple[str, str | None]]):
    """A `ToolContext.progress` callback that records (message, stream)."""

    def __call__(self, message: str, stream: str | None) -> None:
        self.add((message, stream))

    async def line(self, text: str) -> None:
        await self.wait_for(lambda item: item[0] == text)


class FakeSink:
    """The orchestrator's side of the dispatcher: records progress and results."""

    def __init__(self) -> None:
        self.progress: Recorder[TaskProgress] = Recorder()
        self.results: Recorder[TaskResult] = Recorder()
        self.devices_changed = 0

    def on_progress(self, progress: TaskProgress) -> None:
        self.progress.add(progress)

    def on_result(self, result: TaskResult) -> None:
        self.results.add(result)

    def on_devices_changed(self) -> None:
        self.devices_changed += 1

    async def result(self, star_id: str) -> TaskResult:
        return await self.results.wait_for(lambda result: result.star_id == star_id)

    async def line(self, text: str) -> TaskProgress:
        return await self.progress.wait_for(lambda progress: progress.message == text)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def progress() -> ProgressLog:
    return ProgressLog()


@pytest.fixture
def context(workspace: Path, progress: ProgressLog) -> ToolContext:
    return ToolContext(workspace=workspace, progress=progress)


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
async def dispatcher(workspace: Path, sink: FakeSink) -> AsyncIterator[LocalDispatcher]:
    local = LocalDispatcher(workspace, labels=["test"], max_tasks=3)
    local.attach(sink)
    yield local
    await local.aclose()


class Pids:
    """Processes a command reported by writing its PID to a file in the workspace.

    Every PID read is killed after the test, so a failing test leaves nothing behind.
    """

    def __init__(self, workspace: Path) -> None:
        self._workspace = workspace
        self.seen: list[int] = []

    def read(self, name: str) -> int:
        pid = self.written(name)
        assert pid is not None, f"no PID in {name}"
        return pid

    def written(self, name: str) -> int | None:
        """The PID in `name`, or None while the file is missing or half-written."""
        try:
            text = (self._workspace / name).read_text()
        except FileNotFoundError:
            return None
        if not text.endswith("\n"):
            return None
        pid = int(text)
        self.seen.append(pid)
        return pid

    @staticmethod
    def alive(pid: int) -> bool:
        """Whether `pid` runs (a zombie nobody reaped yet, or one being released, counts
        as gone; so does one reaped between the two looks)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")

    async def gone(self, pid: int) -> None:
        """Wait (bounded) until `pid` has ended: a kill is sent at once, dying takes a moment."""
        try:
            handle = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        loop.add_reader(handle, lambda: ended.done() or ended.set_result(None))
        try:
            async with asyncio.timeout(WAIT):  # a pidfd turns readable when its process ends
                await ended
        finally:
            loop.remove_reader(handle)
            os.close(handle)
        assert not self.alive(pid)


@pytest.fixture
def pids(workspace: Path) -> Iterator[Pids]:
    tracker = Pids(workspace)
    yield tracker
    for pid in tracker.seen:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
