"""The command blocks of README.md and docs/*.md, and a shell session that runs them.

A *command block* is a fenced block in `sh`, `bash`, `shell` or `console`, or an
unlabelled one whose lines start with `$ ` (a transcript: the commands after `$ `, then
the output they print). Each is either run by `test_command_blocks.py`, as written, or
marked illustrative in the doc by a comment on the line just above its fence:

    <!-- illustrative: why this block is not run (and what test covers it instead) -->

A session runs the blocks of one section of a doc (under one heading) in their order, in
a temporary directory that stands in for the reader's: `HOME` and `ORRERY_HOME` point
into it, `orrery` is on `PATH`, and `resources/` and `.venv/` link to the checkout.
A command must exit 0, unless its comment says otherwise (`# ... (exit 1)`); `orrery run`
of a request in words may exit 1 too (its plan's quality is bench/eval_planner.py's).
What the reader would fill in is filled in from what earlier commands printed or from
the session, and nothing else:

| as written | becomes |
| --- | --- |
| `0.0.0.0`, `HOST`, `ORCHESTRATOR`, `orchestrator.lan` (in a URL) | `127.0.0.1` |
| `8765` | a free port of the session |
| `TOKEN`, `orr1_...` | the token the last `orrery devices enroll` printed |
| `ID` | the last constellation id printed |
| `r-` and 12 hex digits | the last request id printed |
| `subjectAltName=DNS:orchestrator.lan` | the same, plus `IP:127.0.0.1` |

A command ending in `&`, and `orrery serve` (without `--run`) or `orrery device`, runs in
the background until the session ends; the session waits (bounded) for the line that says
it is ready. An `orrery device` gets a data dir of its own (it stands for another
machine) unless the command names one.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_LANGUAGES = {"sh", "bash", "shell", "console"}
MARKER = re.compile(r"^<!--\s*illustrative:\s*(?P<why>.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<info>\S*)\s*$")

CONSTELLATION_ID = re.compile(r"(?<![\w-])[0-9a-f]{12}\b")
REQUEST_ID = re.compile(r"\br-[0-9a-f]{12}\b")
DEVICE_TOKEN = re.compile(r"\borr1_[A-Za-z0-9_-]{20,}")
READY = {
    "serve": re.compile(r"control API at"),
    "device": re.compile(r"connected to \S+ as"),
}
READY_WITHIN_S = 180.0  # a planner model may be prepared first on a loaded machine
COMMAND_WITHIN_S = 600.0
EXIT_SAID = re.compile(r"#.*\(exit (?P<code>\d+)\)")


@dataclass(frozen=True, slots=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    text: str
    illustrative: str | None  # why, when the doc marks it so
    section: str = ""  # the heading it is under: each section is a reader's session

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def is_command_block(self) -> bool:
        if self.info in COMMAND_LANGUAGES:
            return True
        return not self.info and any(line.startswith("$ ") for line in self.text.splitlines())

    def commands(self) -> list[str]:
        """The block's commands, one per logical line (continuations joined, comments
        and blank lines left out; in a transcript only the `$ ` lines)."""
        lines = self.text.splitlines()
        if not self.info:
            return [line[2:].strip() for line in lines if line.startswith("$ ")]
        joined: list[str] = []
        pending = ""
        for line in lines:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            whole = (pending + line).strip()
            pending = ""
            if whole and not whole.startswith("#"):
                joined.append(whole)
        return joined

    def transcript_output(self) -> list[str]:
        """In a transcript, the lines the commands print (what follows no `$ `)."""
        if self.info:
            return []
        return [line for line in self.text.splitlines() if line and not line.startswith("$ ")]


def blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    section = ""
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            if lines[index].startswith("#"):
                section = lines[index].lstrip("#").strip()
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        marker = MARKER.match(lines[index - 1]) if index > 0 else None
        yield Block(
            path,
            index + 1,
            opening["info"],
            "\n".join(lines[index + 1 : end]),
            marker["why"] if marker else None,
            section,
        )
        index = end + 1


def command_blocks() -> list[Block]:
    return [block for path in DOCS for block in blocks(path) if block.is_command_block]


def stray_markers() -> list[str]:
    """Illustrative markers that are not right above a fence (they mark nothing)."""
    found = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if MARKER.match(line) and (number >= len(lines) or not FENCE.match(lines[number])):
                found.append(f"{path.relative_to(ROOT)}:{number}")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CommandFailed(AssertionError):
    pass


@dataclass
class Background:
    command: str
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.process.wait()  # so that an end read here is an exit seen by `poll`
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandFailed(
                    f"{self.command!r}: not ready within {within:.0f}s:\n{self.output}"
                )
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise CommandFailed(f"{self.command!r} ended before it was ready:\n{self.output}")
            self.seen.append(line)
            if pattern.search(line):
                return

    def drain(self) -> None:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.seen.append(line)

    @property
    def output(self) -> str:
        self.drain()
        return "".join(self.seen)


class DocSession:
    """One reader following one doc in a fresh place (see the module docstring)."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.home = where / "home"
        self.home.mkdir()
        self.data = where / "data"
        for name in ("resources", ".venv"):
            (where / name).symlink_to(ROOT / name)
        self.port = free_port()
        self.values: dict[str, str] = {}
        self.background: list[Background] = []
        self.devices = 0
        self.log: list[str] = []
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "ORRERY_HOME": str(self.data),
            "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "COLUMNS": "100",
        }
        for key in ("ORRERY_CONTROL_TOKEN", "ORRERY_DEVICE_TOKEN", "SSL_CERT_FILE"):
            self.env.pop(key, None)

    # -- filling in -------------------------------------------------------------------

    def fill(self, command: str) -> str:
        local = "127.0.0.1"
        command = command.replace(
            '"subjectAltName=DNS:orchestrator.lan"',
            '"subjectAltName=DNS:orchestrator.lan,IP:127.0.0.1"',
        )
        command = re.sub(r"(?<=//)orchestrator\.lan(?=:)", local, command)
        command = command.replace("0.0.0.0", local)
        command = re.sub(r"\b(HOST|ORCHESTRATOR)\b", local, command)
        command = re.sub(r"\b8765\b", str(self.port), command)
        placeholders = (
            (r"orr1_\.\.\.", "token"),
            (r"\bTOKEN\b", "token"),
            (r"\bID\b", "constellation"),
            (REQUEST_ID.pattern, "request"),
        )
        for placeholder, key in placeholders:
            if re.search(placeholder, command):
                if key not in self.values:
                    raise CommandFailed(f"{command!r} needs a {key} id that no command printed")
                command = re.sub(placeholder, self.values[key], command)
        return command

    def learn(self, output: str) -> None:
        for key, pattern in (("token", DEVICE_TOKEN), ("request", REQUEST_ID)):
            found = pattern.findall(output)
            if found:
                self.values[key] = found[-1]
        ids = [i for i in CONSTELLATION_ID.findall(output) if not i.isdigit()]
        if ids:
            self.values["constellation"] = ids[-1]

    # -- running ----------------------------------------------------------------------

    def run_block(self, block: Block) -> None:
        for written in block.commands():
            output = self.run(written, where=block.where)
            for expected in block.transcript_output():
                head = " ".join(expected.split()[:3])
                if head not in output:
                    raise CommandFailed(
                        f"{block.where}: {written!r} did not print {head!r}:\n{output}"
                    )

    def run(self, written: str, *, where: str = "setup") -> str:
        command = self.fill(written)
        words = shlex.split(command.rstrip("&"), comments=True) or [""]
        program = Path(words[0]).name
        kind = words[1] if program == "orrery" and len(words) > 1 else ""
        in_background = command.endswith("&") or (
            kind == "serve" and "--run" not in words
        ) or kind == "device"  # fmt: skip
        self.log.append(f"{where}: {command}")
        if in_background:
            return self._start(command.rstrip("& "), kind, where)
        return self._run(command, where, words)

    def _env_for(self, kind: str, command: str) -> dict[str, str]:
        if kind != "device" or "--data-dir" in command:
            return self.env
        self.devices += 1
        return {**self.env, "ORRERY_HOME": str(self.where / f"device-{self.devices}")}

    def _start(self, command: str, kind: str, where: str) -> str:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.where,
            env=self._env_for(kind, command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        job = Background(command, process)
        threading.Thread(target=job.read, daemon=True).start()
        self.background.append(job)
        ready = READY.get(kind)
        if ready is not None:
            try:
                job.wait_for(ready, READY_WITHIN_S)
            except CommandFailed as exc:
                raise CommandFailed(f"{where}: {exc}") from None
        output = job.output
        self.learn(output)
        return output

    def _run(self, command: str, where: str, words: list[str]) -> str:
        try:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=self.where,
                env=self.env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=COMMAND_WITHIN_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(f"{where}: {command!r} ran over {COMMAND_WITHIN_S:.0f}s") from exc
        output = done.stdout + done.stderr
        # a request in words is planned by the model: whether its plan then succeeds is
        # the planner's quality (bench/eval_planner.py), not whether the command works
        in_words = len(words) > 2 and words[1] == "run" and not words[-1].endswith(".yaml")
        allowed = {0, 1} if in_words else {0}
        documented = EXIT_SAID.search(command)
        if documented:
            allowed = {int(documented["code"])}
        if done.returncode not in allowed or "Traceback" in output:
            raise CommandFailed(
                f"{where}: {command!r} exited {done.returncode}:\n{output}\n"
                f"background:\n" + "\n".join(job.output for job in self.background)
            )
        self.learn(output)
        return output

    def close(self) -> None:
        """Stops what runs in the background; fails if any of it had died meanwhile."""
        died = [job for job in self.background if job.process.poll() is not None]
        for job in self.background:
            if job.process.poll() is None:
                os.killpg(job.process.pid, signal.SIGTERM)
        for job in self.background:
            try:
                job.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(job.process.pid, signal.SIGKILL)
                job.process.wait(timeout=10)
        if died:
            report = "\n".join(f"{job.command!r}:\n{job.output}" for job in died)
            raise CommandFailed(f"stopped before the session ended:\n{report}")
