"""How every `orrery` command runs: its event loop, its signals and its exit code.

This is the only place that creates an event loop for a command, installs signal
handlers, and turns errors into exit codes (the table is in `app.exit_codes`).
A command is `async def command(options, stop) -> int`; the first SIGINT or SIGTERM
sets `stop` (a run cancels its constellation and exits 130, a server stops and exits
0), a second one cancels the command outright. A typed error that escapes a command is
said on stderr in one line (`orrery: error: ...`, control characters escaped: a reason
may quote a device) and becomes its exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable

from app.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NO_DEVICE,
    EXIT_UNREACHABLE,
)

Command = Callable[[argparse.Namespace, asyncio.Event], Awaitable[int]]


def run_command(command: Command, options: argparse.Namespace) -> int:
    """Run `command` to its exit code (see the module docstring)."""
    try:
        return asyncio.run(_with_signals(command, options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        return code


async def _with_signals(command: Command, options: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received = 0

    def on_signal() -> None:
        nonlocal received
        received += 1
        if received == 1:
            stop.set()
        elif task is not None:
            task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, on_signal)
            installed.append(signum)
    try:
        return await command(options, stop)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def exit_code_for(exc: BaseException) -> int | None:
    """Say what went wrong on stderr; the exit code it means (None: not ours, a bug)."""
    from agents.constellation.plan_file import PlanFileError
    from app.commands.clients import TokenMissing
    from app.control.token import TokenError
    from app.errors import (
        AuthRefused,
        BadServerUrl,
        RequestRejected,
        RunInterrupted,
        ServerUnreachable,
    )
    from app.runtime.core import DevicesMissing
    from app.settings import ConfigError
    from app.text_safety import one_line
    from devices.policy import PolicyError
    from memory import StoreError

    code = EXIT_BAD_INPUT
    message = str(exc)
    if isinstance(exc, RunInterrupted):
        code, message = EXIT_UNREACHABLE, f"the server lost the run: {exc.reason}"
    elif isinstance(exc, RequestRejected):
        code = EXIT_NO_DEVICE if exc.code == "no_capable_device" else EXIT_BAD_INPUT
        message = exc.reason
    elif isinstance(exc, ServerUnreachable):
        code = EXIT_UNREACHABLE
    elif isinstance(exc, DevicesMissing):
        code = EXIT_NO_DEVICE
    elif isinstance(exc, PolicyError):
        message = exc.message
    elif isinstance(exc, BadServerUrl):
        message = f"--server: {exc}"
    elif not isinstance(
        exc, AuthRefused | TokenError | TokenMissing | PlanFileError | ConfigError | StoreError
    ):
        return None
    print(f"orrery: error: {one_line(message)}", file=sys.stderr)
    return code
