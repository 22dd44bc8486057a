"""The star inspector: one star's tool and arguments (references shown resolved once the
stars they name have finished), its device, attempts with their timing and errors, the
output it streams while it runs, its result, and the plan's rationale."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from PySide6.QtWidgets import (
    QFormLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from agents.constellation.references import UnresolvedReference, resolve_references
from agents.events import Event, StarProgress
from app.gui.safe_text import markup, plain, plain_label

STREAM_LINES = 2000  # lines of streamed output kept per star


class StarInspector(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.star_id: str | None = None
        self._snapshot: Mapping[str, Any] = {}
        self._streams: dict[str, list[str]] = {}
        self.title = QLabel("Select a star in the constellation", self)
        self.title.setWordWrap(True)
        self.tool = plain_label(QLabel("-", self))
        self.device = plain_label(QLabel("-", self))
        self.status = plain_label(QLabel("-", self))
        self.rationale = plain_label(QLabel("", self))
        self.rationale.setWordWrap(True)
        form = QFormLayout()
        form.addRow("tool", self.tool)
        form.addRow("device", self.device)
        form.addRow("status", self.status)
        form.addRow("plan", self.rationale)
        self.args = _text("arguments (references resolved once known)")
        self.attempts = QTableWidget(0, 5, self)
        self.attempts.setHorizontalHeaderLabels(["#", "device", "status", "seconds", "error"])
        self.attempts.setAccessibleName("attempts")
        self.attempts.verticalHeader().setVisible(False)
        self.attempts.horizontalHeader().setStretchLastSection(True)
        self.attempts.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents
        )
        self.attempts.setMaximumHeight(110)
        self.stream = _text("output as it streams")
        self.result = _text("result")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addLayout(form)
        for label, widget in (
            ("arguments", self.args),
            ("attempts", self.attempts),
            ("streaming output", self.stream),
            ("result", self.result),
        ):
            layout.addWidget(QLabel(label, self))
            layout.addWidget(widget)

    def set_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        if snapshot.get("id") != self._snapshot.get("id"):
            self._streams.clear()
        self._snapshot = snapshot
        self.rationale.setText(plain(snapshot.get("rationale") or "-"))
        self._render()

    def show_star(self, star_id: str | None) -> None:
        self.star_id = star_id
        self._render()

    def on_event(self, event: Event) -> None:
        if isinstance(event, StarProgress):
            lines = self._streams.setdefault(event.star_id, [])
            lines.append(event.message)
            del lines[:-STREAM_LINES]
            if event.star_id == self.star_id:
                self.stream.appendPlainText(plain(event.message))

    def _render(self) -> None:
        stars: Mapping[str, Any] = self._snapshot.get("stars") or {}
        star = stars.get(self.star_id) if self.star_id else None
        if star is None:
            self.title.setText("Select a star in the constellation")
            for label in (self.tool, self.device, self.status):
                label.setText("-")
            for box in (self.args, self.stream, self.result):
                box.clear()
            self.attempts.setRowCount(0)
            return
        title = star.get("title") or ""
        self.title.setText(f"<b>{markup(self.star_id)}</b> {markup(title)}")
        self.tool.setText(plain(star.get("tool") or "agent.do"))
        attempts = star.get("attempts") or []
        self.device.setText(plain(attempts[-1].get("device")) if attempts else "not started")
        note = star.get("error") or star.get("skip_reason") or ""
        self.status.setText(plain(f"{star.get('status')}{': ' + str(note) if note else ''}"))
        self.args.setPlainText(plain(_pretty(_resolved(star, stars))))
        self.attempts.setRowCount(len(attempts))
        for row, attempt in enumerate(attempts):
            started, finished = attempt.get("started_at"), attempt.get("finished_at")
            seconds = f"{finished - started:.2f}" if finished and started else "running"
            values = (attempt.get("number"), attempt.get("device"), attempt.get("status"),
                      seconds, attempt.get("error") or "")  # fmt: skip
            for column, value in enumerate(values):
                self.attempts.setItem(row, column, QTableWidgetItem(plain(value)))
        self.stream.setPlainText(plain("\n".join(self._streams.get(str(self.star_id), []))))
        output = star.get("output")
        self.result.setPlainText("" if output is None else plain(_pretty(output)))


def _resolved(star: Mapping[str, Any], stars: Mapping[str, Any]) -> Any:
    """The star's arguments with each `${star.output...}` filled in where that star has
    finished (the rest left as written)."""
    args = star.get("args") or (
        {"goal": star.get("instruction")} if star.get("instruction") else {}
    )

    def finished(star_id: str) -> tuple[object, str | None] | None:
        other = stars.get(star_id)
        if other is None or other.get("status") not in ("succeeded", "failed", "skipped",
                                                          "cancelled"):  # fmt: skip
            return None
        return other.get("output"), other.get("error")

    resolved = {}
    for key, value in args.items():  # each argument on its own: some may be known already
        try:
            resolved[key] = resolve_references(value, finished)
        except UnresolvedReference:
            resolved[key] = value
    return resolved


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _text(name: str) -> QPlainTextEdit:
    box = QPlainTextEdit()
    box.setReadOnly(True)
    box.setAccessibleName(name)
    box.setMaximumBlockCount(STREAM_LINES)
    return box
