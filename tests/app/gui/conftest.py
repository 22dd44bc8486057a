"""Qt tests run without a display: the offscreen platform unless one was chosen."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def free_qt_objects_on_this_thread(qapp: Any) -> Iterator[None]:
    """After each test, what it left in reference cycles is freed here, on the UI thread.

    Left to Python's collector, a cycle holding a Qt object (a window, a session and its
    timers) could be freed in a later test's worker thread, leaving its timers registered
    with this thread: the next `processEvents` then crashes (app/gui/collector.py)."""
    yield
    from PySide6.QtCore import QCoreApplication, QEvent

    for widget in qapp.topLevelWidgets():
        widget.close()
    gc.collect()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qapp.processEvents()


@pytest.fixture
def qasync_loop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    """A qasync loop on pytest-qt's QApplication, set as the current loop for the test
    (run a scenario with `qasync_loop.run_until_complete(...)`, as the app runs its own)."""
    import qasync

    qapp.setQuitOnLastWindowClosed(False)  # the scenario ends the loop, not a closed window
    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()  # joins the loop's worker threads (asyncio.to_thread's)
        asyncio.set_event_loop(None)
