"""Orrery: memory. For now the durable store of the orchestrator's state (see `memory.store`):
constellations, their event log, enrolled devices and the result ledger.

Imports nothing of Orrery's other packages: it stores plain data (str, int, float and
JSON-serialisable dicts).
"""

from memory.errors import (
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreInvalidData,
    StoreLocked,
    StoreReadOnly,
    StoreVersionTooNew,
    UnknownMemory,
)
from memory.store import (
    DEVICE_OFFLINE,
    PLACEHOLDER_STATUS,
    ConstellationRow,
    DeviceRow,
    EventRecordIn,
    EventRow,
    ResultRow,
    Store,
)

__all__ = [
    "DEVICE_OFFLINE",
    "PLACEHOLDER_STATUS",
    "ConstellationRow",
    "DeviceRow",
    "EventRecordIn",
    "EventRow",
    "ResultRow",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "StoreInvalidData",
    "StoreLocked",
    "StoreReadOnly",
    "StoreVersionTooNew",
    "UnknownMemory",
]
