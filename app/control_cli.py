"""`orrery approvals`, `orrery approve` and `orrery cancel`: answer a running `orrery serve`
from the command line, through its control API (docs/control-api.md).

`orrery run --server` shows a tool call that waits for a person as `approve? ... (request
R)`; `orrery approve R --server URL` lets it run, `--deny` refuses it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from app.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NO_DEVICE,
    EXIT_OK,
    EXIT_UNREACHABLE,
)

if TYPE_CHECKING:  # the client (websockets) loads only when one of these commands runs
    from app.client import Orrery


EXIT_CODES_HELP = "exit codes: 0 done; 2 refused (unknown id, bad token); 4 cannot reach the server"


def add_control_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approvals = commands.add_parser(
        "approvals",
        help="list the tool calls waiting for a person's approval on a server",
        description="List the tool calls that devices of `orrery serve` wait on, oldest first.",
        epilog=EXIT_CODES_HELP,
    )
    _add_server_options(approvals)
    approvals.add_argument("--json", action="store_true", help="one JSON object per line")

    approve = commands.add_parser(
        "approve",
        help="allow (or with --deny refuse) a tool call a device waits on",
        description="Answer the approval request REQUEST (the id `orrery run` shows after "
        "`approve?`, or `orrery approvals` lists): the device makes the call, or with "
        "--deny does not, and that attempt of the star fails.",
        epilog=EXIT_CODES_HELP,
    )
    approve.add_argument("request", metavar="REQUEST")
    _add_server_options(approve)
    approve.add_argument("--deny", action="store_true", help="refuse the call instead")
    approve.add_argument("--reason", default="", metavar="TEXT", help="recorded with the answer")

    cancel = commands.add_parser(
        "cancel",
        help="cancel a constellation running on a server",
        description="Cancel constellation ID on `orrery serve`: running stars are told to "
        "stop and nothing new starts. A constellation that already ended keeps its status.",
        epilog=EXIT_CODES_HELP,
    )
    cancel.add_argument("id", metavar="ID")
    _add_server_options(cancel)
    cancel.add_argument(
        "--reason", default="cancelled from the command line", metavar="TEXT", help="recorded"
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, metavar="URL", help="ws://HOST:PORT")
    add_token_option(parser)


def add_token_option(parser: argparse.ArgumentParser) -> None:
    """`--token T`: the server's control token, for every command that takes `--server`."""
    parser.add_argument(
        "--token",
        metavar="T",
        help="its control token (default: $ORRERY_CONTROL_TOKEN, else DATA_DIR/control.token)",
    )


def control_command(options: argparse.Namespace) -> int:
    """Run one of `COMMANDS`; returns the exit code."""
    try:
        return asyncio.run(_with_client(options))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _with_client(options: argparse.Namespace) -> int:
    from app.client import AuthRefused, Orrery, RequestRejected, ServerUnreachable

    try:
        async with Orrery(
            options.server,
            token=options.token,
            data_dir=options.data_dir,
            client_name=f"orrery {options.command}",
            reconnect_within=0,
        ) as client:
            await _ACTIONS[options.command](client, options)
    except (RequestRejected, AuthRefused, ServerUnreachable, ValueError) as exc:
        return exit_for_client_error(exc)
    return EXIT_OK


def exit_for_client_error(exc: Exception) -> int:
    """Say what went wrong with a control-API call on stderr; the exit code it means.

    `exc` is a control-client error, or the `ValueError` of a malformed --server URL."""
    from app.client import RequestRejected, RunInterrupted, ServerUnreachable

    code = EXIT_BAD_INPUT
    message = str(exc)
    if isinstance(exc, RunInterrupted):
        code, message = EXIT_UNREACHABLE, f"the server lost the run: {exc.reason}"
    elif isinstance(exc, RequestRejected):
        code = EXIT_NO_DEVICE if exc.code == "no_capable_device" else EXIT_BAD_INPUT
        message = exc.reason
    elif isinstance(exc, ServerUnreachable):
        code = EXIT_UNREACHABLE
    elif isinstance(exc, ValueError):
        message = f"--server: {exc}"
    print(f"orrery: error: {message}", file=sys.stderr)
    return code


async def _list_approvals(client: Orrery, options: argparse.Namespace) -> None:
    pending = await client.approvals()
    for item in pending:
        if options.json:
            print(json.dumps(item.model_dump(), ensure_ascii=False))
        else:
            where = f"{item.constellation}/{item.star}#{item.attempt}"
            print(f"{item.request}  {where}  on {item.device}  {item.tool}: {item.summary}")
    if not pending and not options.json:
        print("no tool call waits for approval", file=sys.stderr)


async def _approve(client: Orrery, options: argparse.Namespace) -> None:
    await client.approve(options.request, not options.deny, options.reason)
    print(f"{'refused' if options.deny else 'approved'} {options.request}", file=sys.stderr)


async def _cancel(client: Orrery, options: argparse.Namespace) -> None:
    status = await client.cancel(options.id, options.reason)
    print(f"constellation {options.id} is {status}", file=sys.stderr)


_ACTIONS: dict[str, Callable[[Orrery, argparse.Namespace], Awaitable[None]]] = {
    "approvals": _list_approvals,
    "approve": _approve,
    "cancel": _cancel,
}
"""What each of `COMMANDS` does once connected; the client's errors become exit codes."""

COMMANDS = tuple(_ACTIONS)
