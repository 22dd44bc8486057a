"""Run a constellation with an embedded orchestrator and this machine as the only device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

from agents.constellation import Constellation
from agents.events import EventStream, Listener
from agents.orchestrator import Orchestrator, RunHandle
from devices.local import LocalDispatcher
from memory import Store

log = logging.getLogger("orrery.run")


async def wait_cancelling_on_signals(handle: RunHandle) -> Constellation:
    """Wait for a submitted constellation; SIGINT/SIGTERM meanwhile cancel it cleanly."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, handle.cancel, f"interrupted by signal {signum}")
            installed.append(signum)
    try:
        return await handle.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def local_dispatcher(workspace: Path, *, max_tasks: int = 4) -> LocalDispatcher:
    return LocalDispatcher(workspace, name="local", max_tasks=max_tasks)


def local_tools(workspace: Path) -> frozenset[str]:
    """The tools the local device offers (for validating plans before they run)."""
    return frozenset(local_dispatcher(workspace).devices()[0].tools)


async def run_locally(
    constellation: Constellation,
    *,
    workspace: Path,
    listeners: Iterable[Listener] = (),
    max_tasks: int = 4,
    store: Store | None = None,
    dispatcher: LocalDispatcher | None = None,
    attach: Callable[[Orchestrator], Callable[[], None]] | None = None,
) -> Constellation:
    """Run to the end; Ctrl-C (SIGINT) or SIGTERM cancels the constellation cleanly.

    With a `store`, every event and the final constellation are recorded in it.
    `attach` is called with the orchestrator before the constellation is submitted
    (e.g. to review it with the planner) and returns what undoes it.
    """
    dispatcher = dispatcher or local_dispatcher(workspace, max_tasks=max_tasks)
    events = EventStream()
    for listener in listeners:
        events.listen(listener)
    orchestrator = Orchestrator(
        dispatcher, events=events, known_tools=dispatcher.devices()[0].tools
    )
    recorder = None
    if store is not None:
        from app.recorder import RunRecorder

        recorder = RunRecorder(store, orchestrator.constellation)
        events.listen(recorder)
    detach = attach(orchestrator) if attach is not None else None
    try:
        return await wait_cancelling_on_signals(orchestrator.submit(constellation))
    finally:
        if detach is not None:
            detach()
        await dispatcher.aclose()
        if recorder is not None:
            recorder.flush()
