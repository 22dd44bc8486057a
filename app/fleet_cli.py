"""`orrery serve [--run PLAN ...]` and `orrery demo --headless`: runs on device fleets."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agents.constellation import Constellation
from agents.events import Listener
from app.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NO_DEVICE, EXIT_OK
from app.fleet import DeviceProcesses, DevicesMissing, Orchestra
from memory import Store
from protocol.session import ServerConfig

if TYPE_CHECKING:
    from rich.console import Console


DEMO_DEVICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("atlas", ("reports",)),
    ("borealis", ("build",)),
    ("cygnus", ("storage",)),
)
"""The devices `orrery demo --headless` starts on this machine, with their labels."""

DEMO_REQUESTS = ("collect disk usage from every device and write a summary on atlas",)
"""What the demo asks the planner (the embedded model unless configured) after the plans."""


def fleet_tools() -> frozenset[str]:
    """The tools every `orrery device` offers (to check plans before any device is up)."""
    from devices.tools import default_tools

    return frozenset(default_tools().names())


def server_config(options: argparse.Namespace) -> ServerConfig:
    heartbeat = getattr(options, "heartbeat", None)
    return ServerConfig(heartbeat_interval=heartbeat) if heartbeat else ServerConfig()


def run_on_fleet(
    options: argparse.Namespace,
    store: Store,
    data: Path,
    plans: list[Constellation],
    *,
    devices: int,
    spawn: tuple[tuple[str, tuple[str, ...]], ...] = (),
    requests: Sequence[str] = (),
) -> int:
    """Serve AIP, (start `spawn` device processes,) wait for `devices` devices, run `plans`
    in turn with a live display, then plan and run each of `requests` (in words) with the
    planner model; the worst exit code."""
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    orchestra = Orchestra(
        store,
        data,
        host=getattr(options, "host", "127.0.0.1"),
        port=getattr(options, "port", 0),
        config=server_config(options),
        tls_cert=Path(options.tls_cert) if getattr(options, "tls_cert", None) else None,
        tls_key=Path(options.tls_key) if getattr(options, "tls_key", None) else None,
    )
    if getattr(options, "approve_all", False):
        orchestra.auto_decide = lambda pending: (True, "--approve-all")
    else:
        orchestra.auto_decide = lambda pending: (
            False,
            "nobody can approve during a headless run; use --approve-all to allow such calls",
        )
    processes = DeviceProcesses(store, data / "fleet-devices")
    with asyncio.Runner() as runner:
        runner.run(orchestra.__aenter__())
        try:
            err.print(f"orrery: serving AIP at {orchestra.url}")
            for name, labels in spawn:
                processes.add(name, labels)
                processes.start(name, orchestra.url)
            try:
                runner.run(orchestra.wait_for_devices(devices, within=options.wait))
            except DevicesMissing as exc:
                print(f"orrery: error: {exc}", file=sys.stderr)
                return EXIT_NO_DEVICE
            where = f"devices {', '.join(orchestra.connected())}"
            worst = EXIT_OK
            for constellation in plans:
                code = _run_reported(options, runner, orchestra, constellation, err, where)
                worst = max(worst, code)
                if code == EXIT_INTERRUPTED:
                    break
            if requests and worst != EXIT_INTERRUPTED:
                worst = max(worst, _run_requests(options, runner, orchestra, requests, where))
            return worst
        finally:
            processes.stop_all()
            runner.run(orchestra.__aexit__(None, None, None))


def _run_reported(
    options: argparse.Namespace,
    runner: asyncio.Runner,
    orchestra: Orchestra,
    constellation: Constellation,
    err: Console,
    where: str,
) -> int:
    """Run one constellation on the fleet with the live display (or JSON); its exit code."""
    from app.cli import run_and_report

    def execute(listeners: list[Listener]) -> Constellation:
        return runner.run(orchestra.run(constellation, listeners))

    return run_and_report(constellation, options, err, execute, where=where)


def _run_requests(
    options: argparse.Namespace,
    runner: asyncio.Runner,
    orchestra: Orchestra,
    requests: Sequence[str],
    where: str,
) -> int:
    """Plan each request with the planner model for the connected devices and run it."""
    from rich.console import Console

    from app.cli import plan_for_cli
    from app.planning import plan_on
    from app.settings import ConfigError

    err = Console(stderr=True, highlight=False)
    try:
        planner, stop_reviews = plan_on(orchestra)
    except ConfigError as exc:
        print(f"orrery: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    worst = EXIT_OK
    try:
        for request in requests:
            planned = plan_for_cli(
                planner, request, orchestra.dispatcher.devices(), runner.run, options, err
            )
            if isinstance(planned, int):
                worst = max(worst, planned)
                continue
            code = _run_reported(options, runner, orchestra, planned, err, where)
            worst = max(worst, code)
            if code == EXIT_INTERRUPTED:
                break
        return worst
    finally:
        stop_reviews()
        runner.run(planner.close())


def load_plans(paths: list[Path]) -> list[Constellation] | None:
    from agents.constellation.plan_file import PlanFileError, load_plan

    loaded = []
    for path in paths:
        try:
            loaded.append(load_plan(path, known_tools=fleet_tools()))
        except PlanFileError as exc:
            print(f"orrery: error: {exc}", file=sys.stderr)
            return None
    return loaded


def demo_plans() -> list[Path]:
    from app.resources import resources_dir

    return sorted((resources_dir() / "plans" / "fleet").glob("*.yaml"))
