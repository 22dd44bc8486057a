"""How a command gets the `OrreryApi` it drives: a remote server, or a runtime in process.

With `--server URL` a command talks to `orrery serve` through the control API (token from
`--token`, `$ORRERY_CONTROL_TOKEN` or DATA_DIR/control.token; `--tls-ca PEM` to trust a
self-signed `wss://` server); without, it opens the data dir's runtime in this process.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import data_dir

if TYPE_CHECKING:
    from app.client import Orrery
    from app.interface import OrreryApi
    from app.runtime import RuntimeParts


def add_server_options(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """`--server URL`, `--token T` and `--tls-ca PEM`, for every command a server answers."""
    where = "" if required else " (default: this data dir, in process)"
    parser.add_argument(
        "--server",
        required=required,
        metavar="URL",
        help=f"the `orrery serve` to ask: ws://HOST:PORT or wss://HOST:PORT{where}",
    )
    parser.add_argument(
        "--token",
        metavar="T",
        help="its control token (default: $ORRERY_CONTROL_TOKEN, else DATA_DIR/control.token)",
    )
    parser.add_argument(
        "--tls-ca", metavar="PEM", help="CA certificate to trust for a wss:// server"
    )


@contextlib.asynccontextmanager
async def remote(
    options: argparse.Namespace, *, reconnect_within: float = 30.0
) -> AsyncIterator[Orrery]:
    """The control-API client of `--server`."""
    from app.client import Orrery
    from protocol.transport import client_ssl_context

    ssl = client_ssl_context(Path(options.tls_ca)) if options.tls_ca else None
    async with Orrery(
        options.server,
        token=options.token,
        data_dir=options.data_dir,
        client_name=f"orrery {options.command}",
        reconnect_within=reconnect_within,
        ssl=ssl,
    ) as client:
        yield client


@contextlib.asynccontextmanager
async def in_process(
    options: argparse.Namespace, *, this_machine: bool = False, planner: bool = False
) -> AsyncIterator[RuntimeParts]:
    """The data dir's runtime in this process (with this machine as a device, and the
    planner, when asked)."""
    from app.models_cli import preparation_progress
    from app.runtime import RuntimeOptions, ThisMachine, open_runtime

    machine = None
    if this_machine:
        workspace = getattr(options, "workspace", None)
        machine = ThisMachine(
            workspace=Path(workspace) if workspace else None,
            max_tasks=getattr(options, "max_tasks", 4),
        )
    with preparation_progress() as progress:  # the embedded model's first-use preparation
        settings = RuntimeOptions(
            data_dir(options.data_dir),
            this_machine=machine,
            planner=planner,
            model_progress=progress,
        )
        async with open_runtime(settings) as parts:
            yield parts


@contextlib.asynccontextmanager
async def api_for(
    options: argparse.Namespace, *, this_machine: bool = False, planner: bool = False
) -> AsyncIterator[OrreryApi]:
    """`remote` with `--server`, else `in_process`."""
    if options.server:
        async with remote(options, reconnect_within=0) as client:
            yield client
    else:
        async with in_process(options, this_machine=this_machine, planner=planner) as parts:
            yield parts.runtime
