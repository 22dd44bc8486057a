"""The `orrery` command line.

Exit codes (`orrery run`, and the commands that run plans):
  0    the constellation succeeded
  1    it failed (the reason names the star), or someone else cancelled it
  2    bad input: unreadable or invalid plan, a request the planner rejected, bad
       arguments, a missing or wrong control token
  3    no capable device: a star needs what no connected device offers
  4    cannot reach the server (`--server`), or lost it for good mid-run
  130  interrupted (Ctrl-C): running stars were cancelled

Heavy modules are imported inside the commands, so `orrery --help` and
`orrery run --server URL --json` load neither Qt nor the model code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.control_cli import COMMANDS as CONTROL_COMMANDS
from app.control_cli import add_control_parsers, add_token_option, control_command
from app.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_DEVICE,
    EXIT_OK,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

    from rich.console import Console

    from agents.constellation import Constellation
    from agents.events import Listener
    from agents.orchestrator import Orchestrator
    from app.client import Orrery, Run, RunResult
    from app.planning import RequestPlanner
    from app.progress import LiveProgress
    from devices.local import LocalDispatcher
    from devices.registry import DeviceInfo
    from memory import ConstellationRow, Store


EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 the plan failed; 2 bad input (invalid plan, rejected request, "
    "bad token); 3 no capable device; 4 cannot reach the server; 130 interrupted"
)


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
        help="run a plan file or a request to completion",
        description="Run a plan file (YAML) or a request in words. Without --server, an "
        "embedded orchestrator runs a plan file with this machine as the device; with "
        "--server, the plan (or request) goes to `orrery serve` through its control API "
        "and its events stream back.",
        epilog=EXIT_CODES_HELP,
    )
    run.add_argument(
        "target",
        metavar="PLAN|REQUEST",
        help="a plan file (an existing file, or a name ending .yaml/.yml), else a request in words",
    )
    run.add_argument("--server", metavar="URL", help="run on this orchestrator (ws://HOST:PORT)")
    add_token_option(run)
    _add_run_options(run)

    demo = commands.add_parser(
        "demo",
        help="run the fleet sample plans on three local device processes",
        description="Start an orchestrator and three `orrery device` processes on this machine "
        "(atlas: reports, borealis: build, cygnus: storage; data under "
        "DATA_DIR/fleet-devices), run resources/plans/fleet/*.yaml on them, then a request "
        "in words planned by the local model (unless --no-requests), stop them. The desktop "
        "window is not built yet, so the demo always runs headless.",
    )
    demo.add_argument("--headless", action="store_true", help="no window (currently always)")
    demo.add_argument(
        "--no-requests",
        action="store_true",
        help="run only the sample plans, not the request planned by the local model",
    )
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
        help="with --run: allow every tool call a device's policy wants approved "
        "(otherwise such calls are refused)",
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

    show = commands.add_parser(
        "show",
        help="one recorded constellation: stars, status, rationale (text, JSON, PNG)",
        description="Show a constellation recorded in DATA_DIR/orrery.db: its stars and "
        "their status, the plan's rationale and each edit's. ID may be a unique prefix.",
    )
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument("--png", metavar="FILE", help="also draw the graph into this PNG file")

    from app.models_cli import add_models_parser

    add_control_parsers(commands)
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
    if options.command == "show":
        return _show_command(options)
    if options.command == "devices":
        return _devices_command(options)
    if options.command == "serve":
        return _serve_command(options)
    if options.command == "device":
        return _device_command(options)
    if options.command in CONTROL_COMMANDS:
        return control_command(options)
    if options.command == "models":
        from app.config import data_dir
        from app.models_cli import models_command

        return models_command(options, data_dir(options.data_dir))
    if options.max_tasks < 1:
        parser.error("--max-tasks must be at least 1")
    if options.command == "run":
        return _run_target(options)
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
    from app.fleet_cli import load_plans, run_on_fleet

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
        if plans or options.request:
            return run_on_fleet(
                options, store, data, plans, devices=options.devices, requests=options.request
            )
        from app.settings import ConfigError

        try:
            _serve_until_stopped(options, store, data)
        except ConfigError as exc:
            print(f"orrery: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return EXIT_OK


def _serve_until_stopped(options: argparse.Namespace, store: Store, data: Path) -> None:
    from app.fleet_cli import server_config
    from app.serve import serve

    asyncio.run(
        serve(
            store,
            data,
            host=options.host,
            port=options.port,
            config=server_config(options),
            tls_cert=Path(options.tls_cert) if options.tls_cert else None,
            tls_key=Path(options.tls_key) if options.tls_key else None,
            planner=not options.no_planner,
        )
    )


def _demo_command(options: argparse.Namespace) -> int:
    from app.config import data_dir
    from app.fleet_cli import DEMO_DEVICES, DEMO_REQUESTS, demo_plans, load_plans, run_on_fleet

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
            requests=() if options.no_requests else DEMO_REQUESTS,
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
    *,
    run_until: Callable[[Coroutine[Any, Any, Constellation]], Constellation] = asyncio.run,
    dispatcher: LocalDispatcher | None = None,
    attach: Callable[[Orchestrator], Callable[[], None]] | None = None,
) -> int:
    """Run on this machine with the live display; `run_until` runs the coroutine (a loop
    of the caller's, to share it with a loaded model), `dispatcher`/`attach` as for
    `run_locally`."""
    from app.local_run import run_locally

    def execute(listeners: list[Listener]) -> Constellation:
        return run_until(
            run_locally(
                constellation,
                workspace=workspace,
                listeners=listeners,
                max_tasks=options.max_tasks,
                store=store,
                dispatcher=dispatcher,
                attach=attach,
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
    from app.progress import JsonLines, summary_table

    outcome: list[ConstellationFinished] = []

    def remember_outcome(event: Event) -> None:
        if isinstance(event, ConstellationFinished):
            outcome.append(event)

    if options.json:
        final = execute([JsonLines(), remember_outcome])
    else:
        out = Console(highlight=False)
        out.print(f"[bold]{constellation.name}[/]: {len(constellation.stars)} stars, {where}")
        with star_bars(out) as progress:
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
    return _report_failure(
        final.name,
        finished.failed_star,
        finished.reason,
        no_capable_device=finished.no_capable_device,
    )


def _report_failure(
    name: str, failed_star: str | None, reason: str | None, *, no_capable_device: bool
) -> int:
    """Say on stderr why the constellation failed; EXIT_NO_DEVICE or EXIT_FAILED."""
    why = f"star {failed_star!r}: {reason}" if failed_star else str(reason)
    if no_capable_device:
        print(f"orrery: constellation {name!r} failed: no capable device: {why}", file=sys.stderr)
        return EXIT_NO_DEVICE
    print(f"orrery: constellation {name!r} failed: {why}", file=sys.stderr)
    return EXIT_FAILED


# ------------------------------------------------------------------ run: target and server


def _run_target(options: argparse.Namespace) -> int:
    """`orrery run TARGET`: a plan file or a request in words, here or on `--server`."""
    target: str = options.target
    is_plan = Path(target).exists() or target.endswith((".yaml", ".yml"))
    if options.server:
        plan = Path(target) if is_plan else None
        return _run_remote(options, plan, None if is_plan else target)
    if not is_plan:
        return _run_request(options, target)
    return _run_command(options, [Path(target)])


def plan_for_cli(
    planner: RequestPlanner,
    request: str,
    devices: Sequence[DeviceInfo],
    run_until: Callable[[Coroutine[Any, Any, Constellation]], Constellation],
    options: argparse.Namespace,
    err: Console,
) -> Constellation | int:
    """Plan `request` (saying so on stderr unless --json): the constellation, or the exit
    code for why there is none (3 nothing can run it, 2 no valid plan)."""
    from agents.planner.errors import NoCapableDevice, PlanningError

    if not options.json:
        err.print(f"orrery: planning with the local model: {request}")
    try:
        constellation = run_until(planner.plan(request, devices))
    except NoCapableDevice as exc:
        print(f"orrery: error: {exc}", file=sys.stderr)
        return EXIT_NO_DEVICE
    except PlanningError as exc:
        print(f"orrery: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not options.json and constellation.rationale:
        err.print(f"orrery: plan: {constellation.rationale}")
    return constellation


def _run_request(options: argparse.Namespace, request: str) -> int:
    """Plan `request` with the local planner model for this machine, then run it here."""
    from rich.console import Console

    from app.config import data_dir, workspace_dir
    from app.local_run import local_dispatcher
    from app.planning import RequestPlanner
    from app.settings import ConfigError

    err = Console(stderr=True, highlight=False)
    data = data_dir(options.data_dir)
    workspace = workspace_dir(data, options.workspace)
    store = _open_store(options)
    if store is None:
        return EXIT_BAD_INPUT
    with store:
        dispatcher = local_dispatcher(workspace, max_tasks=options.max_tasks)
        try:
            planner = RequestPlanner.from_data_dir(data, dispatcher.tool_schemas)
        except ConfigError as exc:
            print(f"orrery: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        loop = asyncio.new_event_loop()  # one loop: the model loaded to plan also reviews
        try:
            planned = plan_for_cli(
                planner, request, dispatcher.devices(), loop.run_until_complete, options, err
            )
            if isinstance(planned, int):
                return planned
            return _run_one(
                planned,
                options,
                workspace,
                err,
                store,
                run_until=loop.run_until_complete,
                dispatcher=dispatcher,
                attach=lambda orch: planner.review_runs(orch, dispatcher.devices),
            )
        finally:
            loop.run_until_complete(planner.close())
            loop.close()


def _run_remote(options: argparse.Namespace, plan: Path | None, request: str | None) -> int:
    text = None
    if plan is not None:
        try:
            text = plan.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"orrery: error: {plan}: cannot read the plan: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        return asyncio.run(_follow_remote(options, text, request, str(plan or "<request>")))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _follow_remote(
    options: argparse.Namespace, plan_text: str | None, request: str | None, source: str
) -> int:
    """Submit to the server, show its events, and turn the outcome into the exit code."""
    import signal

    from app.client import AuthRefused, Orrery, RequestRejected, ServerUnreachable
    from app.control_cli import exit_for_client_error

    interrupted = False
    try:
        async with Orrery(
            options.server, token=options.token, data_dir=options.data_dir, client_name="orrery run"
        ) as client:
            run = await client.submit(plan_text=plan_text, request=request, source=source)
            loop = asyncio.get_running_loop()
            cancelling: list[asyncio.Future[str]] = []

            def interrupt() -> None:
                nonlocal interrupted
                interrupted = True
                cancelling.append(asyncio.ensure_future(run.cancel("interrupted in orrery run")))

            installed = []
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, interrupt)
                    installed.append(signum)
            try:
                result = await _watch_remote(options, client, run)
            finally:
                for signum in installed:
                    loop.remove_signal_handler(signum)
    except (AuthRefused, RequestRejected, ServerUnreachable, ValueError) as exc:
        return exit_for_client_error(exc)  # a refused submit, or a run the server lost
    if result.succeeded:
        if not options.json:
            print(f"orrery: constellation {run.name!r} succeeded", file=sys.stderr)
        return EXIT_OK
    if result.status == "cancelled":
        print(f"orrery: constellation {run.name!r} was cancelled: {result.reason}",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
    return _report_failure(
        run.name, result.failed_star, result.reason, no_capable_device=result.no_capable_device
    )


async def _watch_remote(options: argparse.Namespace, client: Orrery, run: Run) -> RunResult:
    """Print the run's events (JSON lines, or the live display and the summary table)."""
    from agents.events import event_to_json

    if options.json:
        async for event in run.events():
            sys.stdout.write(event_to_json(event) + "\n")
            sys.stdout.flush()
        return await run.wait()
    from rich.console import Console

    from agents.constellation import Constellation
    from app.progress import summary_table

    out = Console(highlight=False)
    out.print(f"[bold]{run.name}[/]: {run.stars} stars, server {client.url}")
    with star_bars(out, server=client.url) as progress:
        async for event in run.events():
            progress(event)
    result = await run.wait()
    snapshot = await client.constellation(run.id)
    out.print(summary_table(Constellation.model_validate(snapshot.constellation)))
    return result


def star_bars(console: Console, *, server: str | None = None) -> LiveProgress:
    """The live display of `app.progress` with, besides, a bar per running star."""
    from rich.progress import TaskID

    from agents.events import AttemptFailed, Event, StarFinished, StarStarted
    from app.progress import LiveProgress

    class StarBars(LiveProgress):
        def __init__(self, console: Console, server: str | None) -> None:
            super().__init__(console, server=server)
            self._bars: dict[str, TaskID] = {}

        def __call__(self, event: Event) -> None:
            super().__call__(event)
            if isinstance(event, StarStarted):
                label = f"  {event.star_id} on {event.device}"
                self._bars[event.star_id] = self._progress.add_task(label, total=None)
            elif isinstance(event, StarFinished | AttemptFailed):
                bar = self._bars.pop(event.star_id, None)
                if bar is not None:
                    self._progress.remove_task(bar)

    return StarBars(console, server)


# ------------------------------------------------------------------ show


def _show_command(options: argparse.Namespace) -> int:
    import json

    store = _open_store(options)
    if store is None:
        return EXIT_BAD_INPUT
    with store:
        found = _find_constellation(store, options.id)
        if isinstance(found, str):
            print(f"orrery: error: {found}", file=sys.stderr)
            return EXIT_BAD_INPUT
        row = found
        edits = [e.payload for e in store.events(row.id) if e.type == "edit.applied"]
    snapshot = row.snapshot
    stars: dict[str, dict[str, object]] = snapshot.get("stars") or {}
    if options.png:
        from app.graph_png import render_png

        picture = render_png({**snapshot, "name": row.name, "status": row.status})
        try:
            Path(options.png).write_bytes(picture)
        except OSError as exc:
            print(f"orrery: error: cannot write {options.png}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    edit_notes = [
        {"version": e.get("version"), "rationale": e.get("rationale", ""), "undo": e.get("undo")}
        for e in edits
    ]
    if options.json:
        document = {
            "id": row.id,
            "name": row.name,
            "status": row.status,
            "version": row.version,
            "reason": row.reason,
            "rationale": snapshot.get("rationale", ""),
            "description": snapshot.get("description", ""),
            "created_at": row.created_at,
            "finished_at": row.finished_at,
            "stars": list(stars.values()),
            "lines": snapshot.get("lines") or [],
            "edits": edit_notes,
        }
        print(json.dumps(document))
        return EXIT_OK
    _print_constellation(row.id, row.name, row.status, row.version, row.reason, snapshot,
                         edit_notes)  # fmt: skip
    if options.png:
        print(f"graph drawn to {options.png}")
    return EXIT_OK


def _find_constellation(store: Store, wanted: str) -> ConstellationRow | str:
    """The row with id `wanted`, or the one whose id starts with it; else why not."""
    row = store.constellation(wanted)
    if row is not None:
        return row
    matches = [r for r in store.constellations(limit=1000) if r.id.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        ids = ", ".join(r.id for r in matches[:5])
        return f"{wanted!r} matches several constellations ({ids}); give more of the id"
    return f"no constellation {wanted!r} in the store; `orrery history` lists them"


def _print_constellation(
    cid: str,
    name: str,
    status: str,
    version: int,
    reason: str | None,
    snapshot: dict[str, object],
    edits: list[dict[str, object]],
) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False)
    out.print(f"[bold]{name}[/] ({cid}): {status}, version {version}")
    for label, text in (
        ("description", snapshot.get("description")),
        ("rationale", snapshot.get("rationale")),
        ("reason", reason),
    ):
        if text:
            out.print(f"{label}: {text}")
    table = Table()
    for column in ("star", "tool", "status", "attempts", "device", "note"):
        table.add_column(column, overflow="fold")
    stars = snapshot.get("stars")
    for star_id, star in stars.items() if isinstance(stars, dict) else []:
        attempts = star.get("attempts") or []
        device = attempts[-1].get("device", "") if attempts else ""
        note = star.get("error") or star.get("skip_reason") or ""
        table.add_row(star_id, str(star.get("tool") or "agent.do"), str(star.get("status")),
                      str(len(attempts)), str(device), str(note))  # fmt: skip
    out.print(table)
    from app.graph_png import edges_of

    for source, target, kind in edges_of(snapshot):
        out.print(f"  {source} -> {target} ({kind})")
    for edit in edits:
        undo = " (undo)" if edit.get("undo") else ""
        out.print(f"edit to version {edit.get('version')}{undo}: {edit.get('rationale')}")


if __name__ == "__main__":
    sys.exit(main())
