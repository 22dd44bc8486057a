"""`orrery serve` and `orrery demo --headless`: an orchestrator that devices dial in to.

`serve` listens for devices (AIP, /aip/v1) and control clients (/control/v1) on one port
until stopped, saying on stderr when a device joins or leaves. With `--run PLAN` or
`--request TEXT` it waits for `--devices` devices, runs those one after another, and exits
with the worst result. The demo does the same with three device processes it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TextIO

from agents.events import DeviceJoined, DeviceLeft, DeviceStateChanged, Event
from app.commands.follow import Display, follow
from app.commands.run import first_of, planning
from app.commands.runner import exit_code_for
from app.config import data_dir
from app.endpoint import Endpoint
from app.errors import RequestRejected
from app.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK
from app.runtime import (
    ApprovalPolicy,
    RuntimeOptions,
    RuntimeParts,
    approve_all,
    ask_a_person,
    open_runtime,
    refuse_all,
)
from app.text_safety import one_line

DEMO_DEVICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("atlas", ("reports",)),
    ("borealis", ("build",)),
    ("cygnus", ("storage",)),
)
"""The devices `orrery demo` starts on this machine, with their labels."""

DEMO_REQUESTS = ("collect disk usage from every device and write a summary on atlas",)
"""What the demo asks the planner (the embedded model unless configured) after the plans."""

NOBODY_TO_ASK = "nobody can approve during a headless run; use --approve-all to allow such calls"


async def main(options: argparse.Namespace, stop: asyncio.Event) -> int:
    """`orrery serve`."""
    if bool(options.tls_cert) != bool(options.tls_key):
        print("orrery: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_BAD_INPUT
    headless_runs = bool(options.run or options.request)
    policy: ApprovalPolicy = ask_a_person
    if options.approve_all:
        policy = approve_all("--approve-all")
    elif headless_runs:
        policy = refuse_all(NOBODY_TO_ASK)
    settings = RuntimeOptions(
        data_dir(options.data_dir),
        accept_devices=True,
        heartbeat=options.heartbeat,
        planner=not options.no_planner,
        approval_policy=policy,
    )
    say_to = sys.stderr if headless_runs else sys.stdout  # --json keeps stdout for events
    async with served(settings, options.host, options.port, options, say_to) as (parts, endpoint):
        if not headless_runs:
            await stop.wait()
            return EXIT_OK
        return await run_on_fleet(
            parts,
            endpoint,
            [Path(p) for p in options.run],
            options.request,
            devices=options.devices,
            wait=options.wait,
            json=options.json,
            stop=stop,
        )


async def demo(options: argparse.Namespace, stop: asyncio.Event) -> int:
    """`orrery demo --headless`: three device processes, the sample plans, a request."""
    from app.device_processes import DeviceProcesses
    from app.resources import resources_dir

    plans = sorted((resources_dir() / "plans" / "fleet").glob("*.yaml"))
    data = data_dir(options.data_dir)
    settings = RuntimeOptions(data, accept_devices=True, approval_policy=refuse_all(NOBODY_TO_ASK))
    async with served(settings, "127.0.0.1", 0, options, sys.stderr) as (parts, endpoint):
        processes = DeviceProcesses(parts.store, data / "fleet-devices")
        try:
            for name, labels in DEMO_DEVICES:
                processes.add(name, labels)
                processes.start(name, endpoint.url)
            return await run_on_fleet(
                parts,
                endpoint,
                plans,
                () if options.no_requests else DEMO_REQUESTS,
                devices=len(DEMO_DEVICES),
                wait=options.wait,
                json=options.json,
                stop=stop,
            )
        finally:
            await asyncio.to_thread(processes.stop_all)


@contextlib.asynccontextmanager
async def served(
    settings: RuntimeOptions,
    host: str,
    port: int,
    options: argparse.Namespace,
    say_to: TextIO,
) -> AsyncIterator[tuple[RuntimeParts, Endpoint]]:
    """The data dir's runtime, served on `host:port` (AIP and the control API); where it
    listens is said on `say_to`."""
    from app.control.token import TOKEN_FILE, ensure_token
    from app.models_cli import preparation_progress

    tls_cert = getattr(options, "tls_cert", None)
    tls_key = getattr(options, "tls_key", None)
    with preparation_progress() as progress:  # the embedded model's first-use preparation
        settings = dataclasses.replace(settings, model_progress=progress)
        async with open_runtime(settings) as parts:
            assert parts.aip is not None
            endpoint = Endpoint(
                parts.runtime,
                parts.aip,
                token=ensure_token(settings.data_dir),
                host=host,
                port=port,
                tls_cert=Path(tls_cert) if tls_cert else None,
                tls_key=Path(tls_key) if tls_key else None,
            )
            stop_saying = parts.runtime.stream.listen(device_lines())
            try:
                async with endpoint:
                    print(f"orrery: serving AIP at {endpoint.url}", file=say_to, flush=True)
                    token = settings.data_dir / TOKEN_FILE
                    print(
                        f"orrery: control API at {endpoint.control_url} (token: {token})",
                        file=say_to,
                        flush=True,
                    )
                    yield parts, endpoint
            finally:
                stop_saying()


def device_lines(out: Callable[[str], None] | None = None) -> Callable[[Event], None]:
    """A listener that says on stderr when a device joins, leaves or is lost."""

    def say(line: str) -> None:
        line = one_line(line)  # platform, labels and reasons come from devices
        stamp = time.strftime("%H:%M:%S")
        if out is not None:
            out(line)
        else:
            print(f"{stamp} orrery: {line}", file=sys.stderr, flush=True)

    def on_event(event: Event) -> None:
        if isinstance(event, DeviceJoined):
            labels = ",".join(event.labels) or "no labels"
            say(
                f"device {event.device} joined ({event.platform}; {labels}; "
                f"{len(event.tools)} tools; {event.max_tasks} at once)"
            )
        elif isinstance(event, DeviceLeft):
            how = "was lost" if event.lost else "left"
            say(f"device {event.device} {how}: {event.reason}")
        elif isinstance(event, DeviceStateChanged) and event.state == "offline":
            say(f"device {event.device} disconnected: {event.reason or 'no reason given'}")

    return on_event


async def run_on_fleet(
    parts: RuntimeParts,
    endpoint: Endpoint,
    plans: Sequence[Path],
    requests: Sequence[str],
    *,
    devices: int,
    wait: float,
    json: bool,
    stop: asyncio.Event,
) -> int:
    """Check `plans`, wait for `devices` devices, run the plans then the requests in
    turn with the live display; the worst exit code."""
    runtime = parts.runtime
    texts = []
    for plan in plans:  # refuse a bad plan before anyone waits for devices
        text = plan.read_text(encoding="utf-8")
        await runtime.parse_plan_off_loop(text, str(plan))
        texts.append((text, str(plan)))
    connected = await first_of(runtime.wait_for_devices(devices, within=wait), stop)
    if connected is None:
        return EXIT_INTERRUPTED
    display = Display(json=json, where=f"devices {', '.join(connected)}")
    worst = EXIT_OK
    for text, source in texts:
        run = await runtime.submit(plan_text=text, source=source)
        worst = max(worst, await follow(runtime, run, display, stop))
        if stop.is_set():
            return EXIT_INTERRUPTED
    for request in requests:
        try:
            run = await planning(runtime, request, quiet=json, server=None)
        except RequestRejected as exc:
            worst = max(worst, exit_code_for(exc) or EXIT_BAD_INPUT)
            continue
        worst = max(worst, await follow(runtime, run, display, stop))
        if stop.is_set():
            return EXIT_INTERRUPTED
    return worst
