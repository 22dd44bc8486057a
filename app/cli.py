"""The `orrery` command line: the parser, and a table of which module runs which command.

Each command lives in one module of `app.commands` (or `app.models_cli`), imported only
when that command runs, so `orrery --help` and `orrery run --server URL --json` load
neither Qt nor the model code. `app.commands.runner` runs it: its event loop, its signals
and its exit code are handled there, once.

Exit codes (`orrery run`, and the commands that run plans):
  0    the constellation succeeded
  1    it failed (the reason names the star), or someone else cancelled it
  2    bad input: unreadable or invalid plan, a request the planner rejected, bad
       arguments, a missing or wrong control token
  3    no capable device: a star needs what no connected device offers
  4    cannot reach the server (`--server`), or lost it for good mid-run
  130  interrupted (Ctrl-C): running stars were cancelled

The global options `--data-dir DIR` and `-v` go before or after the command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from app.commands.clients import add_server_options

EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 the plan failed; 2 bad input (invalid plan, rejected request, "
    "bad token); 3 no capable device; 4 cannot reach the server; 130 interrupted"
)
CONTROL_EXIT_CODES = (
    "exit codes: 0 done; 2 refused (unknown id, bad token); 4 cannot reach the server"
)

COMMANDS: dict[str, str] = {
    "run": "app.commands.run:main",
    "demo": "app.commands.serve:demo",
    "serve": "app.commands.serve:main",
    "device": "app.commands.device:main",
    "devices enroll": "app.commands.records:devices_enroll",
    "devices list": "app.commands.records:devices_list",
    "history": "app.commands.records:history",
    "show": "app.commands.records:show",
    "status": "app.commands.records:status",
    "approvals": "app.commands.control:approvals",
    "approve": "app.commands.control:approve",
    "cancel": "app.commands.control:cancel",
    "retry": "app.commands.control:retry",
    "mcp": "app.commands.mcp:main",
    "memory search": "app.commands.memory:search",
    "memory show": "app.commands.memory:show",
    "memory forget": "app.commands.memory:forget",
}
"""Command (with its subcommand) -> `module:function` (async, `(options, stop) -> int`)."""

QT_COMMANDS: dict[str, str] = {
    "gui": "app.gui.main:main",
    "demo": "app.gui.main:demo",
}
"""Commands that run on Qt's event loop (`(options) -> int`): the desktop app."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orrery",
        description="Automate tasks across several machines with task constellations.",
    )
    _add_global_options(parser, here=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run a plan file or a request to completion",
        description="Run a plan file (YAML) or a request in words. Without --server, an "
        "embedded orchestrator runs it with this machine as the device; with --server, the "
        "plan (or request) goes to `orrery serve` through its control API and its events "
        "stream back. The constellation's id is printed first; the outputs the stars "
        "produced last.",
        epilog=EXIT_CODES_HELP,
    )
    run.add_argument(
        "target",
        metavar="PLAN|REQUEST",
        help="a plan file (an existing file, or a name ending .yaml/.yml), else a request in words",
    )
    add_server_options(run)
    _add_run_options(run)
    run.add_argument(
        "--yes",
        action="store_true",
        help="run a plan made from words without showing it first and asking",
    )

    gui = commands.add_parser(
        "gui",
        help="the desktop app",
        description="Open the desktop app. Without --server it hosts the orchestrator: this "
        "machine is a device, and remote devices dial in at ws://HOST:PORT/aip/v1 (enrol "
        "them from the Devices panel); with --server it drives that `orrery serve`.",
    )
    add_server_options(gui)
    gui.add_argument("--host", default="127.0.0.1", help="address devices dial in to")
    gui.add_argument("--port", type=int, default=8765, help="its port (0 picks a free one)")
    gui.add_argument("--workspace", metavar="DIR", help="folder this machine's tools work in")

    demo = commands.add_parser(
        "demo",
        help="run the fleet sample plans on three local device processes",
        description="Start an orchestrator and three `orrery device` processes on this machine "
        "(atlas: reports, borealis: build, cygnus: storage; data under "
        "DATA_DIR/fleet-devices), run resources/plans/fleet/*.yaml on them, then a request "
        "in words planned by the local model (unless --no-requests), stop them. In the "
        "desktop app unless --headless.",
    )
    demo.add_argument("--headless", action="store_true", help="no window: the terminal only")
    demo.add_argument(
        "--no-requests",
        action="store_true",
        help="run only the sample plans, not the request planned by the local model",
    )
    demo.add_argument("--wait", type=float, default=60.0, metavar="S", help="device start limit")
    demo.add_argument("--json", action="store_true", help="print one JSON event per line")

    serve = commands.add_parser(
        "serve",
        help="a headless orchestrator that devices connect to",
        description="Listen for device agents over AIP (ws://HOST:PORT/aip/v1) and for "
        "control clients (ws://HOST:PORT/control/v1). Devices must be enrolled first with "
        "`orrery devices enroll NAME`.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    serve.add_argument("--tls-cert", metavar="PEM", help="certificate chain, for wss://")
    serve.add_argument("--tls-key", metavar="PEM", help="private key, for wss://")
    serve.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="PLAN",
        help="run this plan file on the connected devices, then exit (repeatable)",
    )
    serve.add_argument(
        "--request",
        action="append",
        default=[],
        metavar="TEXT",
        help="after the --run plans, plan this request in words with the planner model, run "
        "it on the connected devices, then exit (repeatable)",
    )
    serve.add_argument(
        "--devices", type=int, default=1, metavar="N", help="with --run: wait for N devices"
    )
    serve.add_argument(
        "--wait", type=float, default=60.0, metavar="S", help="with --run: wait at most S s"
    )
    serve.add_argument(
        "--heartbeat",
        type=float,
        metavar="S",
        help="seconds between device heartbeats (3 missed = lost; default 5)",
    )
    serve.add_argument("--json", action="store_true", help="with --run: JSON events per line")
    serve.add_argument(
        "--approve-all",
        action="store_true",
        help="allow every tool call a device's policy wants approved (with --run, such calls "
        "are otherwise refused; without, they wait for `orrery approve`)",
    )
    serve.add_argument(
        "--no-planner",
        action="store_true",
        help="refuse requests in words (plans only); by default they are planned with the "
        "planner model, loaded on the first request",
    )

    device = commands.add_parser(
        "device",
        help="run this machine as a device agent",
        description="Connect to an orchestrator and run the stars it assigns; reconnects by "
        "itself until stopped (Ctrl-C). Exit 2 if the orchestrator refuses the device. The "
        "token comes from --token-file, else $ORRERY_DEVICE_TOKEN, else --token (warned "
        "about: every user of this machine can read a command line). At start it says "
        "which of its tools run unconfined (docs/security.md).",
    )
    device.add_argument("--server", required=True, metavar="URL", help="ws://HOST:PORT")
    device.add_argument("--name", required=True, metavar="N", help="this device's name")
    device.add_argument("--token-file", metavar="FILE", help="file holding its enrolment token")
    device.add_argument(
        "--token",
        metavar="T",
        help="its enrolment token on the command line, where other local users can read it: "
        "prefer --token-file or $ORRERY_DEVICE_TOKEN",
    )
    device.add_argument("--labels", default="", metavar="a,b", help="comma-separated labels")
    device.add_argument("--max-tasks", type=int, default=4, metavar="K", help="stars at once")
    device.add_argument("--workspace", metavar="DIR", help="folder its tools work in")
    device.add_argument("--tls-ca", metavar="PEM", help="CA certificate to trust for wss://")
    device.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        metavar="S",
        help="on SIGINT/SIGTERM, give running stars S seconds to finish, then hand them back",
    )
    device.add_argument(
        "--policy",
        metavar="TOML",
        help="what this device allows (default: DATA_DIR/device.toml; without one, file "
        "tools stay inside the workspace, http.get fetches nothing, and shell.run and "
        "python.run run unconfined: [sandbox] confines them); see docs/devices.md",
    )

    devices = commands.add_parser("devices", help="enrol and list devices")
    devices_commands = devices.add_subparsers(dest="devices_command", required=True)
    enroll = devices_commands.add_parser(
        "enroll",
        help="print a new enrolment token for a device",
        description="Create (or rotate) the enrolment token of device NAME and print it once. "
        "Only a derived key is stored; give the token to the device with --token-file or "
        "$ORRERY_DEVICE_TOKEN.",
    )
    enroll.add_argument("name", metavar="NAME")
    add_server_options(enroll)
    listing = devices_commands.add_parser(
        "list", help="known devices and their state", epilog=CONTROL_EXIT_CODES
    )
    add_server_options(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    history = commands.add_parser(
        "history",
        help="list the constellations that ran",
        description="List recorded constellations, newest first (DATA_DIR/orrery.db, or a "
        "server's with --server).",
    )
    history.add_argument("--limit", type=int, default=20, metavar="N", help="at most N rows")
    history.add_argument("--status", metavar="S", help="only those with this status")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    add_server_options(history)

    show = commands.add_parser(
        "show",
        help="one constellation: stars, status, outputs, rationale (text, JSON, PNG)",
        description="Show a recorded constellation: its stars and their status, the outputs "
        "they produced, the plan's rationale and each edit's. ID may be a unique prefix.",
    )
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument("--png", metavar="FILE", help="also draw the graph into this PNG file")
    show.add_argument("--svg", metavar="FILE", help="also draw the graph into this SVG file")
    show.add_argument("--output", metavar="STAR", help="print only this star's whole output")
    add_server_options(show)

    status = commands.add_parser(
        "status", help="what runs now, the devices, and what waits for approval"
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    add_server_options(status)

    approvals = commands.add_parser(
        "approvals",
        help="list the tool calls waiting for a person's approval on a server",
        description="List the tool calls that devices of `orrery serve` wait on, oldest first.",
        epilog=CONTROL_EXIT_CODES,
    )
    add_server_options(approvals, required=True)
    approvals.add_argument("--json", action="store_true", help="one JSON object per line")

    approve = commands.add_parser(
        "approve",
        help="allow (or with --deny refuse) a tool call a device waits on",
        description="Answer the approval request REQUEST (the id `orrery run` shows after "
        "`approve?`, or `orrery approvals` lists): the device makes the call, or with "
        "--deny does not, and that attempt of the star fails.",
        epilog=CONTROL_EXIT_CODES,
    )
    approve.add_argument("request", metavar="REQUEST")
    add_server_options(approve, required=True)
    approve.add_argument("--deny", action="store_true", help="refuse the call instead")
    approve.add_argument("--reason", default="", metavar="TEXT", help="recorded with the answer")

    mcp = commands.add_parser(
        "mcp",
        help="serve Orrery to an MCP client on stdin/stdout (docs/mcp.md)",
        description="Be an MCP server on standard input and output for an MCP client (an "
        "assistant, an IDE), with the tools submit, status, wait, cancel, approvals, "
        "approve, devices and history, each a request to the `orrery serve` at --server.",
        epilog=CONTROL_EXIT_CODES,
    )
    add_server_options(mcp, required=True)

    cancel = commands.add_parser(
        "cancel",
        help="cancel a constellation (or one star of it) running on a server",
        description="Cancel constellation ID on `orrery serve`: running stars are told to "
        "stop and nothing new starts. A constellation that already ended keeps its status.",
        epilog=CONTROL_EXIT_CODES,
    )
    cancel.add_argument("id", metavar="ID")
    cancel.add_argument("--star", metavar="S", help="cancel only this star")
    add_server_options(cancel, required=True)
    cancel.add_argument(
        "--reason", default="cancelled from the command line", metavar="TEXT", help="recorded"
    )

    retry = commands.add_parser(
        "retry",
        help="run a finished constellation again from where it failed",
        description="Start a new constellation that keeps what constellation ID's stars "
        "produced and runs again the stars that failed, were cancelled or skipped (or only "
        "--star S and what depends on it); then follow it like `orrery run`.",
        epilog=EXIT_CODES_HELP,
    )
    retry.add_argument("id", metavar="ID")
    retry.add_argument("--star", metavar="S", help="retry only this star and what depends on it")
    add_server_options(retry)
    _add_run_options(retry)

    memory = commands.add_parser(
        "memory",
        help="past requests by meaning; one request's memory tree; forget one",
        description="Orrery remembers every request it ran: what was asked, the plan, how "
        "each star and attempt went, what failed and how it was repaired. The planner "
        "recalls the nearest past plans for a new request. See docs/memory.md.",
    )
    memory_commands = memory.add_subparsers(dest="memory_command", required=True)
    memory_search = memory_commands.add_parser(
        "search",
        help="the past requests nearest in meaning to TEXT, with their outcome and plan",
        epilog=CONTROL_EXIT_CODES,
    )
    memory_search.add_argument("text", metavar="TEXT")
    memory_search.add_argument("--limit", type=int, default=5, metavar="N", help="at most N")
    memory_search.add_argument("--json", action="store_true", help="one JSON object per line")
    add_server_options(memory_search)
    memory_show = memory_commands.add_parser(
        "show",
        help="one request's memory tree: constellations, stars, attempts, revisions",
        description="Show a remembered request: ID is its id (r-...), a unique prefix of "
        "it, or the id of a constellation that ran for it.",
        epilog=CONTROL_EXIT_CODES,
    )
    memory_show.add_argument("id", metavar="ID")
    memory_show.add_argument("--json", action="store_true", help="one JSON object")
    add_server_options(memory_show)
    memory_forget = memory_commands.add_parser(
        "forget",
        help="never recall this request again (its record stays)",
        epilog=CONTROL_EXIT_CODES,
    )
    memory_forget.add_argument("id", metavar="ID")
    add_server_options(memory_forget)

    from app.models_cli import add_models_parser

    add_models_parser(commands)
    _add_global_options_everywhere(parser)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        metavar="DIR",
        help="folder this machine's tools work in (default: DATA_DIR/workspace)",
    )
    parser.add_argument(
        "--max-tasks", type=int, default=4, metavar="K", help="stars run at once (default 4)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")


def _add_global_options(parser: argparse.ArgumentParser, *, here: bool) -> None:
    """`--data-dir` and `-v`; on subcommands they keep what was given before the command."""
    keep = {} if here else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where Orrery keeps its state (default: $ORRERY_HOME or the user data dir)",
        **({"default": None} | keep),  # type: ignore[arg-type]
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="more logging (-vv: debug)",
        **({"default": 0} | keep),  # type: ignore[arg-type]
    )


def _add_global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:  # argparse offers no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--data-dir" in a.option_strings for a in sub._actions):
                    _add_global_options(sub, here=False)
                _add_global_options_everywhere(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(options.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if getattr(options, "max_tasks", 1) < 1:
        parser.error("--max-tasks must be at least 1")
    if options.command == "models":
        from app.config import data_dir
        from app.models_cli import models_command

        return models_command(options, data_dir(options.data_dir))
    name = options.command
    if name in QT_COMMANDS and not getattr(options, "headless", False):
        module_name, function_name = QT_COMMANDS[name].split(":")
        qt_command = getattr(importlib.import_module(module_name), function_name)
        return int(qt_command(options))
    if name == "devices":
        name = f"devices {options.devices_command}"
    elif name == "memory":
        name = f"memory {options.memory_command}"
    module_name, function_name = COMMANDS[name].split(":")
    command = getattr(importlib.import_module(module_name), function_name)
    from app.commands.runner import run_command

    return run_command(command, options)


if __name__ == "__main__":
    sys.exit(main())
