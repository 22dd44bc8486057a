"""`orrery device`: run this machine as a device agent until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from devices.agent import DeviceAgent
from protocol.transport import client_ssl_context


async def run_device(
    *,
    server: str,
    name: str,
    token: str,
    data_dir: Path,
    labels: list[str],
    max_tasks: int,
    workspace: Path | None = None,
    tls_ca: Path | None = None,
) -> None:
    """Connect (and reconnect) until SIGINT/SIGTERM; raises `DeviceRefused` if refused."""
    ssl = client_ssl_context(tls_ca) if server.startswith("wss") else None
    agent = DeviceAgent(
        server,
        name,
        token,
        data_dir=data_dir,
        workspace=workspace,
        labels=labels,
        max_tasks=max_tasks,
        ssl=ssl,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)
