"""One subprocess run for a tool: bounded capture, progress lines, timeout and group kill."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from devices.tools.base import ProgressCallback, ToolContext
from devices.tools.errors import ToolError, ToolFailed, ToolTimedOut
from devices.tools.paths import Confined, held_path, locate_in, workspace_root
from devices.tools.reaper import pdeathsig, reaper

log = logging.getLogger(__name__)

PROGRESS_LINES = 200
PROGRESS_LINE_CHARS = 1_000
ERROR_TAIL_CHARS = 500
MAX_OUTPUT_LIMIT = 64 * 1024 * 1024
_MAX_LINE_BYTES = 4 * PROGRESS_LINE_CHARS
_TAIL_BYTES = 4 * ERROR_TAIL_CHARS


class ProcessLimits(BaseModel):
    """The arguments every process-running tool shares."""

    model_config = ConfigDict(extra="forbid")

    timeout: float | None = Field(
        default=None, gt=0, description="seconds before the process group is stopped"
    )
    max_output: int = Field(
        default=65_536,
        ge=1,
        le=MAX_OUTPUT_LIMIT,
        description="bytes of stdout and of stderr kept; the rest is dropped with a marker",
    )
    check: bool = Field(default=True, description="fail the task when the exit code is not 0")


class ProcessResult(BaseModel):
    """What a finished process produced; `truncated` says some output was dropped."""

    model_config = ConfigDict(extra="forbid")

    returncode: int
    stdout: str
    stderr: str
    truncated: bool
    duration: float


@dataclass(frozen=True, slots=True)
class WorkingFolder:
    """Where a process runs: `chdir` is what the child changes to (the folder held open
    by the parent, /proc/self/fd/N on Linux), `path` the folder's own path."""

    chdir: Path
    path: Path


@contextlib.contextmanager
def working_folder(context: ToolContext, cwd: str | None) -> Iterator[WorkingFolder]:
    """The folder a process runs in: the workspace, or `cwd` confined like a file path,
    opened without following a link on the way and held open for the block, so a folder
    swapped for a link after the check is not where the child lands."""
    root = workspace_root(context.workspace)
    target = Confined(root, (), ".", root) if cwd is None else locate_in(context, cwd)
    try:
        handle = target.open_dir()
    except (FileNotFoundError, NotADirectoryError):
        raise ToolError(
            f"cwd {cwd!r} is not a folder in the workspace; "
            "create it first or leave cwd out to run in the workspace root"
        ) from None
    except OSError as error:
        raise ToolError(f"cannot use cwd {cwd!r}: {error.strerror or error}") from None
    try:
        yield WorkingFolder(held_path(handle, target.path), target.path)
    finally:
        os.close(handle)


def truncation_marker(dropped: int) -> str:
    return f"\n[... truncated {dropped} bytes ...]"


class _Capture:
    """Keeps the first `cap` bytes of a stream and a short tail; counts what it drops."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._head = bytearray()
        self._tail = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self._cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))
        self._tail += chunk[-_TAIL_BYTES:]
        del self._tail[:-_TAIL_BYTES]

    def text(self) -> str:
        text = self._head.decode("utf-8", errors="replace")
        return text + truncation_marker(self.dropped) if self.dropped else text

    def tail(self, chars: int) -> str:
        return self._tail.decode("utf-8", errors="replace").strip()[-chars:]


class _ProgressLines:
    """Splits both streams into lines and reports the first `limit` of them."""

    def __init__(self, progress: ProgressCallback, limit: int = PROGRESS_LINES) -> None:
        self._progress = progress
        self._limit = limit
        self._sent = 0
        self._partial: dict[str, bytearray] = {}
        self._skipping: set[str] = set()  # streams inside an over-long line

    @property
    def exhausted(self) -> bool:
        return self._sent >= self._limit

    def feed(self, stream: str, chunk: bytes) -> None:
        if self.exhausted:
            return
        buffer = self._partial.setdefault(stream, bytearray())
        buffer += chunk
        while not self.exhausted and (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if stream in self._skipping:
                self._skipping.discard(stream)
            else:
                self._emit(stream, line)
        if self.exhausted:
            self._partial.clear()
        elif len(buffer) > _MAX_LINE_BYTES:  # a line with no end in sight: report its start
            if stream not in self._skipping:
                self._emit(stream, bytes(buffer))
                self._skipping.add(stream)
            buffer.clear()

    def flush(self, stream: str) -> None:
        buffer = self._partial.pop(stream, None)
        if buffer and stream not in self._skipping and not self.exhausted:
            self._emit(stream, bytes(buffer))

    def _emit(self, stream: str | None, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if len(text) > PROGRESS_LINE_CHARS:
            text = text[:PROGRESS_LINE_CHARS] + "…"
        self._report(text, stream)
        self._sent += 1
        if self.exhausted:
            self._report(
                f"[progress shows the first {self._limit} lines; the result holds the output]",
                None,
            )

    def _report(self, message: str, stream: str | None) -> None:
        try:
            self._progress(message, stream)
        except Exception:  # a broken progress sink must not stall the pipes
            log.exception("progress callback failed; no more progress for this process")
            self._sent = self._limit


class _Pipes(asyncio.SubprocessProtocol):
    """Feeds stdout and stderr into their captures as data arrives; signals exit and EOF."""

    def __init__(self, captures: Mapping[str, _Capture], lines: _ProgressLines) -> None:
        self._captures = captures
        self._lines = lines
        self._open = {1: "stdout", 2: "stderr"}
        self.exited = asyncio.Event()
        self.drained = asyncio.Event()  # both pipes closed: nothing more to read

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        name = "stdout" if fd == 1 else "stderr"
        self._captures[name].feed(data)
        self._lines.feed(name, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        name = self._open.pop(fd, None)
        if name is not None:
            self._lines.flush(name)
        if not self._open:
            self.drained.set()

    def process_exited(self) -> None:
        self.exited.set()


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; whether it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


def _signal_group(transport: asyncio.SubprocessTransport, signum: int) -> None:
    """Send `signum` to the process group the process leads (the process itself on Windows)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sys.platform == "win32":
            transport.kill()
        else:
            os.killpg(transport.get_pid(), signum)


async def _terminate(transport: asyncio.SubprocessTransport, pipes: _Pipes, grace: float) -> None:
    """SIGTERM the group; SIGKILL it once the leader and the pipes are done or `grace` passed."""
    try:
        _signal_group(transport, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await pipes.exited.wait()
                await pipes.drained.wait()
    finally:  # even when cancelled again: no process of the group survives
        _signal_group(transport, signal.SIGKILL)


async def _spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    pipes: Callable[[], _Pipes],
    kill_grace: float,
) -> tuple[asyncio.SubprocessTransport, _Pipes]:
    """Start `argv` as the leader of a new process group, safely against cancellation;
    the group dies with this process (`devices.tools.reaper`).

    Cancelled half-way, asyncio would kill only the leader and then wait for the pipes
    that its children still hold; instead the start completes and the group is stopped.
    """
    loop = asyncio.get_running_loop()
    starting = asyncio.ensure_future(
        loop.subprocess_exec(
            pipes,
            *argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=pdeathsig(),
        )
    )
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # a start that failed leaves nothing to stop
            transport, started = await starting
            try:
                await _terminate(transport, started, kill_grace)
            finally:
                transport.close()
        raise


def confined(
    context: ToolContext, argv: Sequence[str], folder: WorkingFolder, env: Mapping[str, str]
) -> tuple[list[str], dict[str, str] | None, bool]:
    """(argv, env, whether the process inherits the device's environment) for running
    `argv` in `folder` under the context's `[sandbox]`: inside bubblewrap when the policy
    asks for it (`devices.tools.sandbox`), else as it is."""
    from devices.tools.policy import PolicyError
    from devices.tools.sandbox import sandbox_for

    try:
        box = sandbox_for(context.policy, context.workspace, context.private)
    except PolicyError as error:
        raise ToolError(error.message) from None
    if box is None:
        return list(argv), dict(env), True
    wrapped, outer = box.wrap(argv, folder.path, env)
    return wrapped, outer, False


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    progress: ProgressCallback,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    timeout: float | None = None,  # noqa: ASYNC109 - the partial output must survive it
    max_output: int = 65_536,
    check: bool = False,
    kill_grace: float = 2.0,
    drain_grace: float = 1.0,
) -> ProcessResult:
    """Run `argv` in its own process group and return what it printed, bounded.

    stdout and stderr are consumed as they arrive; each keeps its first `max_output`
    bytes and drops the rest (with a visible marker), so memory stays bounded whatever
    the command prints. `env` adds to the device's environment, or with `inherit_env`
    false is the whole of it. Lines are reported to `progress`, up to `PROGRESS_LINES`. With
    `check`, a non-zero exit raises `ToolFailed` carrying the result and the end of
    stderr. When the command exits but processes it started still hold its output
    pipes after `drain_grace` seconds, its process group is stopped. On timeout the
    group is stopped (SIGTERM, then SIGKILL after `kill_grace`) and `ToolTimedOut`
    carries the partial output; on cancellation the same happens and the cancellation
    propagates. Processes that detached (closed the pipes) are left alone. If this
    process dies while the command runs, its group is killed (`devices.tools.reaper`).
    """
    started = time.monotonic()
    captures = {"stdout": _Capture(max_output), "stderr": _Capture(max_output)}
    lines = _ProgressLines(progress)
    try:
        transport, pipes = await _spawn(
            argv,
            cwd=cwd,
            env=({**os.environ, **env} if inherit_env else dict(env)) if env is not None else None,
            pipes=lambda: _Pipes(captures, lines),
            kill_grace=kill_grace,
        )
    except (OSError, ValueError) as error:
        raise ToolError(f"could not start {argv[0]!r}: {error}") from None
    pid = transport.get_pid()
    reaper().watch(pid)  # the group leader's pid is the group's id
    who = _task_name()
    log.debug("%s: started pid %d: %s", who, pid, argv[0])

    def result() -> ProcessResult:
        returncode = transport.get_returncode()
        return ProcessResult(
            returncode=returncode if returncode is not None else -1,
            stdout=captures["stdout"].text(),
            stderr=captures["stderr"].text(),
            truncated=any(capture.dropped for capture in captures.values()),
            duration=round(time.monotonic() - started, 3),
        )

    try:
        async with asyncio.timeout(timeout) as deadline:
            try:
                await pipes.exited.wait()
                if not await _set_within(pipes.drained, drain_grace):
                    log.info("%s: pid %d exited; stopping what holds its output", who, pid)
                    await _terminate(transport, pipes, kill_grace)
                    await _set_within(pipes.drained, kill_grace)
            except BaseException:
                await _terminate(transport, pipes, kill_grace)
                raise
    except TimeoutError:
        if not deadline.expired():
            raise
        await _set_within(pipes.exited, kill_grace)
        log.info("%s: pid %d timed out after %gs; its group was stopped", who, pid, timeout)
        raise ToolTimedOut(timeout or 0.0, output=result()) from None
    finally:
        transport.close()
        reaper().release(pid)

    outcome = result()
    if check and outcome.returncode != 0:
        raise ToolFailed(_failure_message(outcome.returncode, captures["stderr"]), output=outcome)
    return outcome


def _task_name() -> str:
    """The running asyncio task's name: the dispatcher names it after the attempt."""
    task = asyncio.current_task()
    return task.get_name() if task is not None else "?"


def _failure_message(code: int, stderr: _Capture) -> str:
    how = f"code {code}"
    if code < 0:
        with contextlib.suppress(ValueError):
            how += f" (killed by {signal.Signals(-code).name})"
    tail = stderr.tail(ERROR_TAIL_CHARS)
    if not tail:
        return f"command exited with {how} and printed nothing on stderr"
    return f"command exited with {how}: {tail}"
