"""Adapters that let the AIP dispatcher keep its durable state in the `memory` store."""

from __future__ import annotations

from memory import Store
from protocol.auth import DeviceKey
from protocol.tasks import TaskResult


class StoreLedger:
    """`ResultLedger` over the store's `results` table (idempotent by task and attempt)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, result: TaskResult, device: str) -> bool:
        return self.store.record_result(
            result.constellation_id,
            result.star_id,
            result.attempt,
            device=device,
            status=result.status.value,
            payload=result.model_dump(mode="json"),
        )

    def reported_by(self, constellation_id: str, star_id: str, attempt: int) -> str | None:
        row = self.store.result(constellation_id, star_id, attempt)
        return row.device if row is not None else None


class StoreKeys:
    """`KeyStore` over the store's enrolled devices."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def device_key(self, device: str) -> DeviceKey | None:
        found = self.store.device_key(device)
        if found is None:
            return None
        salt, key = found
        return DeviceKey(device=device, salt=salt, key=key)
