"""`bench/bench_memory.py` still runs end to end on small sizes (a smoke test: it asserts
the report's shape, never a speed; speed is only ever read from the script's own output)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(r"^append_per_s=\d+ recall_p95_ms_1000=\d+\.\d$")


@pytest.mark.slow
def test_the_memory_bench_reports_append_and_recall_and_its_last_line() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "bench_memory.py"),
        *("--constellations", "5", "--sizes", "300,1000", "--embed", "300", "--queries", "20"),
    ]
    finished = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.strip().splitlines()
    assert lines[0].startswith("append: ")
    assert any(line.startswith("recall at 300 requests (300 embedded, 0 mixed") for line in lines)
    assert any(
        line.startswith("recall at 1,000 requests (300 embedded, 700 mixed") for line in lines
    )
    assert LAST_LINE.match(lines[-1]), lines[-1]
