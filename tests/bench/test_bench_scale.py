"""`bench/bench_scale.py` still runs end to end with small numbers (a smoke test: it
checks the report's shape and that nothing was lost, never a speed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(r"^devices=6 stars_per_s=\d+ p99_ms=\d+ rss_mb=\d+ lost=0$")


@pytest.mark.slow
def test_the_scale_bench_runs_every_star_and_prints_its_last_line() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "bench_scale.py"),
        *("--devices", "6", "--constellations", "8", "--stars", "5", "--seconds", "90"),
    ]
    finished = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    lines = finished.stdout.strip().splitlines()
    assert lines[0].startswith("connect: 6 devices in ")
    assert any(line.startswith("stars: 40/40 succeeded") for line in lines), lines
    assert any(
        line.startswith("round trip (star.started -> star.finished): p50 ") for line in lines
    )
    assert LAST_LINE.match(lines[-1]), lines[-1]
