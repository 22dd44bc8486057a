"""`bench/bench_protocol.py` still runs end to end (a smoke test: it asserts the report's
shape, never a speed; speed is only ever read from the script's own output)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(r"^roundtrip_ratio=\d+\.\d\d tasks_per_s=\d+$")


@pytest.mark.slow
def test_the_protocol_bench_reports_every_case_and_its_last_line() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "bench_protocol.py"),
        *("--n", "40", "--warmup", "5", "--rounds", "2"),
        *("--devices", "3", "--tasks", "60", "--seconds", "5"),
    ]
    finished = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.strip().splitlines()
    for case in (
        *("(a) ", "(a256) ", "(a0) ", "(a3) ", "(b) AIP", "(b0) ", "(b) against (a0)"),
        "(c) dispatch: 3 devices",
    ):
        assert any(line.startswith(case) for line in lines), (case, lines)
    assert "60 tasks" in finished.stdout  # every task of the budget was acked
    assert LAST_LINE.match(lines[-1]), lines[-1]
