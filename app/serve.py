"""`orrery serve`: a headless orchestrator that devices dial in to over AIP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from agents.aip_dispatcher import AipDispatcher
from agents.fleet_store import StoreKeys, StoreLedger, store_observer
from agents.orchestrator import Orchestrator
from memory import Store
from protocol.session import ServerConfig
from protocol.transport import AIP_PATH, serve_aip, server_ssl_context

log = logging.getLogger("orrery.serve")


def build_orchestrator(store: Store, config: ServerConfig | None = None) -> Orchestrator:
    dispatcher = AipDispatcher(
        keys=StoreKeys(store),
        ledger=StoreLedger(store),
        config=config,
        observe=store_observer(store),
    )
    return Orchestrator(dispatcher)


async def serve(
    store: Store,
    *,
    host: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or `stop`), printing the URL devices should use."""
    orchestrator = build_orchestrator(store)
    dispatcher = orchestrator.dispatcher
    assert isinstance(dispatcher, AipDispatcher)
    ssl = server_ssl_context(tls_cert, tls_key) if tls_cert and tls_key else None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with await serve_aip(dispatcher.handle, host, port, ssl=ssl) as server:
        scheme = "wss" if ssl else "ws"
        print(f"orrery: serving AIP at {scheme}://{host}:{server.port}{AIP_PATH}", flush=True)
        await stop.wait()
    log.info("orchestrator stopped")
