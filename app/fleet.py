"""An orchestrator with device agents on this machine: `orrery serve --run` and the demo.

`Orchestra` is the orchestrator side of `orrery serve`: an AIP server, the WebSocket
dispatcher, the artifact store and the durable store, the control API on the same port
(/control/v1, see docs/control-api.md), and a way to run constellations on whatever
devices are connected. `DeviceProcesses` starts `orrery device` processes (each
with its own data dir, enrolled in the store first) and stops them with SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.aip_dispatcher import AipDispatcher, PendingApproval
from agents.artifact_store import ArtifactStore
from agents.constellation import Constellation
from agents.events import ApprovalGiven, ApprovalNeeded, EventStream, Listener
from agents.fleet_store import StoreKeys, StoreLedger, store_observer
from agents.orchestrator import Orchestrator, RunHandle
from app.control.messages import CONTROL_PATH
from app.control.server import ControlServer
from app.control.token import ensure_token
from app.recorder import RunRecorder
from devices.registry import DeviceInfo
from memory import Store
from protocol.auth import enroll
from protocol.session import ServerConfig
from protocol.transport import AIP_PATH, AipServer, serve_aip, server_ssl_context

log = logging.getLogger("orrery.fleet")


class DevicesMissing(Exception):
    """Fewer devices connected than a run needs, within the time allowed."""


class Orchestra:
    """The orchestrator of `orrery serve`; use as `async with Orchestra(...) as o:`."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: ServerConfig | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.store = store
        self.events = EventStream()
        self.dispatcher = AipDispatcher(
            keys=StoreKeys(store),
            ledger=StoreLedger(store),
            config=config,
            observe=store_observer(store),
            artifacts=ArtifactStore(data_dir / "artifacts"),
        )
        self.orchestrator = Orchestrator(self.dispatcher, events=self.events)
        self.recorder = RunRecorder(store, self.orchestrator.constellation)
        self.events.listen(self.recorder)  # every run is recorded, however it was submitted
        self.dispatcher.on_approval = self._approval_needed
        self.auto_decide: Callable[[PendingApproval], tuple[bool, str] | None] | None = None
        """Decides approvals as they come (e.g. `--approve-all`); None leaves them waiting
        for `approve`."""
        self.plan_request: (
            Callable[[str, Sequence[DeviceInfo]], Awaitable[Constellation]] | None
        ) = None
        """Turns a request in words into a constellation for the connected devices (the
        planner); None makes the control API refuse requests in words."""
        self.control = ControlServer(self)
        self.data_dir = data_dir
        self._host, self._port = host, port
        self._ssl = server_ssl_context(tls_cert, tls_key) if tls_cert and tls_key else None
        self._server: AipServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the orchestra first"
        scheme = "wss" if self._ssl else "ws"
        return f"{scheme}://{self._host}:{self._server.port}{AIP_PATH}"

    @property
    def control_url(self) -> str:
        """Where scripts connect: ws(s)://host:port/control/v1 (token: DATA_DIR/control.token)."""
        return self.url.removesuffix(AIP_PATH) + CONTROL_PATH

    async def __aenter__(self) -> Orchestra:
        """Listen (again, after `__aexit__`: on the same port) for devices and clients."""
        self.control.token = ensure_token(self.data_dir)
        self._server = await serve_aip(
            self.dispatcher.handle,
            self._host,
            self._port,
            ssl=self._ssl,
            extra={CONTROL_PATH: self.control.handle},
        )
        self._port = self._server.port
        await self._server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.__aexit__(None, None, None)
            self._server = None
        self.recorder.flush()

    def _approval_needed(self, pending: PendingApproval) -> None:
        request = pending.request
        self.events.publish(
            ApprovalNeeded(
                constellation_id=request.task.constellation_id,
                star_id=request.task.star_id,
                attempt=request.task.attempt,
                device=pending.device,
                request=request.request,
                tool=request.tool,
                summary=request.summary,
            )
        )
        decision = self.auto_decide(pending) if self.auto_decide is not None else None
        if decision is not None:
            self.approve(request.request, decision[0], by="orrery serve", reason=decision[1])

    def pending_approvals(self) -> list[PendingApproval]:
        return list(self.dispatcher.approvals.values())

    def approve(self, request: str, approved: bool, *, by: str = "", reason: str = "") -> None:
        """Allow (or refuse) a tool call a device waits on; `UnknownApproval` if none."""
        pending = self.dispatcher.decide(request, approved, by=by, reason=reason)
        self.events.publish(
            ApprovalGiven(
                constellation_id=pending.request.task.constellation_id,
                star_id=pending.request.task.star_id,
                request=request,
                approved=approved,
                by=by,
                reason=reason,
            )
        )

    def known_tools(self) -> frozenset[str]:
        """Tools a submitted plan may name: what every device offers, and what any
        connected device offers besides."""
        from app.fleet_cli import fleet_tools

        extra = (tool for device in self.dispatcher.devices() for tool in device.tools)
        return fleet_tools() | frozenset(extra)

    def start(self, constellation: Constellation) -> RunHandle:
        """Submit a constellation to run on the connected devices (recorded); at once."""
        return self.orchestrator.submit(constellation)

    def connected(self) -> list[str]:
        return sorted(device.name for device in self.dispatcher.devices())

    async def wait_for_devices(self, count: int, within: float) -> None:
        """Return once `count` devices are connected; `DevicesMissing` after `within` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.connected()) < count:
            if loop.time() >= deadline:
                raise DevicesMissing(
                    f"{len(self.connected())} of {count} devices connected within {within:g}s "
                    f"({', '.join(self.connected()) or 'none'}); check that they run and are "
                    "enrolled (`orrery devices list`)"
                )
            await asyncio.sleep(0.05)

    async def run(
        self, constellation: Constellation, listeners: Iterable[Listener] = ()
    ) -> Constellation:
        """Run one constellation to its end, recording it; SIGINT/SIGTERM cancel it."""
        from app.local_run import wait_cancelling_on_signals

        stops = [self.events.listen(listener) for listener in listeners]
        try:
            return await wait_cancelling_on_signals(self.start(constellation))
        finally:
            self.recorder.flush()
            for stop in stops:
                stop()


@dataclass
class DeviceProcess:
    name: str
    labels: tuple[str, ...]
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "device.log"


class DeviceProcesses:
    """`orrery device` processes on this machine, each with its own data dir."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root
        self.devices: dict[str, DeviceProcess] = {}
        self._tokens: dict[str, str] = {}

    def add(self, name: str, labels: Sequence[str] = ()) -> DeviceProcess:
        """Enrol device `name` (a fresh token) and remember how to start it."""
        token, key = enroll(name)
        self.store.enroll_device(name, salt=key.salt, key=key.key)
        self._tokens[name] = token
        device = DeviceProcess(name, tuple(labels), self.root / name)
        self.devices[name] = device
        return device

    def token(self, name: str) -> str:
        """The enrolment token `add` made for device `name` (to run it some other way)."""
        return self._tokens[name]

    def start(self, name: str, url: str, *, extra: Sequence[str] = ()) -> DeviceProcess:
        """Start (or restart) device `name`, logging to its data dir's device.log."""
        device = self.devices[name]
        device.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "app.cli", "--data-dir", str(device.data_dir), "device",
            "--server", url, "--name", name, "--token", self.token(name),
            "--labels", ",".join(device.labels), *extra,
        ]  # fmt: skip
        with device.log_path.open("ab") as log_file:
            device.process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        log.info("started device %s (pid %d)", name, device.process.pid)
        return device

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        process = self.devices[name].process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signum)
            process.wait(timeout=30)

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM every device, then SIGKILL what is still running after `timeout` s."""
        running = [
            d.process for d in self.devices.values() if d.process and d.process.poll() is None
        ]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
