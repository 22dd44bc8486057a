"""Following one run to its end on the terminal, for `orrery run`, `serve --run` and the demo.

It prints the constellation's id first (for `show`, `cancel` and `retry`), then its events
(the live display, or JSON lines with `--json`), then the summary table and the outputs
the stars produced, and turns how it ended into the exit code. A first Ctrl-C (`stop`)
cancels the constellation and still shows how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from agents.constellation import Constellation
from agents.events import Event, event_to_json
from app.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NO_DEVICE, EXIT_OK
from app.interface import OrreryApi, Run, RunResult
from app.progress import StarBars, outputs_table, summary_table
from app.text_safety import one_line


@dataclass(frozen=True, slots=True)
class Display:
    """How to show a run: JSON lines or the live display; `server` (a URL) when a server
    runs it, so approval hints name it; `data_dir` when not the default one."""

    json: bool = False
    where: str = ""
    server: str | None = None
    data_dir: str | None = None


async def follow(api: OrreryApi, run: Run, display: Display, stop: asyncio.Event) -> int:
    """Show `run` until it ends (see the module docstring); its exit code."""
    out = Console(highlight=False, emoji=False)
    err = Console(stderr=True, highlight=False, emoji=False)
    if display.json:
        err.print(f"orrery: constellation {run.id}")
    else:
        where = f", {display.where}" if display.where else ""
        out.print(f"[bold]{escape(one_line(run.name))}[/] ({run.id}): {run.stars} stars{where}")
    interrupted = False

    async def watch() -> RunResult:
        if display.json:
            async for event in run.events():
                _json_line(event)
        else:
            with StarBars(out, server=display.server, data_dir=display.data_dir) as bars:
                async for event in run.events():
                    bars(event)
        return await run.wait()

    watching = asyncio.ensure_future(watch())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not watching.done():
            interrupted = True
            err.print("orrery: interrupted; cancelling the constellation")
            await run.cancel("interrupted (Ctrl-C) in `orrery run`")
        result = await watching
    finally:
        stopping.cancel()
        if not watching.done():
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watching
    if not display.json:
        snapshot = await run.snapshot()
        final = Constellation.model_validate(snapshot.constellation)
        out.print(summary_table(final))
        produced = outputs_table(final)
        if produced is not None:
            out.print(produced)
    return outcome(run, result, interrupted=interrupted, quiet=display.json)


def outcome(run: Run, result: RunResult, *, interrupted: bool, quiet: bool) -> int:
    """Say how the run ended on stderr, on one line with control characters escaped (the
    reason may come from a device), and where to look closer; its exit code."""
    name = repr(one_line(run.name)) if run.name else run.id
    look = f" (`orrery show {run.id}`)"
    if result.succeeded:
        if not quiet:
            print(f"orrery: constellation {name} succeeded{look}", file=sys.stderr)
        return EXIT_OK
    if result.status == "cancelled":
        print(f"orrery: constellation {name} was cancelled: {one_line(str(result.reason))}{look}",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
    reason = one_line(str(result.reason))
    why = f"star {one_line(result.failed_star)!r}: {reason}" if result.failed_star else reason
    code, gap = EXIT_FAILED, ""
    if result.no_capable_device:
        code, gap = EXIT_NO_DEVICE, "no capable device: "
    print(f"orrery: constellation {name} failed: {gap}{why}{look}", file=sys.stderr)
    return code


def _json_line(event: Event) -> None:
    sys.stdout.write(event_to_json(event) + "\n")
    sys.stdout.flush()


__all__ = ["Display", "follow", "outcome"]
