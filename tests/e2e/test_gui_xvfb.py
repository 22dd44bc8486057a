"""`orrery demo` as a person starts it: the real desktop app on a real X server (Xvfb), with
its three device processes and the demo plans. The test waits for the demo's runs to be
recorded as succeeded, reads the X framebuffer and checks that the window is drawn (not a
blank screen), then closes the app with SIGTERM as a desktop session would, and expects a
clean exit. Skipped where Xvfb is not installed (`.ci/run` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from app.resources import resources_dir
from tests.e2e.processes import orrery

pytestmark = pytest.mark.slow

DEMO_PLANS = len(list((resources_dir() / "plans" / "fleet").glob("*.yaml")))


def xwd_colours(path: Path) -> int:
    """How many distinct pixel values the XWD image at `path` holds (1: a blank screen)."""
    data = path.read_bytes()
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    bits_per_pixel, bytes_per_line, ncolors = fields[11], fields[12], fields[19]
    start = header_size + ncolors * 12
    step = bits_per_pixel // 8
    seen: set[bytes] = set()
    for row in range(0, height, 4):
        line = data[start + row * bytes_per_line : start + row * bytes_per_line + width * step]
        seen.update(line[i : i + step] for i in range(0, len(line), step * 4))
        if len(seen) > 64:
            break
    return len(seen)


def finished_runs(home: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        orrery(home, "history", "--json"), capture_output=True, text=True, timeout=60, check=False
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")
def test_orrery_demo_opens_a_drawn_window_and_runs_the_plans(tmp_path: Path) -> None:
    display = f":{90 + os.getpid() % 50}"
    frames = tmp_path / "fb"
    frames.mkdir()
    xvfb = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1400x900x24", "-fbdir", str(frames), "-nolisten",
         "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    home = tmp_path / "home"
    app = None
    try:
        deadline = time.monotonic() + 20
        while not (frames / "Xvfb_screen0").exists():  # the server's framebuffer file
            assert xvfb.poll() is None, "Xvfb exited"
            assert time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.1)
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
        log = (tmp_path / "app.log").open("w")
        app = subprocess.Popen(
            [*orrery(home, "demo", "--no-requests")], env=env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 240
        while True:
            runs = [r for r in finished_runs(home) if r["status"] == "succeeded"]
            if len(runs) >= DEMO_PLANS:
                break
            assert app.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "app.log").read_text()[-3000:]
            time.sleep(1.0)
        assert xwd_colours(frames / "Xvfb_screen0") > 16, "the screen is blank"
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=60) == 0, (tmp_path / "app.log").read_text()[-3000:]
    finally:
        for process in (app, xvfb):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
