"""The orchestrator killed mid-run: `orrery serve` SIGKILLed while a star runs on an
`orrery device`, then started again on the same data dir and port. The run is taken up
from the store: the star that had succeeded is not run again, the star that was running
is adopted back (its device finished it meanwhile and delivers the result from its
outbox), the rest runs, and the `orrery run --server` client that was following
reconnects and sees the run to its end. Every star's effect happens exactly once."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from memory import Store
from tests.e2e.processes import (
    enroll,
    free_port,
    orrery,
    start_device,
    start_serve,
    stop,
    wait_for_devices,
)
from tests.system.faults import lines

pytestmark = pytest.mark.slow


class Lines:
    """The JSON events a process prints, one per line, read by a thread as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        assert process.stdout is not None
        stdout = process.stdout

        def read() -> None:
            for line in stdout:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=read, daemon=True).start()

    def until(self, wanted: str, star: str | None = None, within: float = 60) -> dict[str, Any]:
        """The first event of type `wanted` (of `star`) from now on; AssertionError if the
        output ends or `within` seconds pass first."""
        while True:
            try:
                line = self._queue.get(timeout=within)
            except queue.Empty:
                raise AssertionError(f"no {wanted} event within {within}s") from None
            if line is None:
                raise AssertionError(f"the output ended before a {wanted} event: {self.seen}")
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            self.seen.append(event)
            if event["type"] == wanted and (star is None or event.get("star_id") == star):
                return event


def _star(star_id: str, command: str, after: str | None = None) -> dict[str, Any]:
    star: dict[str, Any] = {"id": star_id, "tool": "shell.run", "args": {"cmd": command}}
    if after is not None:
        star["after"] = [after]
    return star


def test_serve_killed_mid_run_and_restarted_takes_the_run_up_and_finishes_it_once(
    tmp_path: Path,
) -> None:
    home, shared, marker = tmp_path / "home", tmp_path / "shared.txt", tmp_path / "b.started"
    port = free_port()
    plan = {
        "name": "survives-the-orchestrator",
        "stars": [
            _star("a", f"echo a >> {shared}"),
            # b waits (bounded) for the test to let it go: the orchestrator dies first
            _star(
                "b",
                f"touch {marker}; i=0; while [ ! -e {tmp_path / 'go'} ] && [ $i -lt 600 ]; "
                f"do sleep 0.05; i=$((i+1)); done; echo b >> {shared}",
                after="a",
            ),
            _star("c", f"echo c >> {shared}", after="b"),
        ],
    }
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    serve, aip, control = start_serve(home, port, "--no-planner", "--heartbeat", "2")
    devices: list[subprocess.Popen[str]] = []
    client: subprocess.Popen[str] | None = None
    try:
        for name in ("left", "right"):
            devices.append(start_device(tmp_path / name, aip, name, enroll(home, name)))
        wait_for_devices(control, home, ["left", "right"])
        client = subprocess.Popen(
            orrery(home, "run", "--server", control, "--json", str(plan_file)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        events = Lines(client)
        events.until("star.finished", "a")
        events.until("star.started", "b")
        serve.send_signal(signal.SIGKILL)  # mid-run: no goodbye, nothing cancelled
        serve.wait(10)
        (tmp_path / "go").touch()  # b finishes on its device while no orchestrator runs
        serve, _, _ = start_serve(home, port, "--no-planner", "--heartbeat", "2")

        try:
            finished = events.until("constellation.finished", within=90)
        except AssertionError as failure:
            client.wait(30)
            assert client.stderr is not None
            raise AssertionError(f"{failure}; the client said: {client.stderr.read()}") from None
        assert client.wait(30) == 0
    finally:
        stop([client, *devices, serve])

    assert finished["status"] == "succeeded", finished
    seqs = [event["seq"] for event in events.seen]
    assert seqs == sorted(set(seqs)), seqs  # the restarted server numbers on, above
    started = [e["star_id"] for e in events.seen if e["type"] == "star.started"]
    assert started == ["a", "b", "c"]  # the client saw each start once, none again
    assert lines(shared) == ["a", "b", "c"]  # each effect once, in order
    with Store.open_path(home / "orrery.db") as store:
        (row,) = store.constellations()
        assert row.status == "succeeded"
        attempts = {sid: len(star["attempts"]) for sid, star in row.snapshot["stars"].items()}
        assert attempts == {"a": 1, "b": 1, "c": 1}  # nothing that had started ran again
