"""Models and settings: the GGUF models the registry knows (size, quantisation, context,
where each would run and why, the GPU memory placement plans), loading and unloading the
planner's model with a progress indicator, the planner's edit policy, and the connection
(server address for the next start, data dir). Choices are kept with QSettings.

Finding models reads GGUF files and loading one takes seconds: both run off the UI thread
(a worker thread, and the model backend's own thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from agents.models.manager import LazyModelManager

EDIT_POLICIES = ("on_failure", "always", "never")
MODEL_COLUMNS = ("model", "roles", "params", "quant", "MiB", "context", "runs on", "GPU MiB",
                 "chat", "loaded")  # fmt: skip
POLICY_KEY = "planner/edit_policy"
PREVIEW_KEY = "planner/preview"
SERVER_KEY = "connection/server"


def preview_first(settings: QSettings) -> bool:
    """Whether a plan made from words is shown for review before it runs (default yes)."""
    return bool(settings.value(PREVIEW_KEY, True, type=bool))


class SettingsDialog(QDialog):
    def __init__(
        self,
        settings: QSettings,
        *,
        data_dir: Path,
        connection: str,
        models: LazyModelManager | None,
        apply_policy: Callable[[str], None] | None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models and settings")
        self.resize(1000, 520)
        self.settings = settings
        self.data_dir = data_dir
        self.models = models
        self._apply_policy = apply_policy
        self._tasks: set[asyncio.Task[Any]] = set()
        tabs = QTabWidget(self)
        tabs.addTab(self._models_tab(), "Models")
        tabs.addTab(self._settings_tab(connection), "Planner and connection")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(tabs)
        layout.addWidget(buttons)

    # ---------------------------------------------------------------- models

    def _models_tab(self) -> QWidget:
        page = QWidget(self)
        self.table = QTableWidget(0, len(MODEL_COLUMNS), page)
        self.table.setHorizontalHeaderLabels(list(MODEL_COLUMNS))
        self.table.setAccessibleName("models")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.busy = QProgressBar(page)
        self.busy.setAccessibleName("model progress")
        self.busy.setRange(0, 1)
        self.busy.setTextVisible(True)
        self.busy.setFormat("")
        self.status = QLabel("", page)
        self.status.setWordWrap(True)
        self.load_button = QPushButton("Load the planner's model", page)
        self.load_button.setAccessibleName("load the planner model")
        self.unload_button = QPushButton("Unload the selected model", page)
        self.unload_button.setAccessibleName("unload the selected model")
        self.refresh_button = QPushButton("Find models again", page)
        self.load_button.clicked.connect(lambda: self._spawn(self.load_planner()))
        self.unload_button.clicked.connect(lambda: self._spawn(self.unload_selected()))
        self.refresh_button.clicked.connect(lambda: self._spawn(self.refresh()))
        for button in (self.load_button, self.unload_button):
            button.setEnabled(self.models is not None)
        row = QHBoxLayout()
        row.addWidget(self.busy, 1)
        row.addWidget(self.refresh_button)
        row.addWidget(self.load_button)
        row.addWidget(self.unload_button)
        layout = QVBoxLayout(page)
        layout.addWidget(self.table)
        layout.addWidget(self.status)
        layout.addLayout(row)
        return page

    async def refresh(self) -> None:
        """Find the models (in a worker thread) and show them."""
        self._working("finding models…")
        try:
            rows, warnings = await asyncio.to_thread(find_models, self.data_dir)
        except Exception as exc:  # a broken orrery.toml, an unreadable folder
            self._done(f"cannot list the models: {exc}")
            return
        loaded = set(self.models.loaded()) if self.models is not None else set()
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            values = (row["name"], ", ".join(row["roles"]) or "-", row["parameters"],
                      row["quantisation"], f"{row['size_mib']:.0f}", str(row["context_length"]),
                      row["runs_on"], f"{row['gpu_mib']:.0f}", row["chat_format"],
                      "yes" if row["name"] in loaded else "")  # fmt: skip
            for column, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                if column == 6:
                    item.setToolTip(str(row["runs_on"]))
                self.table.setItem(index, column, item)
        note = f"{len(rows)} model(s) in {self.data_dir}"
        self._done("; ".join([note, *warnings]))

    async def load_planner(self) -> None:
        if self.models is None:
            return
        self._working("loading the planner's model…")
        try:
            backend = await self.models.backend("planner")
        except Exception as exc:  # a missing or corrupt model file says what to do
            self._done(f"the planner's model did not load: {exc}")
            return
        await self.refresh()
        self.status.setText(f"{backend.name} loaded in {backend.load_seconds:.1f}s")

    async def unload_selected(self) -> None:
        item = self.table.item(self.table.currentRow(), 0)
        if self.models is None or item is None:
            return
        name = item.text()  # the table is rebuilt below
        await self.models.unload(name)
        await self.refresh()
        self.status.setText(f"{name} unloaded")

    def _working(self, what: str) -> None:
        self.busy.setRange(0, 0)  # busy: moving, no percentage
        self.busy.setFormat(what)
        self.status.setText(what)
        for button in (self.load_button, self.unload_button, self.refresh_button):
            button.setEnabled(False)

    def _done(self, what: str) -> None:
        self.busy.setRange(0, 1)
        self.busy.setValue(1)
        self.busy.setFormat("")
        self.status.setText(what)
        self.refresh_button.setEnabled(True)
        for button in (self.load_button, self.unload_button):
            button.setEnabled(self.models is not None)

    # ---------------------------------------------------------------- settings

    def _settings_tab(self, connection: str) -> QWidget:
        page = QWidget(self)
        self.policy = QComboBox(page)
        self.policy.addItems(list(EDIT_POLICIES))
        self.policy.setAccessibleName("edit policy")
        self.policy.setCurrentText(str(self.settings.value(POLICY_KEY, "on_failure")))
        self.policy.currentTextChanged.connect(self._policy_changed)
        self.preview = QCheckBox("show it, and run it only when I press Start", page)
        self.preview.setAccessibleName("review a plan made from words before it runs")
        self.preview.setToolTip(
            "Off: a request in words runs as soon as it is planned (for trusted use)"
        )
        self.preview.setChecked(preview_first(self.settings))
        self.preview.toggled.connect(lambda on: self.settings.setValue(PREVIEW_KEY, on))
        self.server = QLineEdit(str(self.settings.value(SERVER_KEY, "")), page)
        self.server.setPlaceholderText("empty: host the orchestrator in the app")
        self.server.setAccessibleName("server for the next start")
        self.server.editingFinished.connect(
            lambda: self.settings.setValue(SERVER_KEY, self.server.text().strip())
        )
        form = QFormLayout(page)
        form.addRow("when the planner edits a running plan", self.policy)
        form.addRow("a plan made from words", self.preview)
        form.addRow("connected to", QLabel(connection, page))
        form.addRow("server at the next start", self.server)
        form.addRow("data dir", QLabel(f"{self.data_dir} (start with --data-dir to change)"))
        return page

    def _policy_changed(self, policy: str) -> None:
        self.settings.setValue(POLICY_KEY, policy)
        if self._apply_policy is not None:
            self._apply_policy(policy)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def find_models(data_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The model rows of `orrery models list` for `data_dir` (blocking: run in a thread)."""
    from agents.models.registry import ModelRegistry
    from app.models_cli import model_rows
    from app.settings import load_model_config

    config = load_model_config(data_dir)
    registry = ModelRegistry.discover(
        data_dir=data_dir, paths=config.paths, default_name=config.default
    )
    found = model_rows(registry, config)
    return found.rows, [*(str(p) for p in registry.problems), *found.warnings]
