"""The device's durable outbox, on real files: restarts, order, replacement, other processes,
locks and damaged files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devices.outbox import (
    FORMAT_VERSION,
    Outbox,
    OutboxCorrupt,
    OutboxError,
    OutboxKey,
    OutboxLocked,
)

ROOT = Path(__file__).resolve().parents[2]


def payload(key: OutboxKey, **extra: Any) -> str:
    constellation_id, star_id, attempt = key
    return json.dumps(
        {
            "constellation_id": constellation_id,
            "star_id": star_id,
            "attempt": attempt,
            "status": "succeeded",
            "output": {"stdout": "ok\n", **extra},
            "error": None,
        }
    )


K1: OutboxKey = ("c1", "usage", 1)
K2: OutboxKey = ("c1", "save", 1)
K3: OutboxKey = ("c2", "usage", 2)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "device-data" / "outbox.db"


@pytest.fixture
def outbox(path: Path) -> Iterator[Outbox]:
    with Outbox.open(path) as opened:
        yield opened


def run(script: str, *args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    if check_rc is not None:
        assert process.returncode == check_rc, process.stderr
    return process


# -- basics ---------------------------------------------------------------------------------------


def test_a_new_outbox_is_empty_and_creates_its_file_and_directory(path: Path) -> None:
    assert not path.parent.exists()
    with Outbox.open(path) as outbox:
        assert len(outbox) == 0
        assert outbox.pending() == []
        assert outbox.path == path
    assert path.is_file()


def test_put_then_pending(outbox: Outbox) -> None:
    outbox.put(K1, payload(K1))
    assert outbox.pending() == [(K1, payload(K1))]
    assert len(outbox) == 1
    assert isinstance(outbox.pending()[0][0][2], int)


def test_pending_is_in_insertion_order(outbox: Outbox) -> None:
    keys: list[OutboxKey] = [K3, K1, ("a", "z", 7), K2, ("0", "0", 1)]
    for key in keys:
        outbox.put(key, payload(key))
    assert [key for key, _ in outbox.pending()] == keys


def test_putting_a_key_again_replaces_it_in_place(outbox: Outbox) -> None:
    for key in (K1, K2, K3):
        outbox.put(key, payload(key))
    outbox.put(K1, payload(K1, copy=2))
    outbox.put(K1, payload(K1, copy=3))
    assert outbox.pending() == [(K1, payload(K1, copy=3)), (K2, payload(K2)), (K3, payload(K3))]
    assert len(outbox) == 3


def test_attempts_of_one_star_are_separate_entries(outbox: Outbox) -> None:
    outbox.put(("c1", "s", 1), "one")
    outbox.put(("c1", "s", 2), "two")
    assert outbox.pending() == [(("c1", "s", 1), "one"), (("c1", "s", 2), "two")]


def test_remove(outbox: Outbox) -> None:
    for key in (K1, K2, K3):
        outbox.put(key, payload(key))
    assert outbox.remove(K2)
    assert not outbox.remove(K2)
    assert not outbox.remove(("never", "put", 1))
    assert [key for key, _ in outbox.pending()] == [K1, K3]
    outbox.put(K2, "again")  # removed and put again: now the newest
    assert [key for key, _ in outbox.pending()] == [K1, K3, K2]
    for key in (K1, K2, K3):
        assert outbox.remove(key)
    assert len(outbox) == 0
    outbox.put(K1, "after emptying")
    assert outbox.pending() == [(K1, "after emptying")]


def test_payloads_are_kept_exactly(outbox: Outbox) -> None:
    texts = ["", "not json at all", 'naïve ☃ 日本語 \u0000 "q" \\', "x" * 1_000_000]
    for attempt, text in enumerate(texts, start=1):
        outbox.put(("c", "s", attempt), text)
    assert [text for _, text in outbox.pending()] == texts


@pytest.mark.parametrize(
    ("key", "error"),
    [
        pytest.param(("c", "s", 0), ValueError, id="attempt-zero"),
        pytest.param(("c", "s", -1), ValueError, id="attempt-negative"),
        pytest.param(("c", "s", True), ValueError, id="attempt-bool"),
        pytest.param(("c", "s", "1"), ValueError, id="attempt-str"),
        pytest.param(("c", 3, 1), TypeError, id="star-int"),
        pytest.param(["c", "s", 1], TypeError, id="list"),
        pytest.param(("c", "s"), TypeError, id="two-parts"),
    ],
)
def test_bad_keys_are_refused(outbox: Outbox, key: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        outbox.put(key, "x")
    with pytest.raises(error):
        outbox.remove(key)
    assert len(outbox) == 0


def test_a_payload_must_be_text(outbox: Outbox) -> None:
    with pytest.raises(TypeError, match="str"):
        outbox.put(K1, b"bytes")  # type: ignore[arg-type]
    assert len(outbox) == 0


def test_the_file_is_in_wal_mode_and_writes_are_fully_synchronous(
    path: Path, outbox: Outbox
) -> None:
    outbox.put(K1, "x")
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("PRAGMA user_version").fetchone() == (FORMAT_VERSION,)
    assert outbox._connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


# -- restarts and other processes ----------------------------------------------------------------


def test_entries_survive_close_and_reopen(path: Path) -> None:
    with Outbox.open(path) as outbox:
        for key in (K1, K2, K3):
            outbox.put(key, payload(key))
        outbox.remove(K2)
    for _ in range(2):
        with Outbox.open(path) as outbox:
            assert outbox.pending() == [(K1, payload(K1)), (K3, payload(K3))]
    with Outbox.open(path) as outbox:
        outbox.put(K2, payload(K2))
    with Outbox.open(path) as outbox:
        assert [key for key, _ in outbox.pending()] == [K1, K3, K2]


KILLED = """
import os, signal, sys
from devices.outbox import Outbox

outbox = Outbox.open(sys.argv[1])
for n in range(1, 6):
    outbox.put(("c1", f"s{n}", 1), f"result {n}")
outbox.remove(("c1", "s3", 1))
os.kill(os.getpid(), signal.SIGKILL)  # no close, no cleanup: a crash right after returning
"""


def test_entries_survive_the_process_being_killed(path: Path) -> None:
    run(KILLED, str(path), check_rc=-9)
    assert path.with_name("outbox.db-wal").exists()  # the crash left the WAL behind
    with Outbox.open(path) as outbox:
        assert outbox.pending() == [(("c1", f"s{n}", 1), f"result {n}") for n in (1, 2, 4, 5)]


READER = """
import json, sys
from devices.outbox import Outbox

with Outbox.open(sys.argv[1]) as outbox:
    print(json.dumps([[list(key), text] for key, text in outbox.pending()]))
    if len(sys.argv) > 2:
        outbox.remove(("c1", "usage", 1))
        outbox.put(("from", "child", 1), "hello")
"""


def test_a_second_process_sees_the_entries_while_the_first_has_them_open(
    path: Path, outbox: Outbox
) -> None:
    for key in (K1, K2, K3):
        outbox.put(key, payload(key))
    seen = json.loads(run(READER, str(path)).stdout)
    assert [(tuple(key), text) for key, text in seen] == outbox.pending()
    run(READER, str(path), "and-write")  # and what it writes, this one sees
    assert outbox.pending() == [
        (K2, payload(K2)),
        (K3, payload(K3)),
        (("from", "child", 1), "hello"),
    ]


def test_threads_share_one_outbox(outbox: Outbox) -> None:
    threads_count, puts = 4, 50
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for n in range(puts):
                outbox.put((f"t{index}", f"s{n}", 1), str(n))
                if n % 2:
                    assert outbox.remove((f"t{index}", f"s{n}", 1))
                outbox.pending()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(outbox) == threads_count * puts // 2
    for index in range(threads_count):
        mine = [key[1] for key, _ in outbox.pending() if key[0] == f"t{index}"]
        assert mine == [f"s{n}" for n in range(0, puts, 2)]  # each thread's order is kept


def test_two_outboxes_on_one_file(path: Path) -> None:
    with Outbox.open(path) as first, Outbox.open(path) as second:
        first.put(K1, "a")
        second.put(K2, "b")
        assert first.pending() == second.pending() == [(K1, "a"), (K2, "b")]
        assert second.remove(K1)
        assert len(first) == 1


# -- closing ---------------------------------------------------------------------------------------


def test_a_closed_outbox_refuses_work_and_close_is_idempotent(path: Path) -> None:
    outbox = Outbox.open(path)
    outbox.close()
    outbox.close()
    assert outbox.closed
    for action in (
        lambda: outbox.put(K1, "x"),
        outbox.pending,
        lambda: outbox.remove(K1),
        lambda: len(outbox),
    ):
        with pytest.raises(OutboxError, match=rf"{path}.*closed.*Outbox\.open"):
            action()


def test_the_context_manager_closes(path: Path) -> None:
    with Outbox.open(path) as outbox:
        assert not outbox.closed
    assert outbox.closed


# -- files that cannot be used -----------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is a text file, not an SQLite database\n" * 200)
    with pytest.raises(OutboxCorrupt) as caught:
        Outbox.open(path)
    message = str(caught.value)
    assert str(path) in message
    assert "move the file aside" in message
    assert "outbox.db-wal" in message
    assert caught.value.path == path
    assert isinstance(caught.value, OutboxError)
    assert path.read_bytes().startswith(b"this is a text file")  # left as it was


def test_a_damaged_outbox_is_corrupt(path: Path) -> None:
    with Outbox.open(path) as outbox:
        for n in range(200):
            outbox.put(("c", f"s{n}", 1), "x" * 100)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096 + 8 : 8192] = b"\xa5" * (4096 - 8)  # a table page, past its header
    data[100:4096] = b"\xff" * (4096 - 100)  # and the schema page
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxCorrupt, match=rf"{path}.*(malformed|not a database)"):
        Outbox.open(path)


def test_a_damaged_data_page_is_found_when_opening(path: Path) -> None:
    with Outbox.open(path) as outbox:
        for n in range(200):
            outbox.put(("c", f"s{n}", 1), "x" * 100)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[-4096 + 8 :] = b"\xa5" * (4096 - 8)  # the last page, past its header
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxCorrupt, match=str(path)):
        Outbox.open(path)


def test_another_programs_database_is_not_an_outbox(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE constellations (id TEXT)")
    with pytest.raises(OutboxCorrupt, match="some other program"):
        Outbox.open(path)
    with sqlite3.connect(path) as connection:  # not touched
        tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("constellations",)]


def test_an_outbox_from_a_newer_version_is_refused(path: Path) -> None:
    Outbox.open(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    with pytest.raises(OutboxError, match=rf"{path}.*format version 2.*upgrade Orrery"):
        Outbox.open(path)


def test_an_outbox_missing_its_table_is_corrupt(path: Path) -> None:
    Outbox.open(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE outbox")
    with pytest.raises(OutboxCorrupt, match="table is missing"):
        Outbox.open(path)


def test_a_directory_is_not_an_outbox(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match=str(tmp_path)) as caught:
        Outbox.open(tmp_path)
    assert type(caught.value) is OutboxError


def test_a_directory_that_cannot_be_created_gives_an_outbox_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(OutboxError, match="cannot create the directory"):
        Outbox.open(tmp_path / "file" / "data" / "outbox.db")


def test_opening_an_outbox_locked_by_another_process_gives_outbox_locked(path: Path) -> None:
    path.parent.mkdir(parents=True)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)  # a new file, not yet WAL
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OutboxLocked) as caught:
            Outbox.open(path, busy_timeout_ms=100)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert caught.value.waited_ms == 100
    assert str(path) in str(caught.value)
    assert "--data-dir" in str(caught.value)
    with Outbox.open(path) as outbox:  # once the lock is gone, it opens
        assert len(outbox) == 0


def test_writing_while_another_process_holds_the_lock_gives_outbox_locked(path: Path) -> None:
    with Outbox.open(path, busy_timeout_ms=100) as outbox:
        outbox.put(K1, "first")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(OutboxLocked, match=str(path)):
                outbox.put(K2, "second")
            with pytest.raises(OutboxLocked):
                outbox.remove(K1)
            assert outbox.pending() == [(K1, "first")]  # WAL: reading does not wait
            with Outbox.open(path, busy_timeout_ms=100) as again:  # nor does opening
                assert len(again) == 1
            other.execute("ROLLBACK")
        finally:
            other.close()
        outbox.put(K2, "second")
        assert len(outbox) == 2


def test_a_negative_busy_timeout_is_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="busy_timeout_ms"):
        Outbox.open(path, busy_timeout_ms=-1)
