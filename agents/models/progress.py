"""Progress of the first-use preparation of models, for whoever shows it.

The first time a data directory is used, `ModelRegistry.discover` joins the embedded model's
pieces into one file (hundreds of MiB) and reads each new model file's metadata (seconds
each: the tokenizer arrays are decoded); both are remembered, so later runs skip them. A
caller that wants to show this passes a `PrepareProgress` callable: it receives a
`PrepareStep` when a step starts (`done` 0), as it advances, and once when it ends
(`finished`, with `error` set if it failed). Nothing is reported when nothing needs
preparing. The callable may be called from a worker thread and must not block; agents code
never draws anything itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PrepareStep:
    """One step of preparing a model file, at one moment."""

    what: str
    """What the step does, e.g. ``joining gemma-3-270m-q4_k_m.gguf from 4 pieces``."""
    done: int
    """Bytes handled so far (0 at the start of a step whose size is unknown)."""
    total: int | None
    """Bytes the step handles in all, or None when it cannot say (reading metadata)."""
    finished: bool = False
    error: str | None = None
    """Why the step failed, when it ended with an error (`finished` is then True too)."""


PrepareProgress = Callable[[PrepareStep], None]


class StepReporter:
    """Reports one step to an optional `PrepareProgress`: the start on creation, then
    `advance`, and `finish` or `fail`. Without a callable, every call does nothing."""

    def __init__(self, progress: PrepareProgress | None, what: str, total: int | None) -> None:
        self._progress = progress
        self._what = what
        self._total = total
        self._done = 0
        self._emit(finished=False)

    def advance(self, count: int) -> None:
        self._done += count
        self._emit(finished=False)

    def finish(self) -> None:
        self._emit(finished=True)

    def fail(self, reason: str) -> None:
        self._emit(finished=True, error=reason)

    def _emit(self, *, finished: bool, error: str | None = None) -> None:
        if self._progress is not None:
            self._progress(PrepareStep(self._what, self._done, self._total, finished, error))
