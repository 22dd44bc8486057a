"""How `orrery run` shows a constellation running: live progress, then a summary table.

On a terminal it draws a rich progress bar and prints a line per finished star; in a
pipe it prints plain lines. With `--json` it prints one JSON event per line instead.
Whatever came from a device or a model (errors, outputs, summaries, reasons) is shown
through `app.text_safety` (control characters escaped) and rich's `escape` (no markup).
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from agents.constellation import Constellation, StarStatus
from agents.events import (
    ApprovalGiven,
    ApprovalNeeded,
    AttemptFailed,
    ConstellationFinished,
    ConstellationSubmitted,
    EditApplied,
    Event,
    ReviewFinished,
    ReviewStarted,
    StarFinished,
    StarStarted,
    event_to_json,
)
from app.text_safety import one_line, printable

_STYLE = {
    StarStatus.SUCCEEDED: "green",
    StarStatus.FAILED: "red",
    StarStatus.CANCELLED: "yellow",
    StarStatus.SKIPPED: "dim",
}


class JsonLines:
    """Listener that writes every event as one JSON line."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        self.out.write(event_to_json(event) + "\n")
        self.out.flush()


class LiveProgress:
    """Listener that shows progress on a console while stars run."""

    def __init__(
        self, console: Console, *, server: str | None = None, data_dir: str | None = None
    ) -> None:
        self.console = console
        self.server = server  # a run on `orrery serve`: approvals are answered there
        self.data_dir = data_dir  # named in the approve hint when it is not the default
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task: TaskID | None = None
        self._review: TaskID | None = None  # the line shown while the planner reviews

    def __enter__(self) -> LiveProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, ConstellationSubmitted):
            self._task = self._progress.add_task(_safe(event.name), total=event.stars)
        elif isinstance(event, StarStarted):
            self.console.print(
                f"  [cyan]start[/]  {_safe(event.star_id)} (attempt {event.attempt} on "
                f"{_safe(event.device)})",
                highlight=False,
            )
        elif isinstance(event, AttemptFailed):
            retry = ", retrying" if event.will_retry else ""
            self.console.print(
                f"  [red]error[/]  {_safe(event.star_id)} attempt {event.attempt}: "
                f"{_safe(event.error)}{retry}",
                highlight=False,
            )
        elif isinstance(event, StarFinished):
            style = _STYLE.get(StarStatus(event.status), "")
            note = f": {_safe(event.error)}" if event.error else ""
            self.console.print(
                f"  [{style}]{event.status:<9}[/] {_safe(event.star_id)}{note}", highlight=False
            )
            if self._task is not None:
                self._progress.advance(self._task)
        elif isinstance(event, EditApplied):
            self.console.print(
                f"  [magenta]edit[/]   version {event.version}: {_safe(event.rationale)}",
                highlight=False,
            )
        elif isinstance(event, ApprovalNeeded):
            answer = ""
            if self.server:
                home = f" --data-dir {self.data_dir}" if self.data_dir else ""
                answer = f"; answer with `orrery approve {event.request} --server {self.server}"
                answer += f"{home}` (or --deny)"
            self.console.print(
                f"  [yellow]approve?[/] {_safe(event.star_id)} on {_safe(event.device)}: "
                f"{_safe(event.summary, None)} (request {_safe(event.request)}"
                f"{escape(answer)})",
                highlight=False,
            )
        elif isinstance(event, ApprovalGiven):
            verdict = "[green]approved[/]" if event.approved else "[red]refused[/]"
            self.console.print(
                f"  {verdict} {_safe(event.star_id)}: {_safe(event.reason)}", highlight=False
            )
        elif isinstance(event, ReviewStarted):
            self._review_done()
            what = f"{_safe(event.describe())}..."
            self.console.print(
                f"  [magenta]planner[/] {what} (deadline {event.deadline_s:g}s)", highlight=False
            )
            self._review = self._progress.add_task(what, total=None)
        elif isinstance(event, ReviewFinished):
            self._review_done()
            style = "yellow" if event.outcome in ("timed_out", "error") else "magenta"
            self.console.print(f"  [{style}]planner[/] {_safe(event.describe())}", highlight=False)
        if isinstance(event, ConstellationFinished):
            self._review_done()

    def _review_done(self) -> None:
        review, self._review = self._review, None
        if review is not None:
            self._progress.remove_task(review)


class StarBars(LiveProgress):
    """The live display with, besides, a bar per running star."""

    def __init__(
        self, console: Console, *, server: str | None = None, data_dir: str | None = None
    ) -> None:
        super().__init__(console, server=server, data_dir=data_dir)
        self._bars: dict[str, TaskID] = {}

    def __enter__(self) -> StarBars:
        super().__enter__()
        return self

    def __call__(self, event: Event) -> None:
        super().__call__(event)
        if isinstance(event, StarStarted):
            label = f"  {_safe(event.star_id)} on {_safe(event.device)}"
            self._bars[event.star_id] = self._progress.add_task(label, total=None)
        elif isinstance(event, StarFinished | AttemptFailed):
            bar = self._bars.pop(event.star_id, None)
            if bar is not None:
                self._progress.remove_task(bar)


def summary_table(constellation: Constellation) -> Table:
    table = Table(title=f"{_safe(constellation.name)} (version {constellation.version})")
    table.add_column("star")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("device")
    table.add_column("seconds", justify="right")
    table.add_column("note", overflow="fold")
    for star in constellation.stars.values():
        last = star.current_attempt
        seconds = ""
        if last is not None and last.finished_at is not None:
            seconds = f"{last.finished_at - last.started_at:.2f}"
        note = star.error or star.skip_reason or ""
        style = _STYLE.get(star.status, "")
        table.add_row(
            _safe(star.id),
            f"[{style}]{star.status}[/]" if style else str(star.status),
            str(len(star.attempts)),
            _safe(last.device) if last else "",
            seconds,
            _safe(note),
        )
    return table


def _safe(text: str, limit: int | None = 200) -> str:
    """Device or model text for a rich console: one line, control characters escaped,
    markup escaped, at most `limit` characters."""
    return escape(one_line(text, limit))


OUTPUT_CHARS = 600
OUTPUT_LINES = 8


def outputs_table(constellation: Constellation) -> Table | None:
    """The values the succeeded stars produced (bounded, escaped), or None if none did."""
    table = Table(title="outputs", show_header=False)
    table.add_column("star", style="bold")
    table.add_column("output", overflow="fold")
    for star in constellation.stars.values():
        if star.status is StarStatus.SUCCEEDED and star.output not in (None, {}, []):
            # Text: neither markup nor emoji codes (`root:x:0` is not `root❌0`) are read
            table.add_row(Text(one_line(star.id, 200)), Text(render_output(star.output)))
    return table if table.row_count else None


def render_output(output: object, *, chars: int = OUTPUT_CHARS, lines: int = OUTPUT_LINES) -> str:
    """A star's output as text for a terminal: a command's stdout (or a file's content) as
    text, anything else as compact JSON; control characters escaped; at most `lines`
    lines and `chars` characters, with what was left out said."""
    if isinstance(output, dict):
        for key in ("stdout", "content", "body", "text"):
            text = output.get(key)
            if isinstance(text, str) and text.strip():
                return _bounded(printable(text.rstrip("\n")), chars, lines)
    text = json.dumps(output, ensure_ascii=False, separators=(", ", ": "), default=str)
    return _bounded(printable(text), chars, lines)


def _bounded(text: str, chars: int, lines: int) -> str:
    kept = text.split("\n")
    more = ""
    if len(kept) > lines:
        more = f"… ({len(kept) - lines} more lines)"
        kept = kept[:lines]
    joined = "\n".join(kept)
    if len(joined) > chars:
        cut = len(text) - chars
        joined, more = joined[:chars], f"… ({cut} more characters)"
    return f"{joined}\n{more}" if more else joined
