"""The event log: idempotent appends, ordering, `after_seq`, placeholders, concurrent writers."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from memory import PLACEHOLDER_STATUS, EventRecordIn, EventRow, Store, StoreInvalidData

if TYPE_CHECKING:
    from conftest import ManualClock


def event(seq: int, cid: str = "c1", **payload: Any) -> EventRecordIn:
    return EventRecordIn(
        constellation_id=cid,
        seq=seq,
        type="star.finished",
        ts=1_700_000_000.0 + seq,
        payload=payload or {"seq": seq},
    )


def seqs(rows: list[EventRow]) -> list[int]:
    return [row.seq for row in rows]


def save(store: Store, cid: str = "c1") -> None:
    store.save_constellation(cid, name=cid, status="running", version=1, snapshot={})


def test_appended_events_read_back(store: Store) -> None:
    save(store)
    store.append_events([event(1, star_id="usage", output={"stdout": "ok\n"})])
    assert store.events("c1") == [
        EventRow(
            constellation_id="c1",
            seq=1,
            type="star.finished",
            ts=1_700_000_001.0,
            payload={"star_id": "usage", "output": {"stdout": "ok\n"}},
        )
    ]


def test_events_come_back_ordered_by_seq(store: Store) -> None:
    save(store)
    store.append_events([event(5), event(2), event(9)])
    store.append_events([event(1), event(7)])
    assert seqs(store.events("c1")) == [1, 2, 5, 7, 9]


def test_after_seq_returns_only_later_events(store: Store) -> None:
    save(store)
    store.append_events([event(seq) for seq in range(1, 11)])
    assert seqs(store.events("c1", after_seq=0)) == list(range(1, 11))
    assert seqs(store.events("c1", after_seq=7)) == [8, 9, 10]
    assert store.events("c1", after_seq=10) == []
    assert seqs(store.events("c1", after_seq=-5)) == list(range(1, 11))


def test_recording_the_same_seq_again_is_ignored(store: Store) -> None:
    save(store)
    store.append_events([event(1, first=True), event(2, first=True)])
    store.append_events([event(2, first=False), event(3, first=False)])
    store.append_events([event(1, first=False), event(2, first=False), event(3, first=False)])
    rows = store.events("c1")
    assert seqs(rows) == [1, 2, 3]
    assert [row.payload["first"] for row in rows] == [True, True, False]  # first write wins


def test_duplicates_inside_one_batch_are_ignored(store: Store) -> None:
    save(store)
    store.append_events([event(1, copy=1), event(1, copy=2), event(2), event(1, copy=3)])
    rows = store.events("c1")
    assert seqs(rows) == [1, 2]
    assert rows[0].payload == {"copy": 1}


def test_the_same_seq_in_two_constellations_is_two_events(store: Store) -> None:
    save(store, "c1")
    save(store, "c2")
    store.append_events([event(1, "c1"), event(1, "c2"), event(2, "c2")])
    assert seqs(store.events("c1")) == [1]
    assert seqs(store.events("c2")) == [1, 2]


def test_an_unknown_constellation_has_no_events(store: Store) -> None:
    assert store.events("nope") == []


def test_appending_nothing_does_nothing(store: Store) -> None:
    store.append_events([])
    assert store.constellations() == []


def test_events_before_the_first_save_create_a_placeholder(
    store: Store, clock: ManualClock
) -> None:
    placed = clock.now
    store.append_events([event(1, "early"), event(2, "early")])
    row = store.constellation("early")
    assert row is not None
    assert (row.status, row.version, row.name, row.snapshot) == (PLACEHOLDER_STATUS, 0, "", {})
    assert row.created_at == placed
    clock.advance(3)
    store.save_constellation("early", name="real", status="running", version=1, snapshot={"a": 1})
    row = store.constellation("early")
    assert row is not None
    assert (row.status, row.version, row.name, row.snapshot) == ("running", 1, "real", {"a": 1})
    assert row.created_at == placed
    assert seqs(store.events("early")) == [1, 2]


def test_events_do_not_touch_a_saved_constellation(store: Store, clock: ManualClock) -> None:
    save(store)
    before = store.constellation("c1")
    clock.advance(5)
    store.append_events([event(1)])
    assert store.constellation("c1") == before


def test_nested_payloads_round_trip(store: Store, db_path: Path) -> None:
    payload: dict[str, Any] = {
        "edits": [{"op": "add_star", "star": {"id": "s", "args": {"x": [1, 2.5, None, True]}}}],
        "output": {"stdout": "line 1\nline 2\n", "unicode": "héllo ✓", "nested": {"a": {"b": {}}}},
        "count": -(2**40),
    }
    store.append_events([EventRecordIn("c1", 1, "edit.applied", 1.5, payload)])
    assert store.events("c1")[0].payload == payload
    with Store.open_path(db_path) as reopened:
        assert reopened.events("c1")[0].payload == payload


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        pytest.param(EventRecordIn("c1", 0, "t", 1.0, {}), "seq", id="seq-zero"),
        pytest.param(EventRecordIn("c1", -3, "t", 1.0, {}), "seq", id="seq-negative"),
        pytest.param(EventRecordIn("c1", True, "t", 1.0, {}), "seq", id="seq-bool"),
        pytest.param(EventRecordIn("c1", 3, "t", math.nan, {}), "ts", id="ts-nan"),
        pytest.param(EventRecordIn("c1", 3, "t", 1.0, {"x": {1, 2}}), "JSON", id="payload-set"),
        pytest.param(EventRecordIn("c1", 3, "t", 1.0, {"x": math.inf}), "JSON", id="payload-inf"),
    ],
)
def test_a_batch_with_one_bad_event_stores_nothing(
    store: Store, bad: EventRecordIn, match: str
) -> None:
    with pytest.raises(StoreInvalidData, match=match):
        store.append_events([event(1), event(2), bad, event(4)])
    assert store.events("c1") == []
    assert store.constellation("c1") is None


def test_last_seq(store: Store) -> None:
    assert store.last_seq() == 0
    store.append_events([event(3, "a"), event(9, "b"), event(4, "a")])
    assert store.last_seq() == 9
    assert store.last_seq("a") == 4
    assert store.last_seq("nope") == 0


def test_ten_thousand_events_in_one_call(store: Store) -> None:
    save(store)
    store.append_events(
        [event(seq, star_id=f"s{seq % 17}", output={"n": seq}) for seq in range(1, 10_001)]
    )
    rows = store.events("c1")
    assert len(rows) == 10_000
    assert seqs(rows) == list(range(1, 10_001))
    assert rows[-1].payload == {"star_id": "s4", "output": {"n": 10_000}}
    assert len(store.events("c1", after_seq=9_990)) == 10


def test_two_stores_on_one_file_write_concurrently(db_path: Path) -> None:
    writers, batches = 2, 100
    Store.open_path(db_path).close()
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(index: int) -> None:
        cid = f"writer-{index}"
        try:
            with Store.open_path(db_path) as store:
                barrier.wait()
                for batch in range(batches):
                    store.append_events([event(2 * batch + 1, cid), event(2 * batch + 2, cid)])
                    store.save_constellation(
                        cid, name=cid, status="running", version=batch, snapshot={"b": batch}
                    )
                    store.constellations()  # readers interleave with the other writer
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store.open_path(db_path) as store:
        for index in range(writers):
            assert seqs(store.events(f"writer-{index}")) == list(range(1, 2 * batches + 1))
            row = store.constellation(f"writer-{index}")
            assert row is not None
            assert row.version == batches - 1


WRITER = """
import sys
from memory import EventRecordIn, Store

path, cid = sys.argv[1], sys.argv[2]
with Store.open_path(path) as store:
    for seq in range(1, 201):
        store.append_events([EventRecordIn(cid, seq, "t", float(seq), {"seq": seq})])
"""


def test_two_processes_on_one_file_write_concurrently(db_path: Path) -> None:
    Store.open_path(db_path).close()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(db_path), f"proc-{index}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    with Store.open_path(db_path) as store:
        for index in range(2):
            assert seqs(store.events(f"proc-{index}")) == list(range(1, 201))
