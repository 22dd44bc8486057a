"""Saving and reading constellations: upsert semantics, timestamps, listing, JSON snapshots."""

from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pytest

from memory import ConstellationRow, Store, StoreInvalidData

if TYPE_CHECKING:
    from conftest import ManualClock

NESTED: dict[str, Any] = {
    "name": "disk-report",
    "stars": [
        {"id": "usage", "args": {"cmd": "df -h /"}, "retries": 2, "timeout": 30.5},
        {"id": "save", "after": ["usage"], "args": {"content": "${usage.output.stdout}"}},
    ],
    "lines": [{"from": "usage", "to": "save", "kind": "completion"}],
    "meta": {"ok": True, "none": None, "deep": {"a": {"b": {"c": [1, [2, [3, {"d": -4e-9}]]]}}}},
    "unicode": 'naïve ☃ 日本語 \u0000 "quotes" \\ backslash',
    "big": 2**62,
    "empty": {"list": [], "dict": {}, "str": ""},
}


def save(store: Store, id: str = "c1", **changes: Any) -> None:
    fields: dict[str, Any] = {
        "name": "disk-report",
        "status": "running",
        "version": 1,
        "snapshot": {"stars": []},
    }
    fields.update(changes)
    store.save_constellation(id, **fields)


def get(store: Store, id: str = "c1") -> ConstellationRow:
    row = store.constellation(id)
    assert row is not None
    return row


def test_a_saved_constellation_reads_back(store: Store, clock: ManualClock) -> None:
    save(store, reason="because")
    assert get(store) == ConstellationRow(
        id="c1",
        name="disk-report",
        status="running",
        version=1,
        created_at=clock.now,
        updated_at=clock.now,
        finished_at=None,
        snapshot={"stars": []},
        reason="because",
    )


def test_an_unknown_constellation_is_none(store: Store) -> None:
    assert store.constellation("nope") is None


def test_saving_again_replaces_the_state_but_keeps_created_at(
    store: Store, clock: ManualClock
) -> None:
    created = clock.now
    save(store, reason="first")
    updated = clock.advance(5)
    save(store, name="renamed", status="failed", version=3, snapshot={"v": 3})
    row = get(store)
    assert (row.name, row.status, row.version, row.snapshot) == ("renamed", "failed", 3, {"v": 3})
    assert row.created_at == created
    assert row.updated_at == updated
    assert row.reason is None  # a save states the whole row: no reason now
    assert len(store.constellations()) == 1


def test_finished_at_is_set_once_and_cleared_when_not_finished(
    store: Store, clock: ManualClock
) -> None:
    save(store)
    assert get(store).finished_at is None
    finished = clock.advance(10)
    save(store, status="succeeded", version=2, finished=True)
    assert get(store).finished_at == finished
    clock.advance(10)
    save(store, status="succeeded", version=2, finished=True, reason="saved again")
    row = get(store)
    assert row.finished_at == finished  # the first finish time is kept
    assert row.updated_at == clock.now
    clock.advance(10)
    save(store, status="running", version=3)  # reopened by an edit
    assert get(store).finished_at is None


def test_finished_on_the_first_save(store: Store, clock: ManualClock) -> None:
    save(store, status="cancelled", finished=True, reason="cancelled by the user")
    row = get(store)
    assert row.finished_at == clock.now
    assert row.reason == "cancelled by the user"


def test_nested_snapshots_round_trip(store: Store, db_path: Path) -> None:
    save(store, snapshot=NESTED)
    assert get(store).snapshot == NESTED
    with Store.open_path(db_path) as reopened:
        assert get(reopened).snapshot == NESTED


def test_a_mapping_that_is_not_a_dict_is_stored_as_one(store: Store) -> None:
    save(store, snapshot=MappingProxyType({"a": 1}))
    assert get(store).snapshot == {"a": 1}


@pytest.mark.parametrize(
    "snapshot",
    [
        pytest.param({"when": {1, 2}}, id="set"),
        pytest.param({"x": math.nan}, id="nan"),
        pytest.param({"x": math.inf}, id="inf"),
        pytest.param({"x": object()}, id="object"),
        pytest.param(["not", "a", "dict"], id="list"),
        pytest.param("{}", id="string"),
    ],
)
def test_a_snapshot_that_is_not_plain_json_is_refused(store: Store, snapshot: Any) -> None:
    with pytest.raises(StoreInvalidData, match="snapshot of constellation 'c1'"):
        save(store, snapshot=snapshot)
    assert store.constellation("c1") is None


def test_invalid_data_is_also_a_value_error(store: Store) -> None:
    with pytest.raises(ValueError, match="JSON"):
        save(store, snapshot={"x": math.nan})


def test_constellations_are_listed_newest_first(store: Store, clock: ManualClock) -> None:
    for index in range(5):
        clock.advance()
        save(store, f"c{index}")
    clock.advance()
    save(store, "c0", status="succeeded", finished=True)  # updating does not make it newer
    assert [row.id for row in store.constellations()] == ["c4", "c3", "c2", "c1", "c0"]
    assert [row.id for row in store.constellations(limit=2)] == ["c4", "c3"]


def test_constellations_can_be_filtered_by_status(store: Store, clock: ManualClock) -> None:
    for index, status in enumerate(["running", "failed", "succeeded", "failed"]):
        clock.advance()
        save(store, f"c{index}", status=status)
    assert [row.id for row in store.constellations(status="failed")] == ["c3", "c1"]
    assert [row.id for row in store.constellations(limit=1, status="failed")] == ["c3"]
    assert store.constellations(status="paused") == []


def test_constellations_created_in_the_same_instant_list_in_a_stable_order(store: Store) -> None:
    for id in ["b", "a", "c"]:
        save(store, id)
    assert [row.id for row in store.constellations()] == ["c", "b", "a"]


def test_an_empty_store_lists_nothing(store: Store) -> None:
    assert store.constellations() == []


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(store: Store, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.constellations(limit=limit)
