"""How parallel a run was (`app.run_stats`), from a hand-made snapshot whose numbers are
easy to check: a 2-star chain and a third star beside it."""

from __future__ import annotations

import pytest

from app.run_stats import run_stats


def attempt(start: float, end: float | None, status: str = "succeeded") -> dict[str, object]:
    return {"number": 1, "device": "d", "started_at": start, "finished_at": end,
            "status": status}  # fmt: skip


SNAPSHOT = {
    "stars": {
        "a": {"status": "succeeded", "attempts": [attempt(0.0, 2.0)]},
        "b": {"status": "succeeded", "attempts": [attempt(2.0, 5.0)]},
        "c": {
            "status": "failed",
            "attempts": [attempt(0.0, 1.0, "failed"), attempt(1.0, 4.0, "failed")],
        },
        "d": {"status": "pending", "attempts": []},
    },
    "lines": [{"from": "a", "to": "b", "kind": "success"}],
}


def test_counts_work_critical_path_width_and_speedup() -> None:
    stats = run_stats(SNAPSHOT)
    assert stats.counts == {"succeeded": 2, "failed": 1, "pending": 1}
    assert stats.elapsed == pytest.approx(5.0)
    assert stats.work == pytest.approx(9.0)  # 2 + 3 + 1 + 3
    assert stats.critical_path == pytest.approx(5.0)  # a then b
    assert stats.critical_stars == ("a", "b")
    assert stats.width == 2  # at no moment did three attempts run
    assert stats.speedup == pytest.approx(9.0 / 5.0)
    assert stats.parallelism == pytest.approx(9.0 / 5.0)
    assert "critical path 5.0s (2 stars)" in stats.line()


def test_a_running_attempt_counts_up_to_now() -> None:
    running = {"stars": {"a": {"status": "running", "attempts": [attempt(10.0, None)]}}}
    assert run_stats(running, now=14.0).work == pytest.approx(4.0)
    assert run_stats({"stars": {}}).line().startswith("; elapsed 0.0s")
