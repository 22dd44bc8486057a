"""Drive the real desktop window on a qasync loop against a real embedded runtime.

pytest-qt gives the QApplication (offscreen); each test runs its scenario as a coroutine
through `qasync_loop.run_until_complete`, so `asyncio` code (the runtime, the session) and
Qt widgets share one loop, as in the app. `until` waits for a condition that a Qt signal
or an event brings about, bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, SignalInstance

from agents.events import Event
from app.gui.session import GuiSession
from app.gui.window import MainWindow
from app.runtime import InProcessDevice
from memory import Store
from tests.served import Served

WAIT = 60.0


async def until(
    condition: Callable[[], bool], signal: SignalInstance | None = None, within: float = WAIT
) -> None:
    """Return once `condition()` holds: checked now and whenever `signal` fires (or, with
    no signal, on every turn of the loop), at most `within` seconds."""
    changed = asyncio.Event()
    if signal is not None:
        signal.connect(lambda *_: changed.set())
    async with asyncio.timeout(within):
        while not condition():
            if signal is None:
                await asyncio.sleep(0.02)
                continue
            changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):  # a change may come from another signal
                    await changed.wait()


class Harness:
    """A served runtime (this machine in process, AIP for device processes) and the
    window on it."""

    def __init__(self, served: Served, window: MainWindow, session: GuiSession) -> None:
        self.served = served
        self.window = window
        self.session = session
        self.events: list[Event] = []
        session.run_event.connect(self.events.append)

    def star_status(self, star_id: str) -> str | None:
        snapshot = self.session.snapshot
        if snapshot is None:
            return None
        star: dict[str, Any] = snapshot.constellation["stars"].get(star_id) or {}
        return star.get("status")


@contextlib.asynccontextmanager
async def window_on_runtime(tmp_path: Path, **served: Any) -> AsyncIterator[Harness]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        here = InProcessDevice(tmp_path / "workspace", name="here", **served.pop("device", {}))
        async with Served(store, tmp_path, extra=[here], **served) as running:
            session = GuiSession(running.runtime)
            settings = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
            window = MainWindow(
                session, settings, where="test", server_url=running.url.removesuffix("/aip/v1")
            )
            window.show()
            session.start()
            try:
                yield Harness(running, window, session)
            finally:
                window.close()
                await session.stop()
