"""`orrery gui` and `orrery demo`: the desktop app on Qt's event loop (through qasync).

Without `--server` the app hosts the orchestrator: the data dir's runtime with this
machine as an in-process device, listening for remote devices on `--host:--port` (AIP)
and for scripts on the same port (control API), exactly as `orrery serve` would. With
`--server URL` it is a client of that server. `orrery demo` (without `--headless`) opens
the app on a fresh embedded orchestrator, starts the three demo device processes and runs
the demo plans and request in the window.

The window's layout and preferences live in DATA_DIR/gui.ini (QSettings).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from app.config import data_dir
from app.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from app.gui.collector import MainThreadCollector
from app.gui.connection import Connection, PreparationRelay, connect

log = logging.getLogger("orrery.gui")

SETTINGS_FILE = "gui.ini"


def main(options: argparse.Namespace) -> int:
    """`orrery gui`: run the app until its window closes; the exit code."""
    return run(options, demo=False)


def demo(options: argparse.Namespace) -> int:
    """`orrery demo` with a window."""
    return run(options, demo=True)


def run(options: argparse.Namespace, *, demo: bool) -> int:
    import qasync

    from app.commands.runner import exit_code_for
    from app.gui.theme import follow_system_theme

    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication([sys.argv[0] if sys.argv else "orrery"])
    app.setApplicationName("Orrery")
    app.setOrganizationName("Orrery")
    app.setQuitOnLastWindowClosed(False)  # the window's `closed` ends the app, after cleanup
    follow_system_theme(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        with loop:
            return int(loop.run_until_complete(run_app(options, demo=demo)))
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        return code
    finally:
        asyncio.set_event_loop(None)


async def run_app(options: argparse.Namespace, *, demo: bool = False) -> int:
    """The app on the running (qasync) loop, until its window closes."""
    from app.gui.session import GuiSession
    from app.gui.window import MainWindow

    home = data_dir(options.data_dir)
    home.mkdir(parents=True, exist_ok=True)
    settings = QSettings(str(home / SETTINGS_FILE), QSettings.Format.IniFormat)
    closed = asyncio.Event()
    relay = PreparationRelay()
    async with connect(options, settings, relay, demo=demo) as connection:
        session = GuiSession(connection.api)
        window = MainWindow(
            session,
            settings,
            where=connection.where,
            server_url=connection.server_url,
            data_dir=home,
            models=connection.models,
            apply_policy=connection.apply_policy,
        )
        relay.step.connect(window.show_preparation)
        window.closed.connect(closed.set)
        window.show()
        session.start()
        stop_on_signals(window)
        gc.freeze()  # what startup made lives on: full collections stop walking it
        collector = MainThreadCollector()  # Qt objects are freed on the UI thread only
        collector.start()
        demo_task = None
        if demo:
            from app.gui.demo import run_demo

            demo_task = asyncio.ensure_future(run_demo(connection, session, home, options))
        try:
            await closed.wait()
        finally:
            if demo_task is not None:
                demo_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await demo_task
            await session.stop()
            collector.stop()
    return EXIT_OK


def stop_on_signals(window: object) -> None:
    """Ctrl-C or SIGTERM closes the window (and so stops the app) cleanly."""
    loop = asyncio.get_running_loop()
    close = getattr(window, "close")  # noqa: B009  (QWidget.close)
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, close)


__all__ = ["EXIT_BAD_INPUT", "Connection", "demo", "main", "run_app"]
