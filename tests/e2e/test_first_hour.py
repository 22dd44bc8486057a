"""A newcomer's first hour (issue 21): what a user sees on the terminal, with `orrery run`,
`show`, `serve`, `device` and the client commands as real subprocesses on 127.0.0.1.

Each test follows one of the issue's points as a user met it: the run's id and what the
stars produced (point 3, and the trailing newline of point 9), what serve and device say
when a device joins and leaves on purpose (points 6 and 7), the approve hint that works as
printed and the approvals list (points 5 and 7), client-side TLS on every client command
(point 4), the token file named when the server refuses it (point 5), and the line while
a server plans (point 6)."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.client import SyncOrrery
from app.device_processes import DEVICE_TOKEN_ENV
from app.errors import AuthRefused
from app.exit_codes import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNREACHABLE
from tests.e2e.processes import enroll, free_port, orrery, stop

pytestmark = pytest.mark.slow

TIMEOUT = 120.0

COUNT = """
name: count
stars:
  - id: count
    tool: shell.run
    args: {cmd: "printf '4\\n'"}
  - id: say
    after: [count]
    tool: shell.run
    args: {cmd: "echo There are ${count.output.stdout} files here."}
  - id: disk
    tool: sys.info
"""

GUARDED = """
name: guarded
stars:
  - id: risky
    tool: shell.run
    args: {cmd: echo approved and ran}
"""


def run_cli(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        orrery(home, *args),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


class Lines:
    """The lines a running process writes on one stream, read on a thread; `wait_for`
    returns the first (not yet taken) line that matches, within a bound."""

    def __init__(self, stream: object) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, pattern: str, within: float = TIMEOUT) -> str:
        wanted = re.compile(pattern)
        deadline = time.monotonic() + within
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {within}s; "
                                     f"saw {self.seen}") from None  # fmt: skip
            if line is None:
                raise AssertionError(f"the stream ended before {pattern!r}; saw {self.seen}")
            self.seen.append(line)
            if wanted.search(line):
                return line


# Point 3 (and 9): the id first, the outputs at the end, `show` and `show --output`.


def test_run_prints_its_id_first_and_what_the_stars_produced(tmp_path: Path) -> None:
    plan = tmp_path / "count.yaml"
    plan.write_text(COUNT)
    ran = run_cli(tmp_path / "home", "run", str(plan))
    assert ran.returncode == EXIT_OK, ran.stderr
    first = ran.stdout.splitlines()[0]
    found = re.fullmatch(r"count \(([0-9a-f]{12})\): 3 stars, this machine", first.strip())
    assert found, first
    cid = found.group(1)
    assert f"`orrery show {cid}`" in ran.stderr  # the last line says where to look closer
    outputs = ran.stdout[ran.stdout.index("outputs") :]
    assert "There are 4 files here." in outputs  # one trailing newline dropped (point 9)
    assert "disk_free_mb" in outputs  # the free disk space is shown, not only in --json

    shown = run_cli(tmp_path / "home", "show", cid)
    assert shown.returncode == EXIT_OK, shown.stderr
    assert "There are 4 files here." in shown.stdout[shown.stdout.index("outputs") :]
    whole = run_cli(tmp_path / "home", "show", cid[:6], "--output", "disk")
    assert whole.returncode == EXIT_OK, whole.stderr
    assert json.loads(whole.stdout)["disk_free_mb"] >= 0  # the whole output, as JSON
    missing = run_cli(tmp_path / "home", "show", cid, "--output", "nope")
    assert missing.returncode == EXIT_BAD_INPUT
    assert "no star 'nope'" in missing.stderr
    assert "(stars: count, say, disk)" in missing.stderr  # what there is instead


# Points 5, 6 and 7 on one fleet: serve and a device that wants shell.run approved.


def test_a_device_joins_asks_and_leaves_and_every_side_says_so(tmp_path: Path) -> None:
    home = tmp_path / "orchestrator"
    token = enroll(home, "careful")
    (tmp_path / "policy.toml").write_text('[approval]\nrequired = ["shell.run"]\n')
    (tmp_path / "guarded.yaml").write_text(GUARDED)
    serve = subprocess.Popen(
        orrery(home, "serve", "--port", "0", "--no-planner"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes: list[subprocess.Popen[str]] = [serve]
    try:
        served = Lines(serve.stdout)
        said = Lines(serve.stderr)
        aip = served.wait_for("serving AIP at ").split(" at ")[1]
        url = served.wait_for("control API at ").split(" at ")[1].split()[0]
        device = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "device", "--server", aip, "--name", "careful",
             "--policy", str(tmp_path / "policy.toml"),
             "--data-dir", str(tmp_path / "device")],  # after the command (point 2)
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, DEVICE_TOKEN_ENV: token},
        )  # fmt: skip
        processes.append(device)
        device_said = Lines(device.stderr)
        # Point 6: both sides say that the device connected.
        device_said.wait_for(rf"connected to {re.escape(aip)} as careful \(\d+ tools\)")
        joined = said.wait_for(r"orrery: device careful joined \(")
        assert "tools" in joined

        # Point 5: the approve hint of `run --server` names the data dir and works as printed.
        run = subprocess.Popen(
            orrery(home, "run", "--server", url, str(tmp_path / "guarded.yaml")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "400"},
        )
        processes.append(run)
        shown = Lines(run.stdout)
        header = shown.wait_for(r"^guarded \([0-9a-f]{12}\)")
        cid = header.split("(")[1].split(")")[0]
        asked = shown.wait_for(r"approve\?")
        hint = re.search(r"answer with `(orrery approve [^`]+)`", asked)
        assert hint, asked
        words = shlex.split(hint.group(1))
        assert words[2:] == [words[2], "--server", url, "--data-dir", str(home)]
        request = words[2]

        # Point 7: `approvals` names the tool once.
        listed = run_cli(home, "approvals", "--server", url)
        assert listed.returncode == EXIT_OK, listed.stderr
        (line,) = listed.stdout.splitlines()
        assert line.startswith(f"{request}  {cid}/risky#1  on careful  ")
        assert line.count("shell.run") == 1, line

        answered = subprocess.run(
            [sys.executable, "-m", "app.cli", *words[1:]],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip  # the hint, word for word
        assert answered.returncode == EXIT_OK, answered.stderr
        assert run.wait(timeout=TIMEOUT) == EXIT_OK
        shown.wait_for("approved")

        # Point 7: the approval events carry the orchestrator's time, not 0.0.
        with SyncOrrery(url, data_dir=home) as client:
            events = list(client.run(cid).events(timeout=TIMEOUT))
        stamps = {e.type: e.ts for e in events if e.type.startswith("approval.")}
        assert set(stamps) == {"approval.needed", "approval.given"}
        submitted = next(e.ts for e in events if e.type == "constellation.submitted")
        assert all(ts >= submitted > 0 for ts in stamps.values()), stamps

        # Points 6 and 7: stopped on purpose, it says goodbye: `left`, offline, not lost.
        device.send_signal(signal.SIGTERM)
        assert device.wait(timeout=60) == 0
        left = said.wait_for(r"orrery: device careful (left|was lost)")
        assert "left" in left
        device_said.wait_for(r"device careful: stopped")
        devices = run_cli(home, "devices", "list", "--server", url, "--json")
        (entry,) = [json.loads(line) for line in devices.stdout.splitlines()]
        assert (entry["name"], entry["connected"], entry["state"]) == ("careful", False, "offline")
        assert not any("lost" in line for line in said.seen)
    finally:
        stop(processes)


# Point 5: a refused token is named by where it came from.


def test_a_refused_token_names_the_file_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "orchestrator"
    serve = subprocess.Popen(
        orrery(home, "serve", "--port", "0", "--no-planner"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        served = Lines(serve.stdout)
        served.wait_for("serving AIP at ")
        url = served.wait_for("control API at ").split(" at ")[1].split()[0]
        other = tmp_path / "other"  # another data dir, with a token of its own
        assert run_cli(other, "devices", "enroll", "x").returncode == EXIT_OK
        (other / "control.token").write_text("orc1_someone-elses\n")
        os.chmod(other / "control.token", 0o600)
        # The Python client as documented, `SyncOrrery("ws://...")`: it reads the default
        # data dir's token ($ORRERY_HOME here), and says so when the server refuses it.
        monkeypatch.setenv("ORRERY_HOME", str(other))
        monkeypatch.delenv("ORRERY_CONTROL_TOKEN", raising=False)
        with pytest.raises(AuthRefused) as refused:
            SyncOrrery(url)
        assert str(other / "control.token") in str(refused.value)
        assert "wrong control token" in str(refused.value)
        # The command line, with the data dir's token and with --token-file.
        by_dir = run_cli(other, "history", "--server", url)
        assert by_dir.returncode == EXIT_BAD_INPUT
        assert str(other / "control.token") in by_dir.stderr
        (tmp_path / "wrong.token").write_text("orc1_nope\n")
        by_file = run_cli(other, "history", "--server", url,
                          "--token-file", str(tmp_path / "wrong.token"))  # fmt: skip
        assert by_file.returncode == EXIT_BAD_INPUT
        assert str(tmp_path / "wrong.token") in by_file.stderr
        # Point 6: a request in words says that the server plans it, before it answers.
        words = run_cli(home, "run", "--server", url, "tidy up /tmp")
        assert words.returncode == EXIT_BAD_INPUT
        lines = words.stderr.splitlines()
        assert lines[0] == "orrery: planning with the server's model: tidy up /tmp"
        assert "no planner" in lines[-1]
    finally:
        stop([serve])


# Point 4: every client command trusts a self-signed server with --tls-ca.


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    """`orrery serve` over wss:// with a self-signed certificate for 127.0.0.1: its data
    dir, its control URL, the certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    home = tmp_path / "orchestrator"
    serve = subprocess.Popen(
        orrery(home, "serve", "--port", str(free_port()), "--no-planner",
               "--tls-cert", str(cert), "--tls-key", str(key)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        served = Lines(serve.stdout)
        served.wait_for("serving AIP at wss://")
        url = served.wait_for("control API at wss://").split(" at ")[1].split()[0]
        yield home, url, cert
    finally:
        stop([serve])


CLIENT_COMMANDS: dict[str, tuple[tuple[str, ...], int, str]] = {
    # command line, exit code, what stderr or stdout says (the server answered)
    "approvals": (("approvals",), EXIT_OK, "no tool call waits for approval"),
    "approve": (("approve", "r-nosuchrequest"), EXIT_BAD_INPUT, "r-nosuchrequest"),
    "cancel": (("cancel", "nosuchrun"), EXIT_BAD_INPUT, "nosuchrun"),
    "retry": (("retry", "nosuchrun"), EXIT_BAD_INPUT, "nosuchrun"),
    "history": (("history",), EXIT_OK, ""),
    "show": (("show", "nosuchrun"), EXIT_BAD_INPUT, "nosuchrun"),
    "devices list": (("devices", "list"), EXIT_OK, ""),
}


def test_every_client_command_trusts_the_server_with_tls_ca(
    tls_server: tuple[Path, str, Path],
) -> None:
    home, url, cert = tls_server
    for name, (words, code, says) in CLIENT_COMMANDS.items():
        trusted = run_cli(home, *words, "--server", url, "--tls-ca", str(cert))
        assert trusted.returncode == code, (name, trusted.stderr)
        assert says in trusted.stderr + trusted.stdout, (name, trusted.stderr)
    untrusted = run_cli(home, "approvals", "--server", url)
    assert untrusted.returncode == EXIT_UNREACHABLE
    assert "--tls-ca" in untrusted.stderr  # the way out is named
    by_env = run_cli(home, "approvals", "--server", url, env={"SSL_CERT_FILE": str(cert)})
    assert by_env.returncode == EXIT_OK, by_env.stderr
