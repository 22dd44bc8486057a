"""Cycles are freed on the UI thread, never in whichever thread allocates."""

from __future__ import annotations

import gc
import threading

from pytestqt.qtbot import QtBot

from app.gui.collector import MainThreadCollector


class Cycle:
    freed_on: list[str] = []

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        Cycle.freed_on.append(threading.current_thread().name)


KEPT: list[list[int]] = []


def allocate_in_a_worker() -> None:
    def churn() -> None:
        KEPT.extend([i] for i in range(50_000))  # far past generation 0's threshold

    worker = threading.Thread(target=churn, name="worker")
    worker.start()
    worker.join(timeout=30)


def test_a_cycle_is_freed_on_the_ui_thread(qtbot: QtBot) -> None:
    gc.collect()
    collector = MainThreadCollector(every_ms=20)
    collector.start()
    try:
        assert not gc.isenabled()
        Cycle.freed_on.clear()
        Cycle()
        allocate_in_a_worker()
        assert Cycle.freed_on == []  # the worker's allocations collected nothing
        qtbot.waitUntil(lambda: Cycle.freed_on != [], timeout=5000)
        assert Cycle.freed_on == [threading.main_thread().name]
        assert collector.collections >= 1
    finally:
        collector.stop()
        KEPT.clear()
    assert gc.isenabled()
