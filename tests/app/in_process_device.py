"""An `orrery device` agent running in the test's own event loop, connected to a served
runtime (`tests.served.Served`) over real WebSockets on 127.0.0.1 (imported by the control
API tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from pydantic import BaseModel

from app.device_processes import DeviceProcesses
from devices.agent import DeviceAgent
from memory import Store
from tests.served import Served

WAIT = 30.0


@contextlib.asynccontextmanager
async def in_process_device(
    served: Served,
    store: Store,
    root: Path,
    *,
    name: str = "worker",
    labels: Sequence[str] = (),
    needs_approval: Callable[[str, BaseModel], str | None] | None = None,
    shutdown_grace: float = 10.0,
    within: float = WAIT,
) -> AsyncIterator[None]:
    """Enrol `name` once (its token kept in `root`, so a second use reconnects as the same
    device), run its agent until the block ends, and wait (at most `within` s) until the
    server sees it."""
    token_file = root / f"{name}.token"
    if name not in [row.name for row in store.devices()]:
        processes = DeviceProcesses(store, root / "devices")
        processes.add(name, labels)
        token_file.write_text(processes.token(name))
    agent = DeviceAgent(
        served.url,
        name,
        token_file.read_text(),
        data_dir=root / name,
        labels=list(labels),
        needs_approval=needs_approval,
        shutdown_grace=shutdown_grace,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        await served.wait_for_devices(1, within=within)
        yield
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, within)
