"""The event log: every event of the shown run and of the fleet, newest last, filtered by
level (all, problems only), device and star; and the run header: counts by state, elapsed
time, and the run's parallelism (critical path, width, speed-up achieved)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from agents.events import Event, ReviewFinished, ReviewStarted, event_to_dict
from app.gui.safe_text import markup, plain
from app.run_stats import run_stats

KEEP = 5000  # lines kept; older ones drop off the top
PROBLEMS = {"attempt.failed", "result.stale", "device.left"}


@dataclass(frozen=True, slots=True)
class LogLine:
    text: str
    kind: str
    device: str
    star: str
    problem: bool


def describe(event: Event) -> LogLine:
    """One event as a log line a person reads."""
    data = event_to_dict(event)
    kind = str(data.get("type"))
    star = str(data.get("star_id") or ", ".join(data.get("failed") or []))
    device = str(data.get("device") or "")
    detail = {
        "constellation.submitted": lambda: f"{data.get('name')}: {data.get('stars')} stars",
        "star.ready": lambda: f"{star} is ready",
        "star.started": lambda: f"{star} started (attempt {data.get('attempt')}) on {device}",
        "star.progress": lambda: f"{star}: {str(data.get('message'))[:300]}",
        "attempt.failed": lambda: (
            f"{star} attempt {data.get('attempt')} failed on {device}: "
            f"{data.get('error')}{' (retrying)' if data.get('will_retry') else ''}"
        ),
        "star.finished": lambda: (
            f"{star} {data.get('status')}" + (f": {data.get('error')}" if data.get("error") else "")
        ),
        "edit.applied": lambda: f"edit to version {data.get('version')}: {data.get('rationale')}",
        "review.started": lambda: (
            f"{event.describe()}... (deadline {event.deadline_s:g}s)"
            if isinstance(event, ReviewStarted)
            else kind
        ),
        "review.finished": lambda: (
            f"review: {event.describe()}" if isinstance(event, ReviewFinished) else kind
        ),
        "approval.needed": lambda: f"{device} asks to {data.get('summary')} (for {star})",
        "approval.given": lambda: (
            f"{'approved' if data.get('approved') else 'refused'} "
            f"{data.get('request')} by {data.get('by')}"
        ),
        "constellation.finished": lambda: (
            f"run {data.get('status')}" + (f": {data.get('reason')}" if data.get("reason") else "")
        ),
        "device.joined": lambda: f"device {device} joined ({data.get('platform')})",
        "device.state": lambda: (
            f"device {device} is {data.get('state')}"
            + (f": {data.get('reason')}" if data.get("reason") else "")
        ),
        "device.left": lambda: (
            f"device {device} {'was lost' if data.get('lost') else 'left'}: {data.get('reason')}"
        ),
        "planning.started": lambda: f"planning: {data.get('request')}",
        "planning.finished": lambda: (
            f"planned in {data.get('seconds')}s"
            if data.get("planned")
            else f"planning failed: {data.get('error')}"
        ),
    }.get(kind, lambda: kind)()
    problem = (
        kind in PROBLEMS
        or (kind == "star.finished" and data.get("status") == "failed")
        or (kind == "device.state" and data.get("state") == "lost")
        or (kind == "planning.finished" and bool(data.get("error")))
        or (kind == "review.finished" and data.get("outcome") in ("timed_out", "error"))
        or (kind == "constellation.finished" and data.get("status") != "succeeded")
    )
    stamp = time.strftime("%H:%M:%S")
    return LogLine(plain(f"{stamp}  {kind:<22} {detail}"), kind, device, star, problem)


class EventLog(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lines: list[LogLine] = []
        self.level = QComboBox(self)
        self.level.addItems(["all events", "problems only"])
        self.level.setAccessibleName("log level")
        self.device = QLineEdit(self)
        self.device.setPlaceholderText("device")
        self.device.setAccessibleName("device filter")
        self.star = QLineEdit(self)
        self.star.setPlaceholderText("star")
        self.star.setAccessibleName("star filter")
        for control in (self.device, self.star):
            control.textChanged.connect(self._refilter)
        self.level.currentIndexChanged.connect(self._refilter)
        self.list = QListWidget(self)
        self.list.setAccessibleName("event log")
        self.list.setUniformItemSizes(True)
        filters = QHBoxLayout()
        filters.addWidget(QLabel("show", self))
        filters.addWidget(self.level)
        filters.addWidget(self.device)
        filters.addWidget(self.star)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(filters)
        layout.addWidget(self.list)

    def add(self, event: Event) -> None:
        line = describe(event)
        self._lines.append(line)
        if len(self._lines) > KEEP:
            del self._lines[: len(self._lines) - KEEP]
        if self._passes(line):
            self._append(line)
            while self.list.count() > KEEP:
                self.list.takeItem(0)
            self.list.scrollToBottom()

    def clear_run(self) -> None:
        self._lines.clear()
        self.list.clear()

    def shown_lines(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def _passes(self, line: LogLine) -> bool:
        if self.level.currentIndex() == 1 and not line.problem:
            return False
        device, star = self.device.text().strip(), self.star.text().strip()
        return (not device or device in line.device) and (not star or star in line.star)

    def _append(self, line: LogLine) -> None:
        item = QListWidgetItem(line.text)
        if line.problem:
            item.setForeground(QColor(210, 60, 50))
        item.setData(Qt.ItemDataRole.UserRole, line.star)
        self.list.addItem(item)

    def _refilter(self) -> None:
        self.list.clear()
        for line in self._lines:
            if self._passes(line):
                self._append(line)
        self.list.scrollToBottom()


class RunHeader(QLabel):
    """Counts by state, elapsed time and parallelism of the shown run, one line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("No run yet: type a request below, or open a plan.", parent)
        self.setAccessibleName("run summary")
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def show_run(
        self, name: str, status: str, snapshot: Mapping[str, Any], now: float | None
    ) -> None:
        stats = run_stats(snapshot, now)
        self.setText(f"<b>{markup(name)}</b> — {markup(status)} — {markup(stats.line())}")

    def show_proposal(self, name: str, stars: int, devices: int) -> None:
        """A plan proposed for review: nothing has run, so there is nothing to count."""
        where = f" on {devices} device{'s' if devices != 1 else ''}" if devices else ""
        self.setText(
            f"<b>{markup(name)}</b> — proposed, not started — {stars} "
            f"star{'s' if stars != 1 else ''}{where}; Start it below, or discard it"
        )
