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


def test_a_full_collection_waits_for_a_quarter_more_long_lived_objects(qtbot: QtBot) -> None:
    """As CPython's own collector does: a full pass walks every object (tens of ms with a
    large constellation shown), so it comes only once the oldest generation grew by a
    quarter since the last one."""
    gc.collect()
    long_lived = [[i] for i in range(100_000)]
    gc.collect()  # (now in the oldest generation)
    collector = MainThreadCollector(every_ms=60_000)  # checked by hand below
    full: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    collector.start()
    gc.callbacks.append(note)
    try:
        few = [[i] for i in range(1_000)]
        for _ in range(collector.thresholds[2] + 1):
            gc.collect(1)  # each one counts towards a full collection
        assert gc.get_count()[2] > collector.thresholds[2]
        collector.check()
        assert full == []  # 1,000 new long-lived objects next to 100,000 and more: not yet
        many = [[i] for i in range(len(gc.get_objects(generation=2)) // 3)]
        for _ in range(collector.thresholds[2] + 1):
            gc.collect(1)
        collector.check()
        assert full == [1]
        assert collector.full_collections == 1
    finally:
        gc.callbacks.remove(note)
        collector.stop()
    assert len(long_lived) + len(few) == 101_000
    assert many
