"""A request in words in the desktop window is shown before it runs: Ctrl+Enter proposes
it, the plan is drawn (marked proposed) and listed by device, tool and the command or
path, and nothing runs until Start; Escape or Discard leaves nothing running; the setting
turned off runs a request at once. The real window offscreen on a real embedded runtime
(this machine in process, real tools), the app's planner over a scripted model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.gui.settings_dialog import PREVIEW_KEY, SettingsDialog
from tests.app.gui.window_harness import Harness, until, window_on_runtime
from tests.app.scripted_planner import NOTE_PLAN, NOTE_REQUEST, scripted_planner

pytestmark = pytest.mark.slow


def run(loop: Any, scenario: Any) -> None:
    loop.run_until_complete(asyncio.wait_for(scenario, 120))


def ask(qtbot: Any, harness: Harness, text: str) -> None:
    """Type `text` into the request box and press Ctrl+Enter, as a person does."""
    box = harness.window.request_box
    box.editor.setPlainText(text)
    qtbot.keyClick(box.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


async def proposed(harness: Harness) -> None:
    preview = harness.window.preview
    await until(lambda: preview.isVisible() and preview.proposal is not None,
                harness.session.proposed)  # fmt: skip


def nothing_runs(harness: Harness, note: Path) -> None:
    assert harness.served.runtime.orchestrator.constellations() == []
    assert harness.served.store.constellations(limit=5) == []
    assert not note.exists()


def test_a_request_is_shown_first_and_runs_only_when_started(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    note = tmp_path / "workspace" / "note.txt"

    async def scenario() -> None:
        planner = scripted_planner(NOTE_PLAN, NOTE_PLAN)
        async with window_on_runtime(tmp_path, planner=planner) as harness:
            window, preview = harness.window, harness.window.preview
            ask(qtbot, harness, NOTE_REQUEST)
            await proposed(harness)
            assert preview.rows() == [
                ("s1", "here", "fs.write", "note.txt", ""),
                ("s2", "here", "fs.read", "note.txt", "s1"),
            ]
            assert "write the note, then read it back" in preview.rationale.text()
            assert "proposed, not started" in window.header.text()
            assert set(window.view.constellation_scene.star_items) == {"s1", "s2"}
            assert window.view.star_state("s1") is not None
            assert window.start_proposal_action.isEnabled()
            assert not window.cancel_run_action.isEnabled()
            assert preview.start_button.hasFocus()
            nothing_runs(harness, note)

            qtbot.keyClick(preview.start_button, Qt.Key.Key_Escape)  # discard
            await until(lambda: not preview.isVisible(), harness.session.proposal_closed)
            await until(lambda: len(harness.served.runtime.proposals) == 0)
            assert not window.start_proposal_action.isEnabled()
            nothing_runs(harness, note)

            ask(qtbot, harness, NOTE_REQUEST)
            await proposed(harness)
            cid = preview.proposal.constellation if preview.proposal else None
            qtbot.mouseClick(preview.start_button, Qt.MouseButton.LeftButton)
            await until(lambda: harness.star_status("s2") == "succeeded",
                        harness.session.snapshot_changed)  # fmt: skip
            assert not preview.isVisible()
            assert harness.session.current == cid  # the run is the plan that was shown
            assert note.read_text() == "hello"
            (row,) = harness.served.store.constellations(limit=5)
            assert row.id == cid

    run(qasync_loop, scenario())


def test_with_the_preview_turned_off_in_the_settings_a_request_runs_at_once(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with window_on_runtime(tmp_path, planner=scripted_planner(NOTE_PLAN)) as harness:
            dialog = SettingsDialog(harness.window.settings, data_dir=tmp_path,
                                    connection="test", models=None, apply_policy=None)  # fmt: skip
            qtbot.addWidget(dialog)
            assert dialog.preview.isChecked()  # on unless a person turns it off
            dialog.preview.setChecked(False)
            assert harness.window.settings.value(PREVIEW_KEY, type=bool) is False
            ask(qtbot, harness, NOTE_REQUEST)
            await until(lambda: harness.star_status("s2") == "succeeded",
                        harness.session.snapshot_changed)  # fmt: skip
            assert not harness.window.preview.isVisible()
            assert len(harness.served.runtime.proposals) == 0

    run(qasync_loop, scenario())


def test_a_newer_proposal_replaces_the_one_waiting_and_discard_shows_the_run_before(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    plan = tmp_path / "first.yaml"
    plan.write_text("name: first\nstars:\n  - id: w\n    tool: fs.write\n"
                    "    args: {path: first.txt, content: one}\n")  # fmt: skip

    async def scenario() -> None:
        planner = scripted_planner(NOTE_PLAN, NOTE_PLAN)
        async with window_on_runtime(tmp_path, planner=planner) as harness:
            session, preview = harness.session, harness.window.preview
            ask(qtbot, harness, str(plan))  # a plan file: it runs as written
            await until(lambda: harness.star_status("w") == "succeeded",
                        session.snapshot_changed)  # fmt: skip
            first_run = session.current
            ask(qtbot, harness, NOTE_REQUEST)
            await proposed(harness)
            older = preview.proposal
            assert session.current is None  # the run shown before is no longer followed
            ask(qtbot, harness, NOTE_REQUEST)
            await until(lambda: preview.proposal is not older, session.proposed)
            proposals = harness.served.runtime.proposals
            assert len(proposals) == 1  # the older one was discarded on the runtime
            qtbot.mouseClick(preview.discard_button, Qt.MouseButton.LeftButton)
            await until(lambda: session.current == first_run, session.shown)
            assert "first" in harness.window.header.text()
            assert len(proposals) == 0
            assert [row.name for row in harness.served.store.constellations(limit=5)] == ["first"]

    run(qasync_loop, scenario())
