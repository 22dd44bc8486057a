"""The desktop window as a person uses it, offscreen: a real embedded runtime (this machine
in process) and a real `orrery device` process over AIP on 127.0.0.1. Submit a plan and
watch it succeed, open a star's output, cancel a running star, retry a failed one, approve
a risky call, and see a killed device turn lost — every change on screen coming from the
runtime's events."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from PySide6.QtCore import Qt

from app.device_processes import DeviceProcesses
from protocol.session import ServerConfig
from tests.app.gui.window_harness import Harness, until, window_on_runtime

pytestmark = pytest.mark.slow

PLAN = """
name: note
stars:
  - id: write
    tool: fs.write
    args: {path: note.txt, content: hello from the window}
  - id: read
    after: [write]
    tool: fs.read
    args: {path: note.txt}
"""

SLOW = """
name: naps
stars:
  - id: nap
    tool: shell.run
    args: {cmd: sleep 30}
  - id: quick
    tool: fs.write
    args: {path: q.txt, content: q}
"""

MISSING = """
name: needs-a-file
stars:
  - id: load
    tool: fs.read
    args: {path: later.txt}
  - id: copy
    after: [load]
    tool: fs.write
    args: {path: copy.txt, content: "${load.output.content}"}
"""


def run(loop: Any, scenario: Any) -> None:
    loop.run_until_complete(asyncio.wait_for(scenario, 120))


def select(harness: Harness, star_id: str) -> None:
    harness.window.select_star(star_id)
    assert harness.window.inspector.star_id == star_id
    assert harness.window.view.selected_star() == star_id


def test_a_plan_typed_in_runs_and_its_output_opens(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    plan = tmp_path / "note.yaml"
    plan.write_text(PLAN)

    async def scenario() -> None:
        async with window_on_runtime(tmp_path) as harness:
            box = harness.window.request_box
            box.editor.setPlainText(str(plan))
            qtbot.keyClick(box.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
            await until(lambda: harness.star_status("read") == "succeeded",
                        harness.session.snapshot_changed)  # fmt: skip
            select(harness, "read")
            assert "hello from the window" in harness.window.inspector.result.toPlainText()
            header = harness.window.header.text()
            assert "2 succeeded" in header
            assert "critical path" in header
            assert harness.window.timeline.bars == 2
            log = "\n".join(harness.window.event_log.shown_lines())
            assert "star.finished" in log
            assert "read succeeded" in log

    run(qasync_loop, scenario())


def test_a_running_star_is_cancelled_from_the_window(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with window_on_runtime(tmp_path) as harness:
            harness.session.submit(SLOW)
            await until(lambda: harness.star_status("nap") == "running",
                        harness.session.snapshot_changed)  # fmt: skip
            select(harness, "nap")
            harness.window.cancel_star_action.trigger()
            await until(lambda: harness.star_status("nap") == "cancelled",
                        harness.session.snapshot_changed)  # fmt: skip
            await until(lambda: harness.star_status("quick") == "succeeded",
                        harness.session.snapshot_changed)  # fmt: skip
            assert any(e.type == "constellation.finished" for e in harness.events)  # type: ignore[attr-defined]

    run(qasync_loop, scenario())


def test_a_failed_star_is_retried_from_the_window(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with window_on_runtime(tmp_path) as harness:
            harness.session.submit(MISSING)
            await until(lambda: harness.star_status("load") == "failed",
                        harness.session.snapshot_changed)  # fmt: skip
            first = harness.session.current
            (tmp_path / "workspace" / "later.txt").write_text("now it is here")
            select(harness, "load")
            harness.window.retry_star_action.trigger()
            await until(lambda: harness.session.current != first, harness.session.shown)
            await until(lambda: harness.star_status("copy") == "succeeded",
                        harness.session.snapshot_changed)  # fmt: skip
            assert (tmp_path / "workspace" / "copy.txt").read_text() == "now it is here"

    run(qasync_loop, scenario())


def shell_needs_approval(tool: str, args: BaseModel) -> str | None:
    return f"run {args.model_dump().get('cmd')!r}" if tool == "shell.run" else None


def test_a_risky_call_waits_in_the_inbox_and_runs_once_approved(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    plan = "name: careful\nstars:\n  - id: risky\n    tool: shell.run\n    args: {cmd: echo ok}\n"

    async def scenario() -> None:
        device = {"needs_approval": shell_needs_approval}
        async with window_on_runtime(tmp_path, device=device) as harness:
            inbox = harness.window.approvals
            harness.session.submit(plan)
            await until(lambda: inbox.list.count() == 1, harness.session.approvals_changed)
            assert "echo ok" in inbox.list.item(0).text()
            assert any(title == "approval needed" for title, _ in harness.window.notifications)
            inbox.reason.setText("looks harmless")
            qtbot.mouseClick(inbox.approve_button, Qt.MouseButton.LeftButton)
            await until(lambda: harness.star_status("risky") == "succeeded",
                        harness.session.snapshot_changed)  # fmt: skip
            await until(lambda: inbox.list.count() == 0, harness.session.approvals_changed)
            given = [e for e in harness.events if e.type == "approval.given"]  # type: ignore[attr-defined]
            assert given[0].reason == "looks harmless"  # type: ignore[attr-defined]

    run(qasync_loop, scenario())


def test_a_killed_device_process_turns_lost_in_the_devices_panel(
    qtbot: Any, qasync_loop: Any, tmp_path: Path
) -> None:
    async def scenario() -> None:
        config = ServerConfig(heartbeat_interval=0.5)
        async with window_on_runtime(tmp_path, config=config) as harness:
            processes = DeviceProcesses(harness.served.store, tmp_path / "devices")
            processes.add("remote", ["linux"])
            device = processes.start("remote", harness.served.url)
            panel = harness.window.devices
            try:
                await until(lambda: panel.state_of("remote") == "online",
                            harness.session.devices_changed)  # fmt: skip
                assert device.process is not None
                os.kill(device.process.pid, signal.SIGKILL)
                await until(lambda: panel.state_of("remote") == "lost",
                            harness.session.devices_changed)  # fmt: skip
                rows = [panel.table.item(r, 1).text() for r in range(panel.table.rowCount())]
                assert "✕ lost" in rows
            finally:
                await asyncio.to_thread(processes.stop_all)

    run(qasync_loop, scenario())
