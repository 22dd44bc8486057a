"""Failed control logins counted per address (`app.control.login_limit`), with a fake
clock; the server side of it is in test_control_security.py."""

from __future__ import annotations

import pytest

from app.control.login_limit import LoginLimiter, address_of


def test_the_limit_counts_failures_per_address_over_a_sliding_window() -> None:
    now = [1000.0]
    limiter = LoginLimiter(max_failures=3, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.wait("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
        now[0] += 10
    assert limiter.wait("10.0.0.1") == pytest.approx(30.0)  # the first leaves at 1060
    assert limiter.wait("10.0.0.2") == 0  # another address is not affected
    now[0] = 1060.0
    assert limiter.wait("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    assert limiter.wait("10.0.0.1") == pytest.approx(10.0)  # 1010 + 60 - 1060


def test_addresses_are_counted_without_their_port() -> None:
    assert address_of("127.0.0.1:5123") == "127.0.0.1"
    assert address_of("[::1]:5123") == "[::1]"
    assert address_of("unix") == "unix"


def test_the_limiter_forgets_the_oldest_addresses_beyond_its_size() -> None:
    limiter = LoginLimiter(max_failures=1, max_addresses=100)
    for index in range(250):
        limiter.failed(f"10.0.{index // 256}.{index % 256}")
    assert limiter.wait("10.0.0.249") > 0
    assert limiter.wait("10.0.0.0") == 0  # forgotten, not kept without bound
