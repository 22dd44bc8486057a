"""The store fails (a full or read-only disk, simulated at the store boundary: every write
raises the `StoreError` SQLite's "database or disk is full" becomes) while a star's result
arrives from a real `orrery device` process. The result is not acknowledged, so the device
keeps it in its outbox; the orchestrator closes the connection, the device reconnects and
sends it again until the store takes it. Nothing is lost, nothing runs twice, and the run's
record, held meanwhile, is written once the store works again."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from agents.constellation import ConstellationStatus
from app.device_processes import DeviceProcesses
from memory import Store, StoreError
from protocol.session import ServerConfig
from tests.served import Served
from tests.system.faults import lines, plan, traced_star, wait_for

pytestmark = pytest.mark.slow


class FailingStore(Store):
    """A store whose writes fail while `failing` is set (counted in `failures`)."""

    failing = False
    failures = 0

    def _fail(self) -> None:
        if self.failing:
            self.failures += 1
            raise StoreError(f"{self.location}: database or disk is full", location=self.location)

    def record_result(self, *args: Any, **kwargs: Any) -> bool:
        self._fail()
        return super().record_result(*args, **kwargs)

    def append_events(self, *args: Any, **kwargs: Any) -> None:
        self._fail()
        super().append_events(*args, **kwargs)

    def save_constellation(self, *args: Any, **kwargs: Any) -> None:
        self._fail()
        super().save_constellation(*args, **kwargs)


async def test_a_result_that_cannot_be_stored_is_sent_again_and_kept_once(
    tmp_path: Path, traces: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orrery")
    shared, pids = traces
    with FailingStore.open_path(tmp_path / "orrery.db") as store:
        config = ServerConfig(heartbeat_interval=2.0, heartbeat_misses=3)
        fleet = DeviceProcesses(store, tmp_path / "devices")
        try:
            async with Served(store, tmp_path, config=config) as orchestra:
                fleet.add("writer", ["worker"])
                fleet.start("writer", orchestra.url)
                await orchestra.wait_for_devices(1, within=60)
                star = traced_star("effect", shared, pids, 0.5)
                job = plan({"name": "disk-full", "stars": [star]})
                running = asyncio.create_task(orchestra.run(job))
                await wait_for((pids / "effect").exists, what="the star's shell to start")
                store.failing = True  # the disk fills while the star runs
                await wait_for(lambda: store.failures >= 2, what="the result to be refused")
                store.failing = False  # room again: the next copy is stored
                final = await asyncio.wait_for(running, 60)
        finally:
            await asyncio.to_thread(fleet.stop_all, 10)
            device_log = fleet.devices["writer"].log_path.read_text()

        assert final.status is ConstellationStatus.SUCCEEDED, final.reason
        assert [a.number for a in final.stars["effect"].attempts] == [1]
        assert [(r.star_id, r.attempt) for r in store.results(final.id)] == [("effect", 1)]
        assert lines(shared) == ["effect"]
        said = [r.getMessage() for r in caplog.records if r.name == "orrery.aip.dispatcher"]
        assert any("could not be stored" in line for line in said), said
        # The orchestrator closed the connection itself: the device came back at once, and
        # was never refused as a second connection of a device still connected.
        assert "already_connected" not in device_log
        row = store.constellation(final.id)
        assert row is not None
        assert row.status == "succeeded"  # the held record was written after all
        assert [e.type for e in store.events(final.id)][-1] == "constellation.finished"
