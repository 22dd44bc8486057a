"""Tool processes die with their device: no command outlives the agent that started it.

Every process a tool starts (`shell.run`, `python.run`, through `run_process`) leads a
process group of its own. When the device process dies without a chance to clean up
(`kill -9`, a crash, the out-of-memory killer), two things stop that group:

- On Linux the group's leader is started with `PR_SET_PDEATHSIG` = SIGKILL (`pdeathsig`,
  the `preexec_fn` of its start), so the kernel kills it the moment the device dies.
- Its children (`sleep` under `sh -c "sleep 5; echo done >> f"`, or what a Python script
  starts) are not covered by that signal, so the device also keeps one small **watchdog**
  process (`Reaper`): the device tells it on a pipe which groups are running ("+PGID" when
  one starts, "-PGID" when it ended); when the pipe reaches end of file, which the kernel
  makes happen when the device dies however it dies, the watchdog SIGKILLs every group
  still registered and exits. A device that stops normally has stopped its groups itself,
  so the watchdog finds nothing left to kill.

The watchdog is started on first use, in a session of its own (a Ctrl-C in the device's
terminal does not reach it), with this interpreter and no site packages (`-I -S`). A
process that left its group on purpose (`setsid`, a daemon) is not followed: like
`run_process`, the reaper leaves detached processes alone. On Windows (no process groups
of this kind) neither applies; a job object would be the equivalent and is not done.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("orrery.devices.reaper")

_PR_SET_PDEATHSIG = 1

WATCHDOG = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    line = line.strip()
    if line[:1] == b"+":
        groups.add(int(line[1:]))
    elif line[:1] == b"-":
        groups.discard(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""
"""The watchdog's program: registers groups from stdin, kills what is left at EOF."""


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


_PRCTL = _load_prctl()  # resolved here, in the parent: the child only calls it


def pdeathsig() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child die (SIGKILL) when its parent does, or None
    where the platform has no such thing (everywhere but Linux)."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child, between fork and exec: nothing that allocates
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class Reaper:
    """The device's watchdog (see the module doc): `watch(pgid)` when a group starts,
    `release(pgid)` when it ended. Thread-safe; the watchdog starts on the first `watch`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()

    @property
    def watchdog_pid(self) -> int | None:
        """The watchdog's pid, once it runs (for tests)."""
        return self._watchdog.pid if self._watchdog is not None else None

    @property
    def groups(self) -> frozenset[int]:
        return frozenset(self._groups)

    def watch(self, pgid: int) -> None:
        """Kill group `pgid` if this process dies before `release(pgid)`."""
        if sys.platform == "win32":
            return
        with self._lock:
            self._groups.add(pgid)
            self._send(f"+{pgid}\n".encode())

    def release(self, pgid: int) -> None:
        """Group `pgid` ended (or is left alone from now on)."""
        if sys.platform == "win32":
            return
        with self._lock:
            if pgid in self._groups:
                self._groups.discard(pgid)
                self._send(f"-{pgid}\n".encode())

    def close(self) -> None:
        """Stop the watchdog; what is still registered is killed by it, as at a death."""
        with self._lock:
            watchdog, self._watchdog = self._watchdog, None
            self._groups.clear()
        if watchdog is not None and watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=5)

    def _send(self, line: bytes) -> None:
        """Write `line` to the watchdog, starting (or restarting) it as needed."""
        for _ in range(2):
            watchdog = self._running()
            if watchdog is None:
                return
            assert watchdog.stdin is not None
            try:
                os.write(watchdog.stdin.fileno(), line)
                return
            except OSError as error:  # it died: start another with every group
                log.warning("the process watchdog (pid %d) is gone: %s", watchdog.pid, error)
                with contextlib.suppress(OSError):
                    watchdog.stdin.close()
                self._watchdog = None

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._watchdog is not None and self._watchdog.poll() is None:
            return self._watchdog
        try:
            watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", WATCHDOG],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            log.error(
                "cannot start the process watchdog (%s): tool processes may outlive a "
                "device that is killed",
                error,
            )
            return None
        self._watchdog = watchdog
        assert watchdog.stdin is not None
        known = "".join(f"+{group}\n" for group in self._groups).encode()
        if known:
            with contextlib.suppress(OSError):
                os.write(watchdog.stdin.fileno(), known)
        log.debug("process watchdog started (pid %d)", watchdog.pid)
        return watchdog


_reaper: Reaper | None = None
_reaper_lock = threading.Lock()


def reaper() -> Reaper:
    """This process's reaper (a new one in a forked child: the parent's is not its own)."""
    global _reaper
    with _reaper_lock:
        if _reaper is None or _reaper._owner != os.getpid():
            _reaper = Reaper()
        return _reaper


__all__ = ["WATCHDOG", "Reaper", "pdeathsig", "reaper"]
