"""Where a person says what to do: a request in words, or a plan file (opened or dropped).

Ctrl+Enter runs what is typed; Ctrl+Up / Ctrl+Down walk through earlier requests (kept in
QSettings); a `.yaml` file dropped on the box, or chosen with "Open plan…", runs that plan.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QUrl, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QKeyEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

HISTORY_KEY = "requests/history"
HISTORY_SIZE = 50


class _Editor(QPlainTextEdit):
    submitted = Signal()
    older = Signal()
    newer = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        control = event.modifiers() & Qt.KeyboardModifier.ControlModifier
        if control and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.submitted.emit()
            return
        if control and event.key() == Qt.Key.Key_Up:
            self.older.emit()
            return
        if control and event.key() == Qt.Key.Key_Down:
            self.newer.emit()
            return
        super().keyPressEvent(event)


class RequestBox(QWidget):
    """Emits `request(str)` for words and `plan_file(Path)` for a plan."""

    request = Signal(str)
    plan_file = Signal(object)

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        stored = settings.value(HISTORY_KEY, [])
        self._history: list[str] = [str(t) for t in stored] if isinstance(stored, list) else []
        self._position = len(self._history)
        self.editor = _Editor(self)
        self.editor.setPlaceholderText(
            "What should your machines do? (Ctrl+Enter runs it; drop a plan .yaml here)"
        )
        self.editor.setAccessibleName("request")
        self.editor.setMaximumHeight(90)
        self.editor.setAcceptDrops(False)
        self.editor.submitted.connect(self.submit)
        self.editor.older.connect(lambda: self._walk(-1))
        self.editor.newer.connect(lambda: self._walk(+1))
        self.run_button = QPushButton("Run", self)
        self.run_button.setAccessibleName("run the request")
        self.run_button.setToolTip("Run the request (Ctrl+Enter)")
        self.run_button.clicked.connect(self.submit)
        self.open_button = QPushButton("Open plan…", self)
        self.open_button.setAccessibleName("open a plan file")
        self.open_button.clicked.connect(self.choose_plan)
        buttons = QVBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.open_button)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.editor, 1)
        layout.addLayout(buttons)
        self.setAcceptDrops(True)

    def submit(self) -> None:
        text = self.editor.toPlainText().strip()
        if not text:
            return
        path = Path(text)
        if text.endswith((".yaml", ".yml")) and path.is_file():
            self.plan_file.emit(path)
        else:
            self.request.emit(text)
        self._remember(text)
        self.editor.clear()

    def choose_plan(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(
            self, "Open a plan", "", "Plans (*.yaml *.yml);;All files (*)"
        )
        if chosen:
            self.plan_file.emit(Path(chosen))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_plan(event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        path = _dropped_plan(event.mimeData().urls())
        if path is not None:
            event.acceptProposedAction()
            self.plan_file.emit(path)

    def _remember(self, text: str) -> None:
        if not self._history or self._history[-1] != text:
            self._history.append(text)
        self._history = self._history[-HISTORY_SIZE:]
        self._position = len(self._history)
        self._settings.setValue(HISTORY_KEY, self._history)

    def _walk(self, step: int) -> None:
        if not self._history:
            return
        self._position = max(0, min(len(self._history), self._position + step))
        text = self._history[self._position] if self._position < len(self._history) else ""
        self.editor.setPlainText(text)


def _dropped_plan(urls: list[QUrl]) -> Path | None:
    for url in urls:
        local = url.toLocalFile()
        if local and local.endswith((".yaml", ".yml")):
            return Path(local)
    return None
