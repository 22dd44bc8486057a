"""`orrery serve` and `orrery device` as real subprocesses on 127.0.0.1, for the e2e tests
that drive them from the outside (the command line, the control API client).

No secret goes on a command line here (other local users read /proc/PID/cmdline): a
device gets its token in $ORRERY_DEVICE_TOKEN, a client the control token from the
server's data dir or a `--token-file`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from agents.events import DeviceJoined, DeviceLeft
from app.client import Orrery
from app.device_processes import DEVICE_TOKEN_ENV, DeviceProcesses
from memory import Store


def orrery(home: Path, *args: str) -> list[str]:
    """The command line of `orrery --data-dir HOME ARGS...` in this interpreter."""
    return [sys.executable, "-m", "app.cli", "--data-dir", str(home), *args]


def enroll(home: Path, name: str) -> str:
    """Enrol device `name` with the orchestrator whose data dir is `home`; its token."""
    return subprocess.run(
        orrery(home, "devices", "enroll", name), capture_output=True, text=True, check=True
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_serve(home: Path, port: int = 0, *options: str) -> tuple[subprocess.Popen[str], str, str]:
    """`orrery serve --port PORT OPTIONS...`: the process, its AIP URL, its control URL."""
    serve = subprocess.Popen(
        orrery(home, "serve", "--port", str(port), *options),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert serve.stdout is not None
    aip = serve.stdout.readline()
    assert "serving AIP at ws://" in aip, f"orrery serve did not start: {aip!r}"
    control = serve.stdout.readline()
    assert "control API at ws://" in control, f"orrery serve did not start: {control!r}"
    return serve, aip.split(" at ")[1].strip(), control.split(" at ")[1].split()[0]


def start_device(
    data_dir: Path, aip: str, name: str, token: str, *options: str
) -> subprocess.Popen[str]:
    """`orrery device` named `name`, connecting to `aip`, with its own data dir; its
    token travels in $ORRERY_DEVICE_TOKEN, never on the command line."""
    return subprocess.Popen(
        orrery(data_dir, "device", "--server", aip, "--name", name, *options),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, DEVICE_TOKEN_ENV: token},
    )


def wait_for_devices(url: str, home: Path, names: Iterable[str], within: float = 60) -> None:
    """Return once every device in `names` is connected to the server at control `url`,
    following the fleet stream's `device.*` events from the server's start (no polling)."""
    asyncio.run(_wait_for_devices(url, home, set(names), within))


async def _wait_for_devices(url: str, home: Path, wanted: set[str], within: float) -> None:
    connected: set[str] = set()
    async with Orrery(url, data_dir=home) as client:
        changes = client.events(after_seq=0, types={"device.joined", "device.left"})
        try:
            async with asyncio.timeout(within):
                async for event in changes:  # the replay first: devices that joined already
                    if isinstance(event, DeviceJoined):
                        connected.add(event.device)
                    elif isinstance(event, DeviceLeft):
                        connected.discard(event.device)
                    if wanted <= connected:
                        return
        except TimeoutError:
            raise AssertionError(
                f"devices {sorted(wanted - connected)} not connected within {within}s"
            ) from None
        finally:
            await changes.aclose()


def stop(processes: Iterable[subprocess.Popen[str] | None]) -> None:
    """Terminate whichever of `processes` still run, and wait for them."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


@contextlib.contextmanager
def served_fleet(
    root: Path,
    names: Iterable[str] = ("laptop", "nas"),
    *device_options: str,
    prepare: Callable[[Path], None] | None = None,
) -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    """`orrery serve` (data dir `root/orchestrator`, its planner on) and one `orrery
    device` per name (data dir `root/NAME`, `device_options` on each command line; call
    `prepare(data_dir)` first to put a policy or files there), all connected: the
    server's data dir, its control URL and its process. Stops them all on exit."""
    home = root / "orchestrator"
    processes: list[subprocess.Popen[str]] = []
    try:
        tokens = {name: enroll(home, name) for name in names}
        serve, aip, control = start_serve(home)
        processes.append(serve)
        for name, token in tokens.items():
            if prepare is not None:
                prepare(root / name)
            processes.append(start_device(root / name, aip, name, token, *device_options))
        wait_for_devices(control, home, tokens)
        yield home, control, serve
    finally:
        stop(reversed(processes))


@contextlib.contextmanager
def device_processes(store: Store, root: Path) -> Iterator[DeviceProcesses]:
    """`DeviceProcesses` enrolled in `store`, data dirs under `root`; on exit every device
    is stopped and the end of each one's log printed (pytest shows it when a test fails)."""
    processes = DeviceProcesses(store, root)
    try:
        yield processes
    finally:
        processes.stop_all(timeout=10)
        for device in processes.devices.values():
            if device.log_path.exists():
                print(f"--- {device.name} ---\n{device.log_path.read_text()[-3000:]}")
