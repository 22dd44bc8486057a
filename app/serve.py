"""`orrery serve`: a headless orchestrator that devices dial in to over AIP, and that
scripts drive through the control API on the same port (/control/v1).

Without plans it serves until SIGINT/SIGTERM. With `--run PLAN` it waits for `--devices`
devices, runs the plans one after another on them, and exits with the worst result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from app.control.token import TOKEN_FILE
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
    planner: bool = True,
) -> None:
    """Run until SIGINT/SIGTERM (or `stop`), printing the URL devices should use.

    With `planner`, requests in words sent to the control API are planned with the
    `planner` model role (loaded on the first request) and reviewed while they run.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    orchestra = Orchestra(
        store, data_dir, host=host, port=port, config=config, tls_cert=tls_cert, tls_key=tls_key
    )
    request_planner = None
    stop_reviews = None
    if planner:
        from app.planning import plan_on

        request_planner, stop_reviews = plan_on(orchestra)
    try:
        async with orchestra:
            print(f"orrery: serving AIP at {orchestra.url}", flush=True)
            token = orchestra.data_dir / TOKEN_FILE
            print(f"orrery: control API at {orchestra.control_url} (token: {token})", flush=True)
            await stop.wait()
    finally:
        if stop_reviews is not None:
            stop_reviews()
        if request_planner is not None:
            await request_planner.close()
    log.info("orchestrator stopped")
