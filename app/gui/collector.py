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
        self._was_enabled = gc.isenabled()
        self._timer = QTimer(self)
        self._timer.setInterval(every_ms)
        self._timer.timeout.connect(self.check)

    def start(self) -> None:
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        if self._was_enabled:
            gc.enable()

    def check(self) -> None:
        """Collect the oldest generation whose count passed its threshold (here, on the
        UI thread)."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                gc.collect(generation)
                self.collections += 1
                return
