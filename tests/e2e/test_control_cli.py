"""`orrery run --server` as scripts use it: `orrery serve` and `orrery device` as real
subprocesses on 127.0.0.1, `orrery run` as a third, each exit code covered once; and
`orrery show ID --png` drawing the recorded constellation."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.events import ApprovalNeeded
from app.client import SyncOrrery
from tests.e2e.processes import (
    enroll,
    free_port,
    orrery,
    start_device,
    start_serve,
    stop,
    wait_for_devices,
)

pytestmark = pytest.mark.slow

TIMEOUT = 120

GOOD = """
name: greet
rationale: say hello, then keep it
stars:
  - id: hello
    tool: shell.run
    args: {cmd: echo hello from the device}
  - id: keep
    after: [hello]
    tool: fs.write
    args: {path: hello.txt, content: "${hello.output.stdout}"}
"""

FAILING = """
name: doomed
stars:
  - id: boom
    tool: shell.run
    args: {cmd: exit 3}
"""

INVALID = """
name: broken
stars:
  - id: a
    tool: shell.run
    after: [nowhere]
"""

NEEDS_GPU = """
name: gpu-job
stars:
  - id: train
    on: {labels: [gpu]}
    tool: sys.info
"""


@dataclass
class Server:
    home: Path
    url: str  # the control URL
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("control-cli")
    home = root / "orchestrator"
    token = enroll(home, "box")
    serve, aip, control = start_serve(home, 0, "--no-planner")
    device = None
    try:
        device = start_device(root / "device", aip, "box", token, "--labels", "linux")
        wait_for_devices(control, home, ["box"])
        yield Server(home, control, serve)
    finally:
        stop([device, serve])


_plans = 0


def write(root: Path, text: str) -> str:
    global _plans
    _plans += 1
    path = root / f"plan-{_plans}.yaml"
    path.write_text(text)
    return str(path)


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        orrery(home, *args), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def events_of(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_a_plan_that_succeeds_exits_0_with_json_events(server: Server, tmp_path: Path) -> None:
    result = run_cli(server.home, "run", "--server", server.url, "--json", write(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    assert events[0]["type"] == "constellation.submitted"
    assert events[-1]["type"] == "constellation.finished"
    assert events[-1]["status"] == "succeeded"
    started = [e for e in events if e["type"] == "star.started"]
    assert {e["device"] for e in started} == {"box"}


def test_the_live_display_ends_with_the_summary_table(server: Server, tmp_path: Path) -> None:
    result = run_cli(server.home, "run", "--server", server.url, write(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert "greet (version 1)" in result.stdout  # the summary table's title
    assert "hello" in result.stdout
    assert "keep" in result.stdout
    assert "constellation 'greet' succeeded" in result.stderr


def test_a_failing_plan_exits_1_naming_the_star(server: Server, tmp_path: Path) -> None:
    result = run_cli(server.home, "run", "--server", server.url, "--json",
                     write(tmp_path, FAILING))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "star 'boom'" in result.stderr.splitlines()[-1]


def test_an_invalid_plan_exits_2_with_its_location(server: Server, tmp_path: Path) -> None:
    plan = write(tmp_path, INVALID)
    result = run_cli(server.home, "run", "--server", server.url, "--json", plan)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"orrery: error: {plan}:")
    assert "nowhere" in line
    assert result.stdout == ""


def test_a_wrong_token_exits_2(server: Server, tmp_path: Path) -> None:
    (tmp_path / "wrong.token").write_text("orc1_nope\n")
    result = run_cli(server.home, "run", "--server", server.url, "--token-file",
                     str(tmp_path / "wrong.token"), "--json", write(tmp_path, GOOD))  # fmt: skip
    assert result.returncode == 2
    assert "wrong control token" in result.stderr


def test_a_request_in_words_without_a_planner_exits_2(server: Server) -> None:
    result = run_cli(server.home, "run", "--server", server.url, "--json", "tidy up /tmp")
    assert result.returncode == 2
    assert "no planner" in result.stderr


def test_a_star_no_device_can_run_exits_3(server: Server, tmp_path: Path) -> None:
    result = run_cli(server.home, "run", "--server", server.url, "--json",
                     write(tmp_path, NEEDS_GPU))  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "no capable device" in result.stderr
    assert "lacks label(s) gpu" in result.stderr
    assert events_of(result.stdout)[-1]["no_capable_device"] is True


def test_a_closed_port_exits_4(server: Server, tmp_path: Path) -> None:
    result = run_cli(server.home, "run", "--server", f"ws://127.0.0.1:{free_port()}", "--json",
                     write(tmp_path, GOOD))  # fmt: skip
    assert result.returncode == 4
    assert "cannot reach the Orrery server" in result.stderr


def test_show_prints_json_and_draws_a_png(server: Server, tmp_path: Path) -> None:
    ran = run_cli(server.home, "run", "--server", server.url, "--json", write(tmp_path, GOOD))
    cid = str(events_of(ran.stdout)[0]["constellation_id"])
    shown = run_cli(server.home, "show", cid[:8], "--json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert (document["id"], document["status"]) == (cid, "succeeded")
    assert document["rationale"] == "say hello, then keep it"
    assert [s["id"] for s in document["stars"]] == ["hello", "keep"]
    picture = tmp_path / "graph.png"
    drawn = run_cli(server.home, "show", cid, "--png", str(picture))
    assert drawn.returncode == 0, drawn.stderr
    assert "rationale: say hello, then keep it" in drawn.stdout
    assert_valid_png(picture.read_bytes())
    missing = run_cli(server.home, "show", "no-such-id")
    assert missing.returncode == 2
    assert "orrery history" in missing.stderr


def assert_valid_png(data: bytes) -> None:
    """Signature, IHDR first, every chunk's CRC right, the pixels inflate to the size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks, idat = 8, [], b""
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        crc = int.from_bytes(data[at + 8 + length : at + 12 + length], "big")
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks.append(kind)
        idat += body if kind == b"IDAT" else b""
        at += 12 + length
    assert chunks[0] == b"IHDR"
    assert chunks[-1] == b"IEND"
    ihdr = data[16:29]
    width, height = int.from_bytes(ihdr[:4], "big"), int.from_bytes(ihdr[4:8], "big")
    assert width > 100
    assert height > 50
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)


GUARDED = """
name: guarded
stars:
  - id: risky
    tool: shell.run
    args: {cmd: echo approved and ran}
"""


def start_careful_fleet(
    tmp_path: Path, port: int
) -> tuple[Path, subprocess.Popen[str], str, subprocess.Popen[str]]:
    """`orrery serve` on `port` (its data dir, the process, the control URL) and a device
    `careful` whose policy wants every `shell.run` approved."""
    home = tmp_path / "orchestrator"
    token = enroll(home, "careful")
    (tmp_path / "policy.toml").write_text('[approval]\nrequired = ["shell.run"]\n')
    serve, aip, url = start_serve(home, port)
    policy = str(tmp_path / "policy.toml")
    device = start_device(tmp_path / "device", aip, "careful", token, "--policy", policy)
    return home, serve, url, device


def test_the_python_client_approves_cancels_and_survives_a_server_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    home, serve, url, device = start_careful_fleet(tmp_path, port)
    try:
        wait_for_devices(url, home, ["careful"])
        with SyncOrrery(url, data_dir=home, reconnect_within=60) as client:
            # Approve: the device asks, the client says yes, the star runs.
            run = client.submit(plan_text=GUARDED)
            seen = []
            for event in run.events(timeout=TIMEOUT):
                seen.append(event.seq)
                if isinstance(event, ApprovalNeeded):
                    client.approve(event.request, True, "looks harmless")
            assert run.wait(timeout=TIMEOUT).status == "succeeded"
            # Cancel: a second run waits on its approval; the client cancels it instead.
            waiting = client.submit(plan_text=GUARDED)
            for event in waiting.events(timeout=TIMEOUT):
                if event.type == "approval.needed":
                    assert client.cancel(waiting.id, "changed my mind") == "cancelled"
            assert waiting.wait(timeout=TIMEOUT).status == "cancelled"
            # Restart the server on the same port and data dir: the client reconnects by
            # itself and replays the first run from the store, each event once.
            serve.terminate()
            serve.wait(timeout=30)
            serve, _, _ = start_serve(home, port)
            replayed = [event.seq for event in client.run(run.id).events(timeout=TIMEOUT)]
            assert replayed == seen
            assert {entry.id for entry in client.history()} == {run.id, waiting.id}
    finally:
        stop([device, serve])


class EventLines:
    """The JSON event lines of a running `orrery run --json`, read on a thread (bounded)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_of(self, kind: str, within: float = TIMEOUT) -> dict[str, object]:
        deadline = time.monotonic() + within
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the run ended before a {kind} event"
            event = json.loads(line)
            if event["type"] == kind:
                return dict(event)


def test_approvals_approve_and_cancel_from_the_command_line(tmp_path: Path) -> None:
    home, serve, url, device = start_careful_fleet(tmp_path, free_port())
    plan = write(tmp_path, GUARDED)
    runs: list[subprocess.Popen[str]] = []

    def start_run() -> EventLines:
        run = subprocess.Popen(
            orrery(home, "run", "--server", url, "--json", plan),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        runs.append(run)
        return EventLines(run)

    try:
        wait_for_devices(url, home, ["careful"])
        # Approve: the run waits, `approvals` lists the call, `approve` lets it run.
        first = start_run()
        needed = first.next_of("approval.needed")
        listed = run_cli(home, "approvals", "--server", url, "--json")
        assert listed.returncode == 0, listed.stderr
        (pending,) = events_of(listed.stdout)
        assert (pending["request"], pending["tool"]) == (needed["request"], "shell.run")
        assert pending["constellation"] == needed["constellation_id"]
        approved = run_cli(home, "approve", str(needed["request"]), "--server", url,
                           "--reason", "looks harmless")  # fmt: skip
        assert approved.returncode == 0, approved.stderr
        assert first.next_of("approval.given")["approved"] is True
        assert first.process.wait(timeout=TIMEOUT) == 0
        # Deny: the call is refused, so its star and the run fail (exit 1).
        second = start_run()
        request = second.next_of("approval.needed")["request"]
        denied = run_cli(home, "approve", str(request), "--server", url, "--deny")
        assert denied.returncode == 0, denied.stderr
        assert second.next_of("approval.given")["approved"] is False
        assert second.process.wait(timeout=TIMEOUT) == 1
        # Cancel: a third run waits on its approval; `cancel` ends it (exit 1 for the run).
        third = start_run()
        waiting = third.next_of("approval.needed")
        cancelled = run_cli(home, "cancel", str(waiting["constellation_id"]), "--server", url)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "is cancelled" in cancelled.stderr
        assert third.process.wait(timeout=TIMEOUT) == 1
        # Unknown ids are refused with exit 2, naming the problem; a dead server is exit 4.
        unknown = run_cli(home, "approve", "no-such-request", "--server", url)
        assert unknown.returncode == 2
        assert "no-such-request" in unknown.stderr
        assert run_cli(home, "cancel", "no-such-run", "--server", url).returncode == 2
        nothing = run_cli(home, "approvals", "--server", url)
        assert (nothing.returncode, nothing.stdout) == (0, "")
        closed = run_cli(home, "approvals", "--server", f"ws://127.0.0.1:{free_port()}")
        assert closed.returncode == 4
    finally:
        stop([*runs, device, serve])


def test_history_show_and_devices_list_ask_the_server(server: Server, tmp_path: Path) -> None:
    """With --server, the query commands ask the running server (its store, its devices),
    and print what the local commands print; ids may be prefixes."""
    ran = run_cli(server.home, "run", "--server", server.url, "--json", write(tmp_path, GOOD))
    assert ran.returncode == 0, ran.stderr
    cid = events_of(ran.stdout)[0]["constellation_id"]
    assert f"orrery: constellation {cid}" in ran.stderr  # the id comes first
    elsewhere = tmp_path / "elsewhere"  # a data dir with nothing in it: the server answers
    token = ("--token-file", str(server.home / "control.token"))  # never the token itself
    listed = run_cli(elsewhere, "history", "--server", server.url, *token, "--json")
    assert listed.returncode == 0, listed.stderr
    assert cid in [json.loads(line)["id"] for line in listed.stdout.splitlines()]
    shown = run_cli(elsewhere, "show", str(cid)[:8], "--server", server.url, *token, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == cid
    text = run_cli(elsewhere, "show", str(cid), "--server", server.url, *token)
    assert "outputs" in text.stdout  # what the stars produced is shown
    devices = run_cli(elsewhere, "devices", "list", "--server", server.url, *token, "--json")
    assert devices.returncode == 0, devices.stderr
    (box,) = [json.loads(line) for line in devices.stdout.splitlines()]
    assert (box["name"], box["connected"], box["state"]) == ("box", True, "online")
    local = run_cli(elsewhere, "history", "--json")  # without --server: its own empty store
    assert (local.returncode, local.stdout) == (0, "")


def test_global_options_go_before_or_after_the_command(tmp_path: Path) -> None:
    """`--data-dir` (and `ORRERY_HOME`) work wherever a user puts them."""
    import os

    after = subprocess.run(
        [*orrery(tmp_path / "unused"), "devices", "enroll", "one", "--data-dir",
         str(tmp_path / "a")], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert after.returncode == 0, after.stderr
    before = run_cli(tmp_path / "a", "devices", "enroll", "two")
    assert before.returncode == 0, before.stderr
    env = {**os.environ, "ORRERY_HOME": str(tmp_path / "a")}
    home = subprocess.run(
        [sys.executable, "-m", "app.cli", "devices", "enroll", "three", "-v"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert home.returncode == 0, home.stderr
    listed = run_cli(tmp_path / "a", "devices", "list")
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["one", "three", "two"]
    assert not (tmp_path / "unused" / "orrery.db").exists()  # the later --data-dir won
