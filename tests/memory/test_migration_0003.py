"""Migration 0002 → 0003 (the task memory): a data dir of the release before it upgrades
in place, with its history (runs, events, devices, results) intact."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic import command

from memory import Store
from memory.migrate import alembic_config, head_revision
from memory.tree import OpenRequest, RecordDuration, TaskTree

MEMORY_TABLES = {"memory_nodes", "memory_revisions", "memory_requests", "tool_durations"}


def revisions(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


def release_0002_data_dir(root: Path) -> Path:
    """A data dir as the release with schema 0002 leaves it: orrery.db at revision 0002
    holding a finished run (its snapshot and events), an enrolled device and a result."""
    root.mkdir(parents=True)
    db = root / "orrery.db"
    command.upgrade(alembic_config(f"sqlite:///{db}"), "0002")
    snapshot = {
        "id": "old1",
        "name": "disk-report",
        "status": "succeeded",
        "version": 2,
        "stars": {"usage": {"id": "usage", "tool": "shell.run", "status": "succeeded"}},
    }
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO constellations (id, name, status, version, created_at, updated_at, "
            "finished_at, snapshot, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("old1", "disk-report", "succeeded", 2, 10.0, 20.0, 20.0, json.dumps(snapshot), None),
        )
        connection.executemany(
            "INSERT INTO events (constellation_id, seq, type, ts, payload) VALUES (?, ?, ?, ?, ?)",
            [
                ("old1", 1, "constellation.submitted", 10.0, '{"type": "constellation.submitted"}'),
                ("old1", 2, "star.finished", 15.0, '{"type": "star.finished"}'),
                ("old1", 3, "constellation.finished", 20.0, '{"type": "constellation.finished"}'),
            ],
        )
        connection.execute(
            "INSERT INTO devices (name, salt, key, created_at, labels, last_seen, state) "
            "VALUES ('nas', '00', '11', 5.0, '[\"storage\"]', 19.0, 'offline')"
        )
        connection.execute(
            "INSERT INTO results (constellation_id, star_id, attempt, device, status, payload, "
            "received_at) VALUES ('old1', 'usage', 1, 'nas', 'succeeded', '{\"ok\": 1}', 15.0)"
        )
    assert revisions(db) == ["0002"]
    assert not MEMORY_TABLES & tables(db)
    return root


@pytest.fixture
def old_data_dir(tmp_path: Path) -> Path:
    return release_0002_data_dir(tmp_path / "data")


def test_head_is_0003() -> None:
    assert head_revision() == "0003"


def test_a_0002_data_dir_upgrades_in_place_with_its_history_intact(old_data_dir: Path) -> None:
    db = old_data_dir / "orrery.db"
    with Store.open_path(db) as store:
        assert revisions(db) == ["0003"]
        assert tables(db) >= MEMORY_TABLES
        [row] = store.constellations()
        assert (row.id, row.name, row.status, row.version) == (
            "old1",
            "disk-report",
            "succeeded",
            2,
        )
        assert row.snapshot["stars"]["usage"]["tool"] == "shell.run"
        assert [e.type for e in store.events("old1")] == [
            "constellation.submitted",
            "star.finished",
            "constellation.finished",
        ]
        [device] = store.devices()
        assert (device.name, device.labels, device.last_seen) == ("nas", ["storage"], 19.0)
        assert store.device_key("nas") == ("00", "11")
        result = store.result("old1", "usage", 1)
        assert result is not None
        assert result.payload == {"ok": 1}
        # The new tables work on the upgraded file, and the old ones still take writes.
        tree = TaskTree(store)
        assert tree.count_requests() == 0
        tree.apply([OpenRequest("r-new", "check the disks", "request")])
        tree.apply([RecordDuration("shell.run", "nas", 2.0)])
        assert tree.request("r-new") is not None
        store.save_constellation("new1", name="n", status="running", version=1, snapshot={})
    with Store.open_path(db) as store:  # reopening does not migrate again
        assert revisions(db) == ["0003"]
        assert len(store.constellations()) == 2


def test_downgrading_to_0002_drops_only_the_memory(old_data_dir: Path) -> None:
    db = old_data_dir / "orrery.db"
    with Store.open_path(db) as store:
        TaskTree(store).apply([OpenRequest("r-new", "check the disks", "request")])
    command.downgrade(alembic_config(f"sqlite:///{db}"), "0002")
    assert revisions(db) == ["0002"]
    assert not MEMORY_TABLES & tables(db)
    with Store.open_path(db) as store:
        assert revisions(db) == ["0003"]
        assert TaskTree(store).count_requests() == 0
        assert len(store.events("old1")) == 3
