"""How a command gets the `OrreryApi` it drives: a remote server, or a runtime in process.

With `--server URL` a command talks to `orrery serve` through the control API (token from
`--token-file FILE`, `$ORRERY_CONTROL_TOKEN`, DATA_DIR/control.token, or `--token`, which
puts it on the command line where other local users can read it, and is warned about;
`--tls-ca PEM` to trust a self-signed `wss://` server); without, it opens the data dir's
runtime in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
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
        "--token-file",
        metavar="FILE",
        help="file holding its control token (default: $ORRERY_CONTROL_TOKEN, else "
        "DATA_DIR/control.token)",
    )
    parser.add_argument(
        "--token",
        metavar="T",
        help="its control token on the command line, where other local users can read it: "
        "prefer --token-file or $ORRERY_CONTROL_TOKEN",
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
        token=control_token(options),
        token_source=getattr(options, "token_file", None),
        data_dir=options.data_dir,
        client_name=f"orrery {options.command}",
        reconnect_within=reconnect_within,
        ssl=ssl,
    ) as client:
        yield client


class TokenMissing(ValueError):
    """A token file that cannot be read or is empty; the message names it."""


def token_file(path: str, what: str) -> str:
    """The token kept in the file `path` (`--token-file`), stripped; `TokenMissing` if
    the file cannot be read or is empty."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenMissing(f"--token-file: cannot read {path}: {exc}") from None
    if not text:
        raise TokenMissing(f"--token-file: {path} is empty; put {what} in it")
    return text


def warn_command_line_token(env: str) -> None:
    """Say on stderr that `--token` is readable by every local user, and what to use."""
    print(
        "orrery: warning: --token puts a secret on the command line, where every user of "
        "this machine can read it (ps, /proc/PID/cmdline); use --token-file FILE or "
        f"${env} instead",
        file=sys.stderr,
    )


def control_token(options: argparse.Namespace) -> str | None:
    """`--token-file`'s token, else `--token`'s (warned about); None lets the client find
    one ($ORRERY_CONTROL_TOKEN, DATA_DIR/control.token)."""
    from app.control.token import ENV_TOKEN

    if getattr(options, "token_file", None):
        return token_file(options.token_file, "the server's control token")
    if options.token:
        warn_command_line_token(ENV_TOKEN)
        return str(options.token)
    return None


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
    options: argparse.Namespace,
    *,
    this_machine: bool = False,
    planner: bool = False,
    reconnect_within: float = 0.0,
) -> AsyncIterator[OrreryApi]:
    """`remote` with `--server` (reconnecting for up to `reconnect_within` seconds
    after the connection drops), else `in_process`."""
    if options.server:
        async with remote(options, reconnect_within=reconnect_within) as client:
            yield client
    else:
        async with in_process(options, this_machine=this_machine, planner=planner) as parts:
            yield parts.runtime
