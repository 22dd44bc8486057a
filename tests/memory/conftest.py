"""Shared fixtures for the store tests: a database path, a manual clock, an open store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memory import Store


class ManualClock:
    """A clock that only moves when told to, so timestamps are exact in assertions."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "orrery.db"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(db_path: Path, clock: ManualClock) -> Iterator[Store]:
    with Store.open_path(db_path, clock=clock) as opened:
        yield opened
