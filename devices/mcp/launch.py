"""Start an MCP server that dies with the device: `python launch.py PARENT_PID PROGRAM ARGS...`.

Run by path (stdlib only, no package import), it asks Linux to kill it when its parent
(the device) dies (`PR_SET_PDEATHSIG`, which lasts through `exec`), checks the parent
did not die first, and then becomes `PROGRAM ARGS...`. Elsewhere it only execs: the
server still sees its standard input close when the device dies, which ends stdio
servers that follow the protocol.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: stdin's end is the fallback
        return


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: launch.py PARENT_PID PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    _die_with_parent()
    if os.getppid() != int(argv[0]):  # the device died before prctl took effect
        return 1
    try:
        os.execvp(argv[1], argv[1:])
    except OSError as error:
        print(f"cannot start MCP server {argv[1]!r}: {error.strerror or error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
