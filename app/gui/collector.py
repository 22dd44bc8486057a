"""Python's cyclic garbage collector, run on the UI thread only.

Qt objects must be destroyed in the thread that owns them. Python's collector runs in
whichever thread happens to allocate when a generation fills up -- in the app that can be
a worker thread (a model load, a plan parsed off the loop, `asyncio.to_thread`). A Qt
object caught in a reference cycle (a widget whose signal is connected to a lambda that
holds it) and freed there leaves its timers registered with the UI thread, and the next
timer event reaches freed memory: a crash, seen in the test suite under load.

`MainThreadCollector` turns automatic collection off and collects from a timer on the UI
thread instead, whenever the counts pass the thresholds the automatic collector would use
(the recipe pyqtgraph and others use for the same problem). `stop()` turns automatic
collection back on.

A full collection walks every object not frozen, with the loop stopped: 7-10 ms with a
1,000-star constellation shown and its events in the process, more as a session's heap
grows. Like CPython's own collector, it runs only once the objects that came to the
oldest generation since the last one are a quarter of those it had then; until then the
younger generations are collected as usual (without that rule a full pass came every
hundred young ones, whatever the heap).
"""

from __future__ import annotations

import gc
import logging

from PySide6.QtCore import QObject, QTimer

log = logging.getLogger("orrery.gui.collector")

CHECK_EVERY_MS = 200


class MainThreadCollector(QObject):
    def __init__(self, parent: QObject | None = None, *, every_ms: int = CHECK_EVERY_MS) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self.collections = 0
        self.full_collections = 0
        self._long_lived = 0
        """Objects in the oldest generation after the last full collection."""
        self._look_again = 0
        """The oldest generation's count at which a full collection is considered again."""
        self._was_enabled = gc.isenabled()
        self._timer = QTimer(self)
        self._timer.setInterval(every_ms)
        self._timer.timeout.connect(self.check)

    def start(self) -> None:
        gc.disable()
        self._long_lived = len(gc.get_objects(generation=2))
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        if self._was_enabled:
            gc.enable()

    def check(self) -> None:
        """Collect the oldest generation whose count passed its threshold (here, on the
        UI thread); the oldest only when a quarter more objects live there than after
        the last full collection."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] <= self.thresholds[generation]:
                continue
            if generation == 2 and not self._full_pass_due(counts[2]):
                continue
            gc.collect(generation)
            self.collections += 1
            if generation == 2:
                self.full_collections += 1
                self._long_lived = len(gc.get_objects(generation=2))
                self._look_again = 0
            return

    def _full_pass_due(self, count: int) -> bool:
        if count < self._look_again:
            return False
        pending = len(gc.get_objects(generation=2)) - self._long_lived
        if pending > self._long_lived / 4:
            return True
        self._look_again = count + self.thresholds[2]  # (counting them walks the list)
        log.debug(
            "full collection put off: %d long-lived objects, %d new", self._long_lived, pending
        )
        return False
