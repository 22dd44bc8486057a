"""`bench/bench_gui.py` still runs end to end (a smoke test: it asserts the report's
shape, never a speed; speed is only ever read from the script's own output)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(r"^max_loop_lag_ms=\d+\.\d p99_loop_lag_ms=\d+\.\d$")


@pytest.mark.slow
def test_the_gui_bench_reports_its_measures_and_its_last_line() -> None:
    command = [sys.executable, str(ROOT / "bench" / "bench_gui.py"), "--stars", "200"]
    command += ["--seconds", "2", "--zoom", "1.0"]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    finished = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.strip().splitlines()
    for start in ("plan: 200 stars", "set_snapshot (layout, 200 star items", "events: ",
                  "frames: ", "lag probe: "):  # fmt: skip
        assert any(line.startswith(start) for line in lines), (start, lines)
    events = next(line for line in lines if line.startswith("events: "))
    assert int(events.split()[1]) > 100  # it really fed events for about 2 s
    assert LAST_LINE.match(lines[-1]), lines[-1]
