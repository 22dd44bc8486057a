"""What the window talks to: a remote `orrery serve` (`--server`, or the one saved in the
settings) or an orchestrator embedded in the app (see app.gui.main), and how the embedded
model's first-use preparation reaches the window."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal

from agents.models.manager import LazyModelManager
from agents.models.progress import PrepareStep
from app.config import data_dir
from app.gui.settings_dialog import EDIT_POLICIES, POLICY_KEY, SERVER_KEY
from app.interface import OrreryApi

log = logging.getLogger("orrery.gui")


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
