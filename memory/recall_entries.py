"""The documents of the recall index and its answers, as plain data (no chromadb here).

`REQUESTS` and `PATTERNS` name the two collections (`memory.recall_index`); an `Entry`
is one document to index, a `Hit` one result of a query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REQUESTS = "orrery-requests"
PATTERNS = "orrery-star-patterns"
Metadata = Mapping[str, str | int | float | bool]


@dataclass(frozen=True, slots=True)
class Entry:
    """One document to index: its id, text and metadata."""

    id: str
    text: str
    metadata: Metadata


@dataclass(frozen=True, slots=True)
class Hit:
    """One result of a query: the document's id, its cosine distance, its metadata."""

    id: str
    distance: float
    metadata: dict[str, Any]

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance
