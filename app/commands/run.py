"""`orrery run PLAN.yaml | "request"`: run a plan file or a request in words to its end.

Without `--server` the data dir's runtime runs it in this process with this machine as
the device; with `--server` the server runs it on its devices. Either way it goes through
the same interface (`app.interface.OrreryApi`) and the same display.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.status import Status

from app.commands.clients import api_for
from app.commands.follow import Display, follow
from app.exit_codes import EXIT_INTERRUPTED
from app.interface import OrreryApi, Run

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
        if plan:
            run = await api.submit(Path(target))
        else:
            planned = planning(api, target, quiet=options.json, server=options.server)
            if options.server:  # the server plans on: its run is cancelled once it starts
                run = await planned
            else:  # stop the local model at once
                found = await first_of(planned, stop)
                if found is None:
                    Console(stderr=True).print("orrery: interrupted while planning")
                    return EXIT_INTERRUPTED
                run = found
        where = f"server {options.server}" if options.server else "this machine"
        display = Display(
            json=options.json,
            where=where,
            server=options.server,
            data_dir=options.data_dir,
        )
        return await follow(api, run, display, stop)


async def planning(api: OrreryApi, request: str, *, quiet: bool, server: str | None) -> Run:
    """Submit a request in words, showing that (and how long) the planner works on it."""
    whose = "the server's" if server else "the local"
    err = Console(stderr=True, highlight=False)
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
