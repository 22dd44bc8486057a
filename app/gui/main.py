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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QApplication

from agents.models.manager import LazyModelManager
from agents.models.progress import PrepareStep
from app.config import data_dir
from app.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from app.gui.settings_dialog import EDIT_POLICIES, POLICY_KEY, SERVER_KEY
from app.interface import OrreryApi

log = logging.getLogger("orrery.gui")

SETTINGS_FILE = "gui.ini"


@dataclass(slots=True)
class Connection:
    """What the window talks to, and how to say where that is."""

    api: OrreryApi
    where: str  # for the title bar
    server_url: str  # what a new device passes to `orrery device --server`
    device_url: str | None = None  # where demo devices dial in (embedded only)
    store: object | None = None  # the embedded runtime's store (for the demo's devices)
    models: LazyModelManager | None = None  # the embedded runtime's models
    apply_policy: Callable[[str], None] | None = None  # sets the planner's edit policy


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
    return EXIT_OK


class PreparationRelay(QObject):
    """Carries the embedded model's first-use preparation steps from the worker thread
    that joins its pieces to the window (a queued signal)."""

    step = Signal(str)

    def __call__(self, step: PrepareStep) -> None:
        if step.error:
            self.step.emit(f"preparing the model failed: {step.error}")
        elif step.finished:
            self.step.emit(f"{step.what}: done")
        elif step.total:
            self.step.emit(f"{step.what}: {100 * step.done // step.total}%")
        else:
            self.step.emit(f"{step.what}…")


@contextlib.asynccontextmanager
async def connect(
    options: argparse.Namespace,
    settings: QSettings,
    relay: PreparationRelay | None = None,
    *,
    demo: bool,
) -> AsyncIterator[Connection]:
    """The remote server of `--server` (or the one saved in the settings), else an
    embedded orchestrator (see the module docstring)."""
    server = getattr(options, "server", None) or str(settings.value(SERVER_KEY, "") or "")
    if server and not demo:
        options.server = server
        from app.commands.clients import remote

        async with remote(options) as client:
            yield Connection(client, f"server {client.url}", server)
        return
    from app.control.token import ensure_token
    from app.endpoint import Endpoint
    from app.runtime import RuntimeOptions, ThisMachine, open_runtime

    home = data_dir(options.data_dir)
    workspace = getattr(options, "workspace", None)
    policy = settings.value(POLICY_KEY)
    runtime_options = RuntimeOptions(
        home,
        this_machine=ThisMachine(workspace=Path(workspace) if workspace else None),
        accept_devices=True,
        model_progress=relay,
        edit_policy=str(policy) if policy in EDIT_POLICIES else None,
    )
    async with open_runtime(runtime_options) as parts:
        assert parts.aip is not None
        port = 0 if demo else getattr(options, "port", 8765)
        endpoint = Endpoint(
            parts.runtime,
            parts.aip,
            token=ensure_token(home),
            host=getattr(options, "host", "127.0.0.1"),
            port=port,
        )
        try:
            await endpoint.__aenter__()
        except OSError as exc:  # the port is taken (another orrery serve?): say so, go on
            log.warning("cannot listen on port %s (%s); devices use a free port instead", port,
                        exc)  # fmt: skip
            endpoint = Endpoint(parts.runtime, parts.aip, token=ensure_token(home), port=0)
            await endpoint.__aenter__()
        try:
            base = endpoint.url.removesuffix("/aip/v1")
            print(f"orrery: the app serves devices at {endpoint.url}", file=sys.stderr)
            planner = parts.runtime.planner
            yield Connection(
                parts.runtime,
                f"this machine (devices: {base})",
                base,
                device_url=endpoint.url,
                store=parts.store,
                models=parts.models,
                apply_policy=getattr(planner, "set_edit_policy", None),
            )
        finally:
            await endpoint.__aexit__(None, None, None)


def stop_on_signals(window: object) -> None:
    """Ctrl-C or SIGTERM closes the window (and so stops the app) cleanly."""
    loop = asyncio.get_running_loop()
    close = getattr(window, "close")  # noqa: B009  (QWidget.close)
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, close)


__all__ = ["EXIT_BAD_INPUT", "Connection", "demo", "main", "run_app"]
