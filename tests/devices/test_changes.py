"""`Changes`: a waiter wakes on the change that makes its condition true, not on a timer."""

from __future__ import annotations

import asyncio

from devices.changes import Changes

WAIT = 15.0


async def yields(count: int) -> None:
    """Let the loop run `count` rounds of ready callbacks (a yield, not a wait for time)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_waiter_wakes_on_the_change_that_makes_its_condition_true() -> None:
    changes, state = Changes(), {"done": 0}
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(changes.wait_until(lambda: state["done"] >= 2, loop.time() + WAIT))
    await yields(3)
    state["done"] = 1
    changes.notify()
    await yields(3)
    assert not waiter.done()  # woken, checked, waiting again
    state["done"] = 2
    changes.notify()
    await yields(3)  # a poll would sleep past this; the notify wakes it within a round or two
    assert waiter.done()
    assert waiter.result() is True


async def test_every_waiter_is_woken() -> None:
    changes, state = Changes(), {"ready": False}
    deadline = asyncio.get_running_loop().time() + WAIT
    waiters = [
        asyncio.create_task(changes.wait_until(lambda: state["ready"], deadline)) for _ in range(3)
    ]
    await yields(3)
    state["ready"] = True
    changes.notify()
    assert await asyncio.wait_for(asyncio.gather(*waiters), WAIT) == [True, True, True]


async def test_a_condition_that_holds_returns_at_once() -> None:
    changes = Changes()
    assert await changes.wait_until(lambda: True, asyncio.get_running_loop().time()) is True


async def test_the_wait_ends_at_the_deadline_with_the_condition_false() -> None:
    changes = Changes()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await changes.wait_until(lambda: False, began + 0.05) is False
    assert loop.time() - began >= 0.05
    changes.notify()  # no waiter left: harmless
