"""Two lists the window keeps docked: the approvals inbox and the history of runs.

The inbox shows what each device asks to do, for which star; "Approve" and "Deny" answer
with the reason typed (a tray notification says when a new one arrives). The history lists
past runs newest first: open one read-only in the same views, or run its request again.
"""

from __future__ import annotations

import datetime as dt

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.control.messages import HistoryEntry, PendingApprovalInfo
from app.gui.safe_text import plain, tooltip


class ApprovalsInbox(QWidget):
    """`decided(request, approved, reason)` when a person answers."""

    decided = Signal(str, bool, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget(self)
        self.list.setAccessibleName("approvals waiting")
        self.reason = QLineEdit(self)
        self.reason.setPlaceholderText("reason (recorded with the answer)")
        self.reason.setAccessibleName("reason for the answer")
        self.approve_button = QPushButton("Approve", self)
        self.approve_button.setAccessibleName("approve the selected call")
        self.deny_button = QPushButton("Deny", self)
        self.deny_button.setAccessibleName("deny the selected call")
        self.approve_button.clicked.connect(lambda: self._answer(True))
        self.deny_button.clicked.connect(lambda: self._answer(False))
        row = QHBoxLayout()
        row.addWidget(self.reason, 1)
        row.addWidget(self.approve_button)
        row.addWidget(self.deny_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.list)
        layout.addLayout(row)
        self._buttons()

    def set_approvals(self, approvals: list[PendingApprovalInfo]) -> None:
        selected = self.selected()
        self.list.clear()
        for item in approvals:
            line = QListWidgetItem(
                plain(
                    f"{item.device} asks: {item.summary}  — star {item.star} "
                    f"(attempt {item.attempt}) of {item.constellation}"
                )
            )
            line.setData(Qt.ItemDataRole.UserRole, item.request)
            line.setToolTip(tooltip(f"request {item.request}, tool {item.tool}"))
            self.list.addItem(line)
            if item.request == selected:
                self.list.setCurrentItem(line)
        if self.list.currentItem() is None and self.list.count():
            self.list.setCurrentRow(0)
        self._buttons()

    def selected(self) -> str | None:
        item = self.list.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def _answer(self, approved: bool) -> None:
        request = self.selected()
        if request is not None:
            self.decided.emit(request, approved, self.reason.text().strip())
            self.reason.clear()

    def _buttons(self) -> None:
        waiting = self.list.count() > 0
        self.approve_button.setEnabled(waiting)
        self.deny_button.setEnabled(waiting)


class HistoryPanel(QWidget):
    """`opened(id)` shows a past run; `run_again(id)` runs its plan again."""

    opened = Signal(str)
    run_again = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget(self)
        self.list.setAccessibleName("past runs")
        self.list.itemActivated.connect(self._open)
        self.open_button = QPushButton("Open", self)
        self.open_button.setAccessibleName("open the selected run")
        self.open_button.clicked.connect(lambda: self._open(self.list.currentItem()))
        self.again_button = QPushButton("Run again", self)
        self.again_button.setAccessibleName("run the selected run again")
        self.again_button.clicked.connect(self._again)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.open_button)
        row.addWidget(self.again_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.list)
        layout.addLayout(row)

    def set_history(self, entries: list[HistoryEntry]) -> None:
        current = self.list.currentItem()
        keep = current.data(Qt.ItemDataRole.UserRole) if current is not None else None
        self.list.clear()
        for entry in entries:
            when = dt.datetime.fromtimestamp(entry.created_at).strftime("%Y-%m-%d %H:%M")
            line = QListWidgetItem(
                plain(f"{when}  {entry.status:<9}  {entry.name} ({entry.stars} stars)  {entry.id}")
            )
            line.setData(Qt.ItemDataRole.UserRole, entry.id)
            if entry.reason:
                line.setToolTip(tooltip(entry.reason))
            self.list.addItem(line)
            if entry.id == keep:
                self.list.setCurrentItem(line)

    def _open(self, item: QListWidgetItem | None) -> None:
        if item is not None:
            self.opened.emit(str(item.data(Qt.ItemDataRole.UserRole)))

    def _again(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.run_again.emit(str(item.data(Qt.ItemDataRole.UserRole)))
