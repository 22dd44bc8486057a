"""`orrery serve`: a headless orchestrator that devices dial in to over AIP.

Without plans it serves until SIGINT/SIGTERM. With `--run PLAN` it waits for `--devices`
devices, runs the plans one after another on them, and exits with the worst result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from app.fleet import Orchestra
from memory import Store
from protocol.session import ServerConfig

log = logging.getLogger("orrery.serve")


async def serve(
    store: Store,
    data_dir: Path,
    *,
    host: str,
    port: int,
    config: ServerConfig | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or `stop`), printing the URL devices should use."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    orchestra = Orchestra(
        store, data_dir, host=host, port=port, config=config, tls_cert=tls_cert, tls_key=tls_key
    )
    async with orchestra:
        print(f"orrery: serving AIP at {orchestra.url}", flush=True)
        await stop.wait()
    log.info("orchestrator stopped")
