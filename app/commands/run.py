"""`orrery run PLAN.yaml | "request"`: run a plan file or a request in words to its end.

Without `--server` the data dir's runtime runs it in this process with this machine as
the device; with `--server` the server runs it on its devices. Either way it goes through
the same interface (`app.interface.OrreryApi`) and the same display.

A plan made from words is looked at before it runs: from a terminal the plan is
`propose`d, shown (`plan_preview`) and started only on `y` (discarded otherwise);
`--yes`, or no terminal with `[planner] unattended = true`, plans and runs it at once.
A plan file runs as it was written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.status import Status

from app.commands.clients import api_for
from app.commands.follow import Display, follow
from app.config import data_dir
from app.errors import OrreryError
from app.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK
from app.interface import OrreryApi, Run
from app.text_safety import one_line

if TYPE_CHECKING:
    from app.control.messages import Proposal

T = TypeVar("T")

RECONNECT_WITHIN = 60.0
"""Seconds `orrery run --server` keeps reconnecting after the connection drops (the
server restarted: it takes the run up again, and the display follows it to its end)."""


def is_plan_file(target: str) -> bool:
    """A target names a plan file if it exists or ends .yaml/.yml; else it is words."""
    return Path(target).exists() or target.endswith((".yaml", ".yml"))


async def main(options: argparse.Namespace, stop: asyncio.Event) -> int:
    target: str = options.target
    plan = is_plan_file(target)
    async with api_for(
        options, this_machine=True, planner=not plan, reconnect_within=RECONNECT_WITHIN
    ) as api:
        if plan:  # a person wrote it: it runs as written
            run = await api.submit(Path(target))
        elif options.yes:
            found = await planned_run(api, target, options, stop)
            if found is None:
                return _interrupted_while_planning()
            run = found
        else:
            looked = await look_before_it_runs(api, target, options, stop)
            if isinstance(looked, int):
                return looked
            run = looked
        where = f"server {options.server}" if options.server else "this machine"
        display = Display(
            json=options.json,
            where=where,
            server=options.server,
            data_dir=options.data_dir,
        )
        return await follow(api, run, display, stop)


def interactive() -> bool:
    """Whether a person is at this command: stdin and stdout are terminals."""
    return sys.stdin.isatty() and sys.stdout.isatty()


async def look_before_it_runs(
    api: OrreryApi, request: str, options: argparse.Namespace, stop: asyncio.Event
) -> Run | int:
    """Plan `request` (here, or on the server of `--server`) and, from a terminal, show
    the plan and ask before it runs; outside a terminal run it as planned if `[planner]
    unattended` (this data dir's `orrery.toml`) allows, else refuse. The run, or the exit
    code when it does not run."""
    err = Console(stderr=True, highlight=False, emoji=False)
    if not interactive():
        from app.settings import load_planner_settings

        if load_planner_settings(data_dir(options.data_dir)).unattended:
            found = await planned_run(api, request, options, stop)
            return found if found is not None else _interrupted_while_planning()
        err.print(
            "orrery: a plan made from words runs unattended only with --yes here "
            "([planner] unattended = false and this is no terminal)"
        )
        return EXIT_BAD_INPUT
    whose = "the server's" if options.server else "the local"
    async with _status(err, f"planning with {whose} model: {request}", quiet=options.json):
        proposal = await first_of(api.propose(request), stop)
    if proposal is None:  # a server holds what it planned until it expires: nothing runs
        return _interrupted_while_planning()
    print(plan_preview(proposal), flush=True)
    answer = await first_of(asyncio.to_thread(_ask, "Run this plan? [y/N] "), stop)
    if (answer or "").strip().lower() not in ("y", "yes"):
        with contextlib.suppress(OrreryError):  # it expires by itself otherwise
            await api.discard_proposal(proposal.proposal)
        err.print("orrery: not run")
        return EXIT_OK
    return await api.start_proposal(proposal.proposal)


def _interrupted_while_planning() -> int:
    Console(stderr=True, emoji=False).print("orrery: interrupted while planning")
    return EXIT_INTERRUPTED


def _ask(question: str) -> str:
    try:
        return input(question)
    except EOFError:
        return ""


def plan_preview(proposal: Proposal) -> str:
    """The stars of a proposed plan, one a line: id, device, tool, the command or path,
    and what it waits for (device text made printable: the model wrote it)."""
    rationale = one_line(proposal.rationale)
    lines = [f"plan: {rationale}" if rationale else "plan:"]
    for star in proposal.stars:
        waits = f" (after {', '.join(star.after)})" if star.after else ""
        lines.append(
            f"  {one_line(star.id):<6} {one_line(star.device):<14} {one_line(star.tool):<13} "
            f"{one_line(star.what)}{waits}"
        )
    return "\n".join(lines)


async def planned_run(
    api: OrreryApi, request: str, options: argparse.Namespace, stop: asyncio.Event
) -> Run | None:
    """Plan `request` and run the plan at once (`--yes`, or unattended by the policy);
    None if `stop` came while the local model planned."""
    planned = planning(api, request, quiet=options.json, server=options.server)
    if options.server:  # the server plans on: its run is cancelled once it starts
        return await planned
    return await first_of(planned, stop)  # stop the local model at once


async def planning(api: OrreryApi, request: str, *, quiet: bool, server: str | None) -> Run:
    """Submit a request in words, showing that (and how long) the planner works on it."""
    whose = "the server's" if server else "the local"
    err = Console(stderr=True, highlight=False, emoji=False)
    async with _status(err, f"planning with {whose} model: {request}", quiet=quiet):
        run = await api.submit(request=request)
    if not quiet and run.rationale:
        err.print(f"orrery: plan: {run.rationale}")
    return run


@contextlib.asynccontextmanager
async def _status(console: Console, what: str, *, quiet: bool) -> AsyncIterator[None]:
    """A spinner with the seconds spent on a terminal; one line otherwise."""
    if quiet:
        yield
        return
    if not console.is_terminal:
        console.print(f"orrery: {what}")
        yield
        return
    started = time.monotonic()
    with console.status(f"orrery: {what}") as status:
        ticking = asyncio.ensure_future(_tick(status, what, started))
        try:
            yield
        finally:
            ticking.cancel()
    console.print(f"orrery: {what} ({time.monotonic() - started:.1f}s)")


async def _tick(status: Status, what: str, started: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        status.update(f"orrery: {what} ({time.monotonic() - started:.0f}s)")


async def first_of(awaitable: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`awaitable`'s result, or None if `stop` is set first (it is then cancelled)."""
    work = asyncio.ensure_future(awaitable)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    return None
