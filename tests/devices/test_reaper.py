"""Tool processes die with the device: a real process runs a command through
`run_process` and is SIGKILLed; the command's whole group (the shell and what it started
in the background) is gone soon after, and the watchdog with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devices.tools.reaper import Reaper

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")

DEVICE = """
import asyncio, sys
from pathlib import Path
from devices.tools.process import run_process
folder = Path(sys.argv[1])
command = (
    "sleep 60 & echo $! > grandchild.tmp; mv grandchild.tmp grandchild; echo $$ > leader; wait"
)
async def main():
    await run_process(["sh", "-c", command], cwd=folder, progress=lambda *_: None)
asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _until(condition: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(condition())  # type: ignore[operator]


def test_a_killed_device_takes_the_whole_group_with_it(tmp_path: Path) -> None:
    device = subprocess.Popen(
        [sys.executable, "-c", DEVICE, str(tmp_path)], cwd=Path(__file__).parents[2]
    )
    try:
        assert _until(
            lambda: (tmp_path / "grandchild").exists() and (tmp_path / "leader").exists(), 30
        )
        leader = int((tmp_path / "leader").read_text())
        grandchild = int((tmp_path / "grandchild").read_text())
        assert not _gone(leader)
        assert not _gone(grandchild)
    finally:
        device.send_signal(signal.SIGKILL)
        device.wait(10)
    assert _until(lambda: _gone(leader), 10), "the shell outlived its device"
    assert _until(lambda: _gone(grandchild), 10), "the shell's background child outlived the device"


def test_closing_the_reaper_kills_what_it_watches_and_released_groups_are_left(
    tmp_path: Path,
) -> None:
    watched = subprocess.Popen(["sleep", "60"], start_new_session=True)
    released = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaper = Reaper()
    try:
        reaper.watch(watched.pid)
        reaper.watch(released.pid)
        reaper.release(released.pid)
        assert reaper.groups == {watched.pid}
        watchdog = reaper.watchdog_pid
        assert watchdog is not None
        reaper.close()  # as if the device died: the pipe reaches its end
        assert watched.wait(10) == -signal.SIGKILL
        assert released.poll() is None
        assert _until(lambda: _gone(watchdog), 10)
    finally:
        for process in (watched, released):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
