"""The models and settings dialog with the real embedded model: it lists the model (size,
quantisation, where it would run and why), loads the planner's model with the progress bar
busy meanwhile and the window responsive, unloads it again, and keeps the edit policy."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings

from agents.models.registry import DEFAULT_MODEL
from app.device_run import device_models
from app.gui.settings_dialog import POLICY_KEY, SettingsDialog
from tests.agents.models.embedded import default_model_entry

pytestmark = pytest.mark.slow


def prepared(tmp_path: Path) -> Path:
    """A data dir whose embedded-model cache is the one this test process joined already."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "embedded").symlink_to(default_model_entry().path.parent)
    return tmp_path


def test_the_dialog_lists_loads_and_unloads_the_model_and_keeps_the_policy(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    home = prepared(tmp_path)
    models = device_models(home)
    settings = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    chosen: list[str] = []

    async def scenario() -> None:
        dialog = SettingsDialog(settings, data_dir=home, connection="this machine",
                                models=models, apply_policy=chosen.append)  # fmt: skip
        qtbot.addWidget(dialog)
        dialog.show()
        await dialog.refresh()
        names = [dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount())]
        assert DEFAULT_MODEL in names
        row = names.index(DEFAULT_MODEL)
        assert "planner" in dialog.table.item(row, 1).text()
        assert (
            "CPU" in dialog.table.item(row, 6).text() or "GPU" in dialog.table.item(row, 6).text()
        )
        ticks: list[float] = []

        async def heartbeat() -> None:  # the loop keeps turning while the model loads
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        beating = asyncio.ensure_future(heartbeat())
        loading = asyncio.ensure_future(dialog.load_planner())
        await asyncio.sleep(0.2)
        busy_while_loading = dialog.busy.maximum() == 0
        await asyncio.wait_for(loading, 300)
        beating.cancel()
        assert busy_while_loading
        assert "loaded in" in dialog.status.text()
        assert dialog.table.item(row, 9).text() == "yes"
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert max(gaps) < 2.0, max(gaps)  # never frozen for long while it loaded
        dialog.table.selectRow(row)
        await dialog.unload_selected()
        assert dialog.table.item(row, 9).text() == ""
        dialog.policy.setCurrentText("never")
        assert chosen == ["never"]
        assert settings.value(POLICY_KEY) == "never"
        dialog.close()

    try:
        qasync_loop.run_until_complete(asyncio.wait_for(scenario(), 600))
    finally:
        qasync_loop.run_until_complete(models.close())
