"""Failed control logins, counted per address: past a limit, that address waits.

The control token is 256 random bits, so guessing it is hopeless; still, a client that
keeps presenting wrong tokens (or garbage instead of `auth`) from one address is refused
at once for a while, answered `rate_limited` with how long to wait, before its `auth`
is even read. A login that succeeds does not wipe the count: a guesser cannot reset it
by interleaving with a client that knows the token.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

MAX_FAILURES: Final = 10
"""Failed logins one address may have within `WINDOW` seconds."""
WINDOW: Final = 60.0


def address_of(peer: str) -> str:
    """The host part of a `host:port` peer (`[::1]:5000` -> `[::1]`)."""
    host, colon, port = peer.rpartition(":")
    return host if colon and port.isdigit() else peer


class LoginLimiter:
    """Counts failed logins per address over a sliding window (`time.monotonic`)."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def wait(self, address: str) -> float:
        """Seconds `address` must wait before it may try again (0: it may now)."""
        failures = self._recent(address)
        if len(failures) < self.max_failures:
            return 0.0
        return max(0.0, failures[-self.max_failures] + self.window - self._clock())

    def failed(self, address: str) -> None:
        """Count one failed login from `address`."""
        failures = self._recent(address)
        failures.append(self._clock())
        while len(failures) > self.max_failures:
            failures.popleft()
        self._failures[address] = failures
        if len(self._failures) > self._max_addresses:  # forget the quietest first
            for key in [k for k, v in self._failures.items() if not self._trim(v)]:
                del self._failures[key]
            while len(self._failures) > self._max_addresses:
                del self._failures[next(iter(self._failures))]

    def _recent(self, address: str) -> deque[float]:
        return self._trim(self._failures.get(address, deque()))

    def _trim(self, failures: deque[float]) -> deque[float]:
        horizon = self._clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures


__all__ = ["MAX_FAILURES", "WINDOW", "LoginLimiter", "address_of"]
