"""The result ledger (exactly-once storage of at-least-once results) and migration 0001 → 0002."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from alembic import command

from memory import ResultRow, Store, StoreClosed, StoreInvalidData
from memory.migrate import alembic_config, head_revision, known_revisions

if TYPE_CHECKING:
    from conftest import ManualClock

ROOT = Path(__file__).resolve().parents[2]
OUTPUT: dict[str, Any] = {
    "status": "succeeded",
    "output": {"stdout": "Filesystem  Size\n/dev/sda1  100G\n", "exit_code": 0, "x": [1.5, None]},
    "error": None,
    "unicode": "héllo ✓ 日本語",
}


def record(
    store: Store,
    star: str = "usage",
    attempt: int = 1,
    cid: str = "c1",
    *,
    device: str = "laptop",
    status: str = "succeeded",
    payload: dict[str, Any] | None = None,
) -> bool:
    return store.record_result(
        cid,
        star,
        attempt,
        device=device,
        status=status,
        payload={"star": star, "attempt": attempt} if payload is None else payload,
    )


def keys(rows: list[ResultRow]) -> list[tuple[str, int]]:
    return [(row.star_id, row.attempt) for row in rows]


def test_a_recorded_result_reads_back(store: Store, clock: ManualClock) -> None:
    assert record(store, payload=OUTPUT)
    assert store.result("c1", "usage", 1) == ResultRow(
        constellation_id="c1",
        star_id="usage",
        attempt=1,
        device="laptop",
        status="succeeded",
        payload=OUTPUT,
        received_at=clock.now,
    )


def test_an_unknown_result_is_none(store: Store) -> None:
    assert store.result("c1", "usage", 1) is None
    record(store)
    assert store.result("c1", "usage", 2) is None
    assert store.result("c1", "other", 1) is None
    assert store.result("c2", "usage", 1) is None


def test_a_second_copy_is_not_new_and_changes_nothing(store: Store, clock: ManualClock) -> None:
    assert record(store, payload={"copy": 1})
    first = store.result("c1", "usage", 1)
    clock.advance(30)
    assert not record(store, payload={"copy": 2}, device="pi", status="failed")
    assert not record(store, payload={"copy": 1})
    assert store.result("c1", "usage", 1) == first
    assert len(store.results("c1")) == 1


def test_each_attempt_is_its_own_result(store: Store) -> None:
    assert record(store, attempt=1, status="failed")
    assert record(store, attempt=2, status="succeeded")
    assert not record(store, attempt=1)
    rows = store.results("c1")
    assert [(row.attempt, row.status) for row in rows] == [(1, "failed"), (2, "succeeded")]


def test_the_same_star_in_two_constellations_is_two_results(store: Store) -> None:
    assert record(store, cid="c1")
    assert record(store, cid="c2")
    assert keys(store.results("c1")) == [("usage", 1)]
    assert keys(store.results("c2")) == [("usage", 1)]


def test_a_result_needs_no_constellation_row(store: Store) -> None:
    assert record(store, cid="never-saved")
    assert store.result("never-saved", "usage", 1) is not None
    assert store.constellation("never-saved") is None  # no placeholder either
    assert store.constellations() == []


def test_results_list_in_the_order_they_arrived(store: Store, clock: ManualClock) -> None:
    record(store, "b")
    clock.advance()
    record(store, "a")
    clock.advance()
    record(store, "c", 2)
    record(store, "c", 1)  # same instant: by star, then attempt
    record(store, "a", 2)
    assert keys(store.results("c1")) == [("b", 1), ("a", 1), ("a", 2), ("c", 1), ("c", 2)]


def test_an_unknown_constellation_has_no_results(store: Store) -> None:
    record(store, cid="c1")
    assert store.results("nope") == []


def test_results_survive_reopening(store: Store, db_path: Path) -> None:
    record(store, payload=OUTPUT)
    before = store.results("c1")
    store.close()
    with Store.open_path(db_path) as reopened:
        assert reopened.results("c1") == before
        assert not record(reopened, payload=OUTPUT)  # still a duplicate after a restart


@pytest.mark.parametrize(
    ("attempt", "payload", "match"),
    [
        pytest.param(0, {}, "attempt", id="attempt-zero"),
        pytest.param(-1, {}, "attempt", id="attempt-negative"),
        pytest.param(True, {}, "attempt", id="attempt-bool"),
        pytest.param(1.0, {}, "attempt", id="attempt-float"),
        pytest.param(1, {"x": math.nan}, "JSON", id="payload-nan"),
        pytest.param(1, {"x": {1, 2}}, "JSON", id="payload-set"),
        pytest.param(1, ["a", "list"], "dict", id="payload-list"),
        pytest.param(1, '{"a": 1}', "dict", id="payload-str"),
    ],
)
def test_bad_results_are_refused_and_store_nothing(
    store: Store, attempt: Any, payload: Any, match: str
) -> None:
    with pytest.raises(StoreInvalidData, match=match):
        store.record_result("c1", "usage", attempt, device="d", status="s", payload=payload)
    assert store.results("c1") == []


@pytest.mark.parametrize(
    ("device", "status", "match"),
    [
        pytest.param("", "succeeded", "device", id="empty-device"),
        pytest.param("laptop", "", "status", id="empty-status"),
        pytest.param(None, "succeeded", "device", id="no-device"),
    ],
)
def test_a_result_names_its_device_and_status(
    store: Store, device: Any, status: Any, match: str
) -> None:
    with pytest.raises(StoreInvalidData, match=match):
        store.record_result("c1", "usage", 1, device=device, status=status, payload={})
    assert store.results("c1") == []


def test_a_result_is_committed_before_record_result_returns(store: Store, db_path: Path) -> None:
    record(store, payload=OUTPUT)
    with sqlite3.connect(db_path) as other:  # another connection, while the store stays open
        rows = other.execute("SELECT star_id, attempt, payload FROM results").fetchall()
    assert rows == [("usage", 1, json.dumps(OUTPUT, ensure_ascii=False, separators=(",", ":")))]


KILLED_WRITER = """
import os, signal, sys
from memory import Store

store = Store.open_path(sys.argv[1])
for attempt in range(1, 4):
    assert store.record_result("c1", "usage", attempt, device="d", status="ok",
                               payload={"n": attempt})
os.kill(os.getpid(), signal.SIGKILL)  # no close, no cleanup: a crash right after returning
"""


def test_a_recorded_result_survives_the_process_being_killed(db_path: Path) -> None:
    Store.open_path(db_path).close()
    process = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(db_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert process.returncode == -9, process.stderr
    with Store.open_path(db_path) as store:
        assert [row.payload for row in store.results("c1")] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_racing_copies_of_a_result_store_it_exactly_once(db_path: Path) -> None:
    threads_count, results_count = 4, 50
    Store.open_path(db_path).close()
    barrier = threading.Barrier(threads_count)
    new: list[list[tuple[str, int]]] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []

    def deliver(index: int) -> None:
        try:
            with Store.open_path(db_path) as store:
                barrier.wait()
                for n in range(results_count):
                    if record(store, f"s{n}", payload={"by": index}):
                        new[index].append((f"s{n}", 1))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    winners = sorted(key for found in new for key in found)
    assert winners == sorted((f"s{n}", 1) for n in range(results_count))  # each new once
    with Store.open_path(db_path) as store:
        rows = store.results("c1")
        assert len(rows) == results_count
        for row in rows:  # the stored copy is the one whose caller was told it was new
            assert (row.star_id, 1) in new[row.payload["by"]]


DELIVERER = """
import sys
from memory import Store

path = sys.argv[1]
new = 0
with Store.open_path(path) as store:
    for n in range(100):
        new += store.record_result("c1", f"s{n}", 1, device="d", status="ok", payload={"n": n})
print(new)
"""


def test_two_processes_delivering_the_same_results_store_each_once(db_path: Path) -> None:
    Store.open_path(db_path).close()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DELIVERER), str(db_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    counts = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        counts.append(int(stdout))
    assert sum(counts) == 100
    with Store.open_path(db_path) as store:
        assert len(store.results("c1")) == 100


def test_a_closed_store_refuses_result_calls(db_path: Path) -> None:
    store = Store.open_path(db_path)
    store.close()
    with pytest.raises(StoreClosed):
        record(store)
    with pytest.raises(StoreClosed):
        store.result("c1", "usage", 1)
    with pytest.raises(StoreClosed):
        store.results("c1")


# -- migration 0001 → 0002 ----------------------------------------------------------------------


def revisions(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


@pytest.fixture
def file_at_0001(db_path: Path) -> Path:
    """A database as the previous release left it: revision 0001, with a constellation and
    two events in it."""
    db_path.parent.mkdir(parents=True)
    command.upgrade(alembic_config(f"sqlite:///{db_path}"), "0001")
    with sqlite3.connect(db_path) as connection:
        connection.execute(
            "INSERT INTO constellations (id, name, status, version, created_at, updated_at, "
            "finished_at, snapshot, reason) VALUES ('old', 'disk-report', 'succeeded', 3, "
            '10.0, 20.0, 20.0, \'{"stars": ["usage"]}\', NULL)'
        )
        connection.executemany(
            "INSERT INTO events (constellation_id, seq, type, ts, payload) VALUES (?, ?, ?, ?, ?)",
            [
                ("old", 1, "constellation.submitted", 10.0, "{}"),
                ("old", 2, "star.finished", 15.0, '{"ok": true}'),
            ],
        )
    assert revisions(db_path) == ["0001"]
    assert "devices" not in tables(db_path)
    return db_path


def test_0002_follows_0001() -> None:
    assert {"0001", "0002"} <= known_revisions()  # the head itself: test_migration_0003.py


def test_opening_a_0001_file_migrates_it_and_keeps_its_data(file_at_0001: Path) -> None:
    with Store.open_path(file_at_0001) as store:
        assert revisions(file_at_0001) == [head_revision()]
        row = store.constellation("old")
        assert row is not None
        assert (row.name, row.status, row.version, row.snapshot) == (
            "disk-report",
            "succeeded",
            3,
            {"stars": ["usage"]},
        )
        assert [(e.seq, e.payload) for e in store.events("old")] == [(1, {}), (2, {"ok": True})]
        store.enroll_device("laptop", salt="00" * 16, key="11" * 32)
        assert store.device_key("laptop") == ("00" * 16, "11" * 32)
        assert record(store, cid="old")
        assert keys(store.results("old")) == [("usage", 1)]
        store.append_events([])  # the old tables still take writes
        assert store.last_seq("old") == 2


def test_a_device_row_written_by_hand_gets_the_default_state(file_at_0001: Path) -> None:
    Store.open_path(file_at_0001).close()
    with sqlite3.connect(file_at_0001) as connection:
        connection.execute(
            "INSERT INTO devices (name, salt, key, created_at) VALUES ('pi', '00', '11', 1.0)"
        )
    with Store.open_path(file_at_0001) as store:
        assert [(row.name, row.state) for row in store.devices()] == [("pi", "offline")]


def test_downgrading_to_0001_drops_the_new_tables_and_keeps_the_rest(file_at_0001: Path) -> None:
    with Store.open_path(file_at_0001) as store:
        store.enroll_device("laptop", salt="00", key="11")
        record(store, cid="old")
    config = alembic_config(f"sqlite:///{file_at_0001}")
    command.downgrade(config, "0001")
    assert revisions(file_at_0001) == ["0001"]
    assert tables(file_at_0001) == {"alembic_version", "constellations", "events"}
    with Store.open_path(file_at_0001) as store:  # and upgrading again starts them empty
        assert revisions(file_at_0001) == [head_revision()]
        assert store.devices() == []
        assert store.results("old") == []
        assert len(store.events("old")) == 2
