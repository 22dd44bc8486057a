"""Orrery: memory. For now the durable store of the orchestrator's state (see `memory.store`).

Imports nothing of Orrery's other packages: it stores plain data (str, int, float and
JSON-serialisable dicts).
"""

from memory.errors import (
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreInvalidData,
    StoreLocked,
    StoreVersionTooNew,
)
from memory.store import (
    PLACEHOLDER_STATUS,
    ConstellationRow,
    EventRecordIn,
    EventRow,
    Store,
)

__all__ = [
    "PLACEHOLDER_STATUS",
    "ConstellationRow",
    "EventRecordIn",
    "EventRow",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "StoreInvalidData",
    "StoreLocked",
    "StoreVersionTooNew",
]
