"""`orrery device` processes on this machine, for `orrery demo` and the tests.

`DeviceProcesses` enrols each device in the store (a fresh token), starts it as a child
process with its own data dir (the token travels in the environment, never on the command
line, where other local users could read it), logs its output to DATA_DIR/device.log, and
stops them all with SIGTERM (SIGKILL after a grace period).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memory import Store
from protocol.auth import enroll
from protocol.private import open_private, private_dir

log = logging.getLogger("orrery.device_processes")

DEVICE_TOKEN_ENV = "ORRERY_DEVICE_TOKEN"


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
        private_dir(device.data_dir)
        command = [
            sys.executable, "-m", "app.cli", "--data-dir", str(device.data_dir), "device",
            "--server", url, "--name", name, "--labels", ",".join(device.labels), *extra,
        ]  # fmt: skip
        environment = {**os.environ, DEVICE_TOKEN_ENV: self.token(name)}
        with open_private(device.log_path, "ab") as log_file:
            device.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
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
