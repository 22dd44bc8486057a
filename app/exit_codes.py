"""The exit codes of every `orrery` command (docs/control-api.md lists them for `run`)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the constellation failed, or someone else cancelled it
EXIT_BAD_INPUT = 2  # an invalid plan, a refused request, a wrong token or URL
EXIT_NO_DEVICE = 3  # no connected device can run a star (or be planned for)
EXIT_UNREACHABLE = 4  # the server cannot be reached, or was lost for good
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: the run was cancelled
