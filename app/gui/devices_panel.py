"""The devices panel: every device, its state, platform, labels, load, heartbeat age,
GPU/VRAM and the stars it runs; and enrolling a new one (its token shown once, with the
exact `orrery device` command to run on the other machine)."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.control.messages import DeviceEntry
from app.gui.safe_text import plain, tooltip

COLUMNS = ("device", "state", "platform", "labels", "load", "heartbeat", "GPU", "running")
STATE_MARKS = {"online": "● online", "busy": "◐ busy", "offline": "○ offline", "lost": "✕ lost"}


REFRESH_TICKS = 5  # heartbeat ages are read afresh every 5 s while the panel shows


class DevicesPanel(QWidget):
    """`enroll_requested(name)` asks the window to enrol a device; `refresh_requested`
    asks for the list afresh (heartbeat ages: time passing is not an event)."""

    enroll_requested = Signal(str)
    refresh_requested = Signal()

    def __init__(self, server_url: Callable[[], str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._server_url = server_url
        self._devices: list[DeviceEntry] = []
        self._ticks = 0
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setAccessibleName("devices")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.enroll_button = QPushButton("Enrol a device…", self)
        self.enroll_button.setAccessibleName("enrol a device")
        self.enroll_button.clicked.connect(self._ask_name)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.enroll_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.table)
        layout.addLayout(row)
        self._ages = QTimer(self)  # heartbeat ages tick while nothing else changes
        self._ages.setInterval(1000)
        self._ages.timeout.connect(self._refresh_ages)
        self._ages.start()

    def set_devices(self, devices: list[DeviceEntry]) -> None:
        self._devices = list(devices)
        self._ticks = 0
        self.table.setRowCount(len(devices))
        for row, device in enumerate(devices):
            load = f"{len(device.running)}/{device.max_tasks}" if device.max_tasks else "-"
            gpu = "-"
            if device.gpu:
                gpu = f"yes, {device.vram_free_mb} MiB free" if device.vram_free_mb else "yes"
            name = f"{device.name} (this machine)" if device.in_process else device.name
            values = (
                name,
                STATE_MARKS.get(device.state, device.state),
                device.platform or "-",
                ", ".join(device.labels) or "-",
                load,
                _heartbeat(device),
                gpu,
                ", ".join(device.running) or "-",
            )
            for column, value in enumerate(values):
                item = QTableWidgetItem(plain(value))
                item.setData(Qt.ItemDataRole.UserRole, device.name)
                if column == 7 and device.running:
                    item.setToolTip(tooltip("\n".join(device.running)))
                self.table.setItem(row, column, item)

    def names(self, *, connected: bool = True) -> list[str]:
        return [d.name for d in self._devices if d.connected or not connected]

    def state_of(self, name: str) -> str | None:
        for device in self._devices:
            if device.name == name:
                return device.state
        return None

    def _refresh_ages(self) -> None:
        """Ages grow between refreshes; a new device list resets them."""
        self._ticks += 1
        if self._ticks >= REFRESH_TICKS and self.isVisible():
            self.refresh_requested.emit()
        for row, device in enumerate(self._devices):
            item = self.table.item(row, 5)
            if item is not None:
                item.setText(_heartbeat(device, self._ticks))

    def _ask_name(self) -> None:
        name, ok = QInputDialog.getText(self, "Enrol a device", "Name of the new device:")
        if ok and name.strip():
            self.enroll_requested.emit(name.strip())

    def show_token(self, name: str, token: str) -> EnrolDialog:
        dialog = EnrolDialog(name, token, self._server_url(), self)
        dialog.show()
        return dialog


class EnrolDialog(QDialog):
    """The new device's token, shown once, and the command to run on that machine."""

    def __init__(self, name: str, token: str, server: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Device {name} enrolled")
        self.command = (
            f"printf '%s\\n' '{token}' > {name}.token && chmod 600 {name}.token\n"
            f"orrery device --server {server} --name {name} --token-file {name}.token"
        )
        note = QLabel(
            "This token is shown only once: Orrery keeps a key derived from it. "
            "On the other machine, save it and start the device:",
            self,
        )
        note.setWordWrap(True)
        self.token_field = QLineEdit(token, self)
        self.token_field.setReadOnly(True)
        self.token_field.setAccessibleName("enrolment token")
        self.command_field = QPlainTextEdit(self.command, self)
        self.command_field.setReadOnly(True)
        self.command_field.setAccessibleName("command to run on the device")
        self.command_field.setMaximumHeight(70)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        copy = buttons.addButton("Copy command", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.command))
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.token_field)
        layout.addWidget(self.command_field)
        layout.addWidget(buttons)


def _heartbeat(device: DeviceEntry, ticks: int = 0) -> str:
    """How long ago the device was heard from (its state change, if not connected)."""
    if device.in_process:
        return "in process"
    if device.connected and device.heartbeat_age is not None:
        return _age(device.heartbeat_age + ticks)
    if device.last_seen is None:
        return "never"
    return _age(time.time() - device.last_seen)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
