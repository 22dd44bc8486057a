"""llama.cpp's own log lines, through Python `logging` instead of raw stderr.

llama.cpp and ggml report through one C callback. llama-cpp-python installs one that prints
to stderr, reading the levels with an older ggml's table (this ggml's WARN is its ERROR, so
warnings such as Gemma-3's "using full-size SWA cache" print on every load), and with
`verbose=False` it points the process's stdout and stderr at /dev/null while a model loads:
process-wide, from the loading thread, so every other thread's output is lost meanwhile.

`route_llama_logging` replaces both. Each line goes to the ``orrery.llama`` logger:
llama.cpp's WARN at INFO (the CLI shows it with ``-v``), its INFO and DEBUG at DEBUG
(``-vv``), its ERROR at WARNING. Its warnings are about its own internals, not anything an
Orrery user acts on; what goes wrong for the user reaches them as a typed `ModelError`.
Nothing is redirected any more.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

LOGGER_NAME = "orrery.llama"
log = logging.getLogger(LOGGER_NAME)

# enum ggml_log_level of the ggml that llama-cpp-python bundles (ggml.h)
GGML_LOG_LEVEL_NONE = 0
GGML_LOG_LEVEL_DEBUG = 1
GGML_LOG_LEVEL_INFO = 2
GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5  # continues the previous message

LEVELS = {
    GGML_LOG_LEVEL_NONE: logging.DEBUG,
    GGML_LOG_LEVEL_DEBUG: logging.DEBUG,
    GGML_LOG_LEVEL_INFO: logging.DEBUG,
    GGML_LOG_LEVEL_WARN: logging.INFO,
    GGML_LOG_LEVEL_ERROR: logging.WARNING,
}
"""ggml level -> the level of the `orrery.llama` record."""


class LineAssembler:
    """Turns llama.cpp's pieces of text (a message may come in several calls, the later
    ones at level CONT) into one log record per line, at the level of the piece that
    started it. Thread-safe; records are emitted outside the lock."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._lock = threading.Lock()
        self._text = ""
        self._level = logging.DEBUG

    def take(self, ggml_level: int, text: str) -> None:
        lines: list[tuple[int, str]] = []
        with self._lock:
            if ggml_level != GGML_LOG_LEVEL_CONT:
                if self._text:  # a message that did not end its line
                    lines.append((self._level, self._text))
                    self._text = ""
                self._level = LEVELS.get(ggml_level, logging.DEBUG)
            *complete, self._text = (self._text + text).split("\n")
            lines.extend((self._level, line) for line in complete)
        for level, line in lines:
            if line.strip():
                self._log.log(level, "%s", line.rstrip())


_assembler = LineAssembler(log)
_routed = threading.Lock()
_callback: Any = None  # the ctypes function pointer llama.cpp holds; kept alive here


class _NoRedirect:
    """Stands in for llama-cpp-python's `suppress_stdout_stderr`: redirects nothing."""

    def __init__(self, disable: bool = True) -> None:
        del disable

    def __enter__(self) -> _NoRedirect:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _on_log(level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
    del user_data
    _assembler.take(level, text.decode("utf-8", errors="replace") if text else "")


def route_llama_logging() -> None:
    """Send llama.cpp's log through the ``orrery.llama`` logger (see the module docstring).
    Idempotent; imports llama_cpp, so call it where llama_cpp is about to be used."""
    global _callback
    import llama_cpp
    import llama_cpp._internals
    import llama_cpp.llama

    with _routed:
        if _callback is not None:
            return

        on_log = llama_cpp.llama_log_callback(_on_log)
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
        _callback = on_log
        # With every line routed, the redirection only hides other threads' output.
        for module in (llama_cpp._internals, llama_cpp.llama):
            if hasattr(module, "suppress_stdout_stderr"):
                vars(module)["suppress_stdout_stderr"] = _NoRedirect
