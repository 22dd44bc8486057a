"""While a request is planned (issue 21, point 6: `run --server "request"` waited 34 s
with no output), `orrery run` says so: a spinner with the seconds on a terminal, a line
otherwise, nothing with --json. tests/e2e/test_first_hour.py sees the line from outside."""

from __future__ import annotations

import asyncio
import io
import re

from rich.console import Console

from app.commands.run import _status

WHAT = "planning with the server's model: tidy up /tmp"


def console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=200, color_system=None), out


async def test_off_a_terminal_one_line_comes_before_the_planner_answers() -> None:
    screen, out = console(terminal=False)
    async with _status(screen, WHAT, quiet=False):
        assert out.getvalue() == f"orrery: {WHAT}\n"  # said before the wait, not after


async def test_on_a_terminal_a_spinner_runs_and_the_time_taken_is_said() -> None:
    screen, out = console(terminal=True)
    async with _status(screen, WHAT, quiet=False):
        await asyncio.sleep(0)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert re.search(rf"orrery: {re.escape(WHAT)} \(\d+\.\ds\)\n$", text), text


async def test_with_json_nothing_is_said() -> None:
    for terminal in (True, False):
        screen, out = console(terminal=terminal)
        async with _status(screen, WHAT, quiet=True):
            pass
        assert out.getvalue() == ""
