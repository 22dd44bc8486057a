"""`Backoff`: how long a device waits before it dials the orchestrator again.

Exponential growth with full jitter (a uniform draw between 0 and the current ceiling),
so many devices that lost the same orchestrator do not all return at the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of `uniform(0, min(maximum, initial * factor**n))` for the n-th retry.

    Pure apart from the random generator the caller passes in; `reset()` after a
    connection that worked, so the next loss starts again from `initial`.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    _failures: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ValueError(f"initial backoff must be positive, not {self.initial!r}")
        if not self.factor >= 1:
            raise ValueError(f"backoff factor must be at least 1, not {self.factor!r}")
        if not self.maximum >= self.initial:
            raise ValueError(
                f"maximum backoff {self.maximum!r} is below the initial one {self.initial!r}"
            )

    @property
    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.maximum, self.initial * self.factor**self._failures)

    def next_delay(self, rng: random.Random) -> float:
        """The delay before the next attempt, in seconds; each call raises the ceiling."""
        delay = rng.uniform(0.0, self.ceiling)
        if self.ceiling < self.maximum:  # stop counting once capped (no float overflow)
            self._failures += 1
        return delay

    def reset(self) -> None:
        self._failures = 0


__all__ = ["Backoff"]
