"""Device text on a terminal (issue 16, finding 9): control characters from devices are
escaped before they reach a terminal, in the live display, the tables and the last line."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from agents.constellation import Constellation, Star, StarStatus
from agents.events import ApprovalNeeded, AttemptFailed, StarFinished, StarStarted
from app.commands.follow import outcome
from app.interface import Run, RunResult
from app.progress import LiveProgress, summary_table
from app.text_safety import is_printable, one_line, printable

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;owned\x07"
NASTY = f"disk {CLEAR}full{TITLE}\r\x9b1m \u202eevil\u200b"


def test_printable_escapes_control_and_format_characters_and_keeps_text() -> None:
    assert printable("plain text, é, 中文, emoji 🙂\nline two\ttab") == (
        "plain text, é, 中文, emoji 🙂\nline two\ttab"
    )
    shown = printable(NASTY)
    assert shown == "disk \\x1b[2Jfull\\x1b]0;owned\\x07\\x0d\\x9b1m \\u202eevil\\u200b"
    assert is_printable(shown)
    assert not is_printable(NASTY)


def test_one_line_folds_breaks_and_cuts() -> None:
    assert one_line("a\n  b\r\nc\x1b") == "a b c\\x1b"
    assert one_line("x" * 50, 10) == "x" * 9 + "…"


def rendered(draw: object) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    console.print(draw)
    return out.getvalue()


def test_the_live_display_escapes_what_devices_report() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=300, color_system=None)
    with LiveProgress(console, server="ws://127.0.0.1:1") as live:
        live(StarStarted(constellation_id="c", star_id="a", attempt=1, device="dev"))
        live(AttemptFailed(constellation_id="c", star_id="a", attempt=1, device="dev",
                           error=NASTY, will_retry=True))  # fmt: skip
        live(StarFinished(constellation_id="c", star_id="a", status="failed", error=NASTY))
        live(ApprovalNeeded(constellation_id="c", star_id="a", attempt=2, device="dev",
                            request="r1", tool="shell.run", summary=NASTY))  # fmt: skip
    text = out.getvalue()
    assert CLEAR not in text
    assert "\x07" not in text
    assert "\x9b" not in text
    assert "\u202e" not in text
    assert text.count("disk \\x1b[2Jfull") == 3


def test_the_summary_table_escapes_a_star_error() -> None:
    star = Star(id="a", tool="shell.run", status=StarStatus.FAILED, error=NASTY)
    table = summary_table(Constellation(id="c1", name="n", stars={"a": star}))
    text = rendered(table)
    assert CLEAR not in text
    assert "\\x1b[2Jfull" in text


def test_the_last_line_escapes_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    run = Run(None, "c1", "report")  # type: ignore[arg-type]  # only its name and id are used
    result = RunResult("c1", "failed", NASTY, "a", no_capable_device=False)
    outcome(run, result, interrupted=False, quiet=False)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert CLEAR not in err
    assert "\\x1b[2Jfull" in err
