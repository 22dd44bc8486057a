"""A plan made from words, shown before it runs: its stars and Start / Discard.

`PlanPreview` shows a `Proposal` (`app.control.messages`): the request, the planner's
rationale, and a row per star (id, device, tool, the command or path, what it waits
for). Nothing has touched a device yet; "Start" (focused, so Enter starts it) emits
`start_requested`, "Discard" or Escape `discard_requested`. Every text here was written
by a person or the planner model, so it is shown as plain text (`app.gui.safe_text`).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.control.messages import Proposal
from app.gui.safe_text import plain, plain_label, tooltip

COLUMNS = ("star", "device", "tool", "command or path", "after")
MAX_ROWS_SHOWN = 6


class PlanPreview(QWidget):
    """See the module docstring. Hidden while no proposal is shown."""

    start_requested = Signal()
    discard_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("proposed plan")
        self.proposal: Proposal | None = None
        self.title = QLabel(self)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.request = plain_label(QLabel(self))
        self.request.setWordWrap(True)
        self.rationale = plain_label(QLabel(self))
        self.rationale.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setAccessibleName("proposed stars")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)  # the tooltip has it all
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.start_button = QPushButton("Start", self)
        self.start_button.setAccessibleName("start the proposed plan")
        self.start_button.setToolTip("Run this plan on the devices shown (Enter)")
        self.start_button.setAutoDefault(True)
        self.start_button.clicked.connect(self.start_requested)
        self.discard_button = QPushButton("Discard", self)
        self.discard_button.setAccessibleName("discard the proposed plan")
        self.discard_button.setToolTip("Drop this plan; nothing runs (Escape)")
        self.discard_button.clicked.connect(self.discard_requested)
        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        escape.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        escape.activated.connect(self.discard_requested)
        buttons = QVBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.discard_button)
        buttons.addStretch(1)
        text = QVBoxLayout()
        text.addWidget(self.title)
        text.addWidget(self.request)
        text.addWidget(self.rationale)
        text.addWidget(self.table)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(text, 1)
        layout.addLayout(buttons)
        self.hide()

    def show_proposal(self, proposal: Proposal) -> None:
        """Show `proposal` and put the focus on Start."""
        self.proposal = proposal
        count = len(proposal.stars)
        self.title.setText(
            f"<b>Proposed plan</b> — {count} star{'s' if count != 1 else ''}; nothing has run "
            "yet. Start it, or discard it."
        )
        self.request.setText(plain(f"request: {proposal.request}"))
        self.rationale.setText(plain(f"why: {proposal.rationale}" if proposal.rationale else ""))
        self.rationale.setVisible(bool(proposal.rationale))
        self.table.setRowCount(count)
        for row, star in enumerate(proposal.stars):
            values = (star.id, star.device, star.tool, star.what, ", ".join(star.after))
            for column, value in enumerate(values):
                item = QTableWidgetItem(plain(" ".join(value.split())))
                item.setToolTip(tooltip(value if column == 3 else star.title or value))
                self.table.setItem(row, column, item)
        self._fit_rows()
        self.show()
        self.start_button.setFocus(Qt.FocusReason.OtherFocusReason)

    def _fit_rows(self) -> None:
        """As tall as its rows, up to `MAX_ROWS_SHOWN` (then it scrolls): the drawing
        above keeps the rest of the room."""
        self.table.resizeRowsToContents()
        shown = min(self.table.rowCount(), MAX_ROWS_SHOWN)
        rows = sum(self.table.rowHeight(row) for row in range(shown))
        frame = 2 * self.table.frameWidth()
        header = self.table.horizontalHeader().sizeHint().height()
        self.table.setFixedHeight(header + rows + frame)

    def clear(self) -> None:
        """Nothing proposed (started, discarded, or gone)."""
        self.proposal = None
        self.table.setRowCount(0)
        self.hide()

    def rows(self) -> list[tuple[str, ...]]:
        """What the table shows, row by row (for tests and screen readers alike)."""
        return [
            tuple(
                item.text() if (item := self.table.item(row, column)) is not None else ""
                for column in range(self.table.columnCount())
            )
            for row in range(self.table.rowCount())
        ]
