"""`Changes`: wait until a condition over some state holds, woken where the state changes.

The state's owner calls `notify()` after every change (it need not know who waits, nor
for what); a waiter re-checks its condition after each one, so nothing is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class Changes:
    """A change notification for one owner's state; `notify` never blocks."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """The state changed: wake every waiter to check its condition again."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, condition: Callable[[], bool], deadline: float) -> bool:
        """Wait until `condition()` holds or the loop's clock reaches `deadline`;
        whether it holds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while not condition():
                    await self._event.wait()
        return condition()


__all__ = ["Changes"]
