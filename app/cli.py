"""The `orrery` command line.

Exit codes: 0 the constellation succeeded; 1 it failed (the reason names the star);
2 bad input (unreadable or invalid plan, bad arguments); 130 interrupted.

Heavy modules are imported inside the commands, so `orrery --help` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from agents.constellation import Constellation
    from agents.events import Listener
    from memory import Store

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orrery",
        description="Automate tasks across several machines with task constellations.",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where Orrery keeps its state (default: $ORRERY_HOME or the user data dir)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run a plan file to completion",
        description="Run a plan file (YAML) with an embedded orchestrator and this machine "
        "as the device. Exit 0 on success, 1 if the plan failed, 2 on bad input.",
    )
    run.add_argument("plan", help="path to a plan file (.yaml)")
    _add_run_options(run)

    demo = commands.add_parser(
        "demo",
        help="run the fleet sample plans on three local device processes",
        description="Start an orchestrator and three `orrery device` processes on this machine "
        "(atlas: reports, borealis: build, cygnus: storage; data under "
        "DATA_DIR/fleet-devices), run resources/plans/fleet/*.yaml on them, stop them. The "
        "desktop window is not built yet, so the demo always runs headless.",
    )
    demo.add_argument("--headless", action="store_true", help="no window (currently always)")
    demo.add_argument("--wait", type=float, default=60.0, metavar="S", help="device start limit")
    _add_run_options(demo)

    serve = commands.add_parser(
        "serve",
        help="a headless orchestrator that devices connect to",
        description="Listen for device agents over AIP (ws://HOST:PORT/aip/v1). Devices must "
        "be enrolled first with `orrery devices enroll NAME`.",
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
        help="with --run: allow every tool call a device's policy wants approved "
        "(otherwise such calls are refused)",
    )

    device = commands.add_parser(
        "device",
        help="run this machine as a device agent",
        description="Connect to an orchestrator and run the stars it assigns; reconnects by "
        "itself until stopped (Ctrl-C). Exit 2 if the orchestrator refuses the device.",
    )
    device.add_argument("--server", required=True, metavar="URL", help="ws://HOST:PORT")
    device.add_argument("--name", required=True, metavar="N", help="this device's name")
    device.add_argument("--token", required=True, metavar="T", help="its enrolment token")
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
        help="what this device allows (default: DATA_DIR/device.toml; without one, tools "
        "stay inside the workspace and http.get fetches nothing); see docs/devices.md",
    )

    devices = commands.add_parser("devices", help="enrol and list devices")
    devices_commands = devices.add_subparsers(dest="devices_command", required=True)
    enroll = devices_commands.add_parser(
        "enroll",
        help="print a new enrolment token for a device",
        description="Create (or rotate) the enrolment token of device NAME and print it once. "
        "Only a derived key is stored; start the device with `--token`.",
    )
    enroll.add_argument("name", metavar="NAME")
    devices_commands.add_parser("list", help="known devices and their state")

    history = commands.add_parser(
        "history",
        help="list the constellations that ran",
        description="List recorded constellations, newest first, from DATA_DIR/orrery.db.",
    )
    history.add_argument("--limit", type=int, default=20, metavar="N", help="at most N rows")
    history.add_argument("--json", action="store_true", help="one JSON object per line")

    from app.models_cli import add_models_parser

    add_models_parser(commands)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        metavar="DIR",
        help="folder the local device's tools work in (default: DATA_DIR/workspace)",
    )
    parser.add_argument(
        "--max-tasks", type=int, default=4, metavar="K", help="stars run at once (default 4)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(options.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if options.command == "history":
        return _history_command(options)
    if options.command == "devices":
        return _devices_command(options)
    if options.command == "serve":
        return _serve_command(options)
    if options.command == "device":
        return _device_command(options)
    if options.command == "models":
        from app.config import data_dir
        from app.models_cli import models_command

        return models_command(options, data_dir(options.data_dir))
    if options.max_tasks < 1:
        parser.error("--max-tasks must be at least 1")
    if options.command == "run":
        return _run_command(options, [Path(options.plan)])
    if options.command == "demo":
        return _demo_command(options)
    parser.error(f"unknown command {options.command!r}")
    return EXIT_BAD_INPUT  # pragma: no cover  (parser.error exits)


STORE_FILE = "orrery.db"


def _open_store(options: argparse.Namespace) -> Store | None:
    """The data dir's store, or None (after saying why on stderr) if it cannot be opened."""
    from app.config import data_dir
    from memory import Store, StoreError

    try:
        return Store.open_path(data_dir(options.data_dir) / STORE_FILE)
    except StoreError as exc:
        print(f"orrery: error: {exc}", file=sys.stderr)
        return None


def _devices_command(options: argparse.Namespace) -> int:
    import re

    from protocol.auth import enroll

    store = _open_store(options)
    if store is None:
        return EXIT_BAD_INPUT
    with store:
        if options.devices_command == "enroll":
            if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", options.name):
                print(
                    f"orrery: error: device name {options.name!r} must be 1-64 letters, "
                    "digits, '.', '_' or '-'",
                    file=sys.stderr,
                )
                return EXIT_BAD_INPUT
            token, key = enroll(options.name)
            store.enroll_device(options.name, salt=key.salt, key=key.key)
            print(token)
            return EXIT_OK
        for row in store.devices():
            labels = ",".join(row.labels or [])
            print(f"{row.name:<20} {row.state:<8} {labels}")
    return EXIT_OK


def _serve_command(options: argparse.Namespace) -> int:
    from app.config import data_dir
    from app.fleet_cli import load_plans, run_on_fleet, server_config
    from app.serve import serve

    if bool(options.tls_cert) != bool(options.tls_key):
        print("orrery: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_BAD_INPUT
    plans = load_plans([Path(p) for p in options.run])
    if plans is None:
        return EXIT_BAD_INPUT
    store = _open_store(options)
    if store is None:
        return EXIT_BAD_INPUT
    data = data_dir(options.data_dir)
    with store:
        if plans:
            return run_on_fleet(options, store, data, plans, devices=options.devices)
        asyncio.run(
            serve(
                store,
                data,
                host=options.host,
                port=options.port,
                config=server_config(options),
                tls_cert=Path(options.tls_cert) if options.tls_cert else None,
                tls_key=Path(options.tls_key) if options.tls_key else None,
            )
        )
    return EXIT_OK


def _demo_command(options: argparse.Namespace) -> int:
    from app.config import data_dir
    from app.fleet_cli import DEMO_DEVICES, demo_plans, load_plans, run_on_fleet

    plans = load_plans(demo_plans())
    if plans is None:
        return EXIT_BAD_INPUT
    store = _open_store(options)
    if store is None:
        return EXIT_BAD_INPUT
    with store:
        return run_on_fleet(
            options,
            store,
            data_dir(options.data_dir),
            plans,
            devices=len(DEMO_DEVICES),
            spawn=DEMO_DEVICES,
        )


def _device_command(options: argparse.Namespace) -> int:
    from app.config import data_dir
    from app.device_run import load_policy, run_device
    from devices.agent import DeviceRefused
    from devices.policy import PolicyError

    data = data_dir(options.data_dir)
    try:
        policy = load_policy(data, Path(options.policy) if options.policy else None)
    except PolicyError as exc:
        print(f"orrery: error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        asyncio.run(
            run_device(
                server=options.server,
                name=options.name,
                token=options.token,
                data_dir=data_dir(options.data_dir),
                labels=[label for label in options.labels.split(",") if label],
                max_tasks=options.max_tasks,
                workspace=Path(options.workspace) if options.workspace else None,
                tls_ca=Path(options.tls_ca) if options.tls_ca else None,
                policy=policy,
                shutdown_grace=options.shutdown_grace,
            )
        )
    except PolicyError as exc:  # the file names a tool this device does not have
        print(f"orrery: error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DeviceRefused as exc:
        print(f"orrery: device refused: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:
        print(f"orrery: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _history_command(options: argparse.Namespace) -> int:
    import json

    store = _open_store(options)
    if store is None:
        return EXIT_BAD_INPUT
    with store:
        rows = store.constellations(limit=max(1, options.limit))
    for row in rows:
        if options.json:
            fields = {
                "id": row.id,
                "name": row.name,
                "status": row.status,
                "version": row.version,
                "created_at": row.created_at,
                "finished_at": row.finished_at,
                "reason": row.reason,
            }
            print(json.dumps(fields))
        else:
            stars = len(row.snapshot.get("stars", {}))
            note = f"  {row.reason}" if row.reason else ""
            print(f"{row.id}  {row.status:<9}  {row.name} ({stars} stars){note}")
    return EXIT_OK


def _run_command(options: argparse.Namespace, plans: Sequence[Path]) -> int:
    from rich.console import Console

    from agents.constellation.plan_file import PlanFileError, load_plan
    from app.config import data_dir, workspace_dir
    from app.local_run import local_tools

    err = Console(stderr=True, highlight=False)
    workspace = workspace_dir(data_dir(options.data_dir), options.workspace)
    known_tools = local_tools(workspace)
    loaded = []
    for path in plans:
        try:
            loaded.append(load_plan(path, known_tools=known_tools))
        except PlanFileError as exc:
            print(f"orrery: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    store = _open_store(options)
    if store is None:
        return EXIT_BAD_INPUT
    worst = EXIT_OK
    with store:
        for constellation in loaded:
            code = _run_one(constellation, options, workspace, err, store)
            worst = max(worst, code)
            if code == EXIT_INTERRUPTED:
                break
    return worst


def _run_one(
    constellation: Constellation,
    options: argparse.Namespace,
    workspace: Path,
    err: Console,
    store: Store,
) -> int:
    from app.local_run import run_locally

    def execute(listeners: list[Listener]) -> Constellation:
        return asyncio.run(
            run_locally(
                constellation,
                workspace=workspace,
                listeners=listeners,
                max_tasks=options.max_tasks,
                store=store,
            )
        )

    return run_and_report(constellation, options, err, execute, where=f"workspace {workspace}")


def run_and_report(
    constellation: Constellation,
    options: argparse.Namespace,
    err: Console,
    execute: Callable[[list[Listener]], Constellation],
    *,
    where: str,
) -> int:
    """Run with a live display (or JSON lines), print the summary; the exit code."""
    from rich.console import Console

    from agents.constellation import ConstellationStatus
    from agents.events import ConstellationFinished, Event
    from app.progress import JsonLines, LiveProgress, summary_table

    outcome: list[ConstellationFinished] = []

    def remember_outcome(event: Event) -> None:
        if isinstance(event, ConstellationFinished):
            outcome.append(event)

    if options.json:
        final = execute([JsonLines(), remember_outcome])
    else:
        out = Console(highlight=False)
        out.print(f"[bold]{constellation.name}[/]: {len(constellation.stars)} stars, {where}")
        with LiveProgress(out) as progress:
            final = execute([progress, remember_outcome])
        out.print(summary_table(final))
    if final.status is ConstellationStatus.SUCCEEDED:
        if not options.json:
            err.print(f"orrery: constellation {final.name!r} succeeded")
        return EXIT_OK
    if final.status is ConstellationStatus.CANCELLED:
        print(f"orrery: constellation {final.name!r} was cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    finished = outcome[-1]  # the orchestrator names the first star that failed, and why
    reason = f"star {finished.failed_star!r}: {finished.reason}"
    print(f"orrery: constellation {final.name!r} failed: {reason}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
