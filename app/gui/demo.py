"""`orrery demo` in the window: three device processes, the demo plans, then the request.

It drives the app as a person would, through the same session the window uses: it starts
the devices (enrolled in the embedded orchestrator's store), waits for them to join, and
submits each plan and then the request, showing each run until it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from app.gui.connection import Connection
from app.gui.session import GuiSession

log = logging.getLogger("orrery.gui.demo")


async def run_demo(
    connection: Connection, session: GuiSession, home: Path, options: argparse.Namespace
) -> None:
    from app.commands.serve import DEMO_DEVICES, DEMO_REQUESTS
    from app.device_processes import DeviceProcesses
    from app.resources import resources_dir
    from app.runtime import Runtime
    from memory import Store

    runtime = connection.api
    assert isinstance(runtime, Runtime)
    assert isinstance(connection.store, Store)
    assert connection.device_url is not None
    processes = DeviceProcesses(connection.store, home / "fleet-devices")
    try:
        for name, labels in DEMO_DEVICES:
            processes.add(name, labels)
            processes.start(name, connection.device_url)
        await runtime.wait_for_devices(len(DEMO_DEVICES) + 1, within=options.wait)
        plans = sorted((resources_dir() / "plans" / "fleet").glob("*.yaml"))
        targets: list[str | Path] = [*plans]
        if not getattr(options, "no_requests", False):
            targets.extend(DEMO_REQUESTS)
        for target in targets:
            log.info("demo: running %s", target)
            run = await runtime.submit(target)
            await session.show(run.id)
            await run.wait()
    finally:
        await asyncio.to_thread(processes.stop_all)
