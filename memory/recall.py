"""Semantic recall over the task memory: finished requests and star patterns by meaning.

    recall = TaskRecall(TaskTree(store), data_dir / "recall")
    recall.catch_up()                                  # index what finished since
    for found in recall.search("back up my photos to the NAS", limit=3):
        print(found.similarity, found.request.text, found.request.summary)

The tree in the store is the source of truth; the recall index (`memory.recall_index`,
ChromaDB in DATA_DIR/recall) is derived from it and can be rebuilt from it. A request is
indexed once its summary is written (`to_index`); a forgotten one is taken out. Search
results are joined with the tree, so a request forgotten by any process is never
returned, even before the index has caught up.

Synchronous and blocking (embedding a query takes milliseconds, opening the index the
first time a second or two): call it from a worker thread in async code. Importing this
module is light; chromadb, numpy and onnxruntime load when a `TaskRecall` is made.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory.recall_entries import PATTERNS, REQUESTS, Entry, Hit
from memory.tree import RequestRecord, TaskTree

if TYPE_CHECKING:
    from memory.recall_index import LocalEmbedding, RecallIndex

log = logging.getLogger("orrery.memory.recall")

MAX_PATTERN_STARS = 20
"""At most this many stars of one request become star patterns."""


@dataclass(frozen=True, slots=True)
class Recollection:
    """A remembered request and how close it is to what was asked (cosine, -1..1)."""

    request: RequestRecord
    similarity: float


@dataclass(frozen=True, slots=True)
class StarPattern:
    """A star that ran before: its tool, title, device, status, and the request it served."""

    request_id: str
    star_id: str
    tool: str
    title: str
    device: str
    status: str
    similarity: float


class TaskRecall:
    """Search, index and forget remembered requests; see the module docstring."""

    def __init__(
        self, tree: TaskTree, directory: Path, embedding: LocalEmbedding | None = None
    ) -> None:
        from memory.recall_index import RecallIndex  # chromadb: only once recall is used

        self.tree = tree
        self.index: RecallIndex = RecallIndex(directory, embedding)

    def catch_up(self, limit: int = 1000) -> int:
        """Bring the index up to the tree: add what finished, drop what was forgotten.
        Returns how many requests changed; 0 when another process writes the index."""
        if not self.index.try_write():
            return 0
        done = 0
        while True:
            pending = self.tree.to_index(limit=min(limit - done, 200))
            if not pending:
                return done
            self._index(pending)
            done += len(pending)
            if done >= limit:
                return done

    def _index(self, requests: Sequence[RequestRecord]) -> None:
        keep = [r for r in requests if not r.forgotten and r.summary is not None]
        drop = [r.id for r in requests if r.forgotten]
        if drop:
            self.index.delete(REQUESTS, ids=drop)
            for request_id in drop:
                self.index.delete(PATTERNS, where={"request_id": request_id})
        if keep:
            self.index.upsert(REQUESTS, [request_entry(r) for r in keep])
            for request in keep:  # a request that ran again replaces its old stars
                self.index.delete(PATTERNS, where={"request_id": request.id})
            patterns = [entry for r in keep for entry in pattern_entries(r)]
            self.index.upsert(PATTERNS, patterns)
        self.tree.mark_indexed([r.id for r in requests])
        log.info("recall: indexed %d request(s), dropped %d", len(keep), len(drop))

    def search(
        self,
        text: str,
        limit: int = 5,
        *,
        status: str | None = None,
        exclude: Collection[str] = (),
    ) -> list[Recollection]:
        """The remembered requests nearest in meaning to `text`, nearest first (of one
        `status` if given; never forgotten ones, nor those in `exclude`)."""
        if limit < 1 or not text.strip():
            return []
        where = {"status": status} if status else None
        hits = self.index.query(REQUESTS, text, limit + len(exclude) + 5, where)
        return self._joined(hits, limit, exclude)

    def search_vector(
        self,
        vector: Sequence[float],
        limit: int = 5,
        *,
        status: str | None = None,
        exclude: Collection[str] = (),
    ) -> list[Recollection]:
        """As `search`, for a query already embedded."""
        where = {"status": status} if status else None
        hits = self.index.query_vector(REQUESTS, vector, limit + len(exclude) + 5, where)
        return self._joined(hits, limit, exclude)

    def _joined(self, hits: list[Hit], limit: int, exclude: Collection[str]) -> list[Recollection]:
        wanted = [hit for hit in hits if hit.id not in exclude]
        records = self.tree.requests([hit.id for hit in wanted])
        found = [
            Recollection(records[hit.id], round(hit.similarity, 4))
            for hit in wanted
            if hit.id in records and not records[hit.id].forgotten
        ]
        return found[:limit]

    def patterns(self, text: str, limit: int = 5, tool: str | None = None) -> list[StarPattern]:
        """Stars of finished requests nearest in meaning to `text` (of one `tool`)."""
        if limit < 1 or not text.strip():
            return []
        where = {"tool": tool} if tool else None
        hits = self.index.query(PATTERNS, text, limit + 5, where)
        records = self.tree.requests(list({str(h.metadata.get("request_id")) for h in hits}))
        found = []
        for hit in hits:
            request_id = str(hit.metadata.get("request_id", ""))
            record = records.get(request_id)
            if record is None or record.forgotten:
                continue
            found.append(
                StarPattern(
                    request_id=request_id,
                    star_id=hit.id.rpartition("/")[2],
                    tool=str(hit.metadata.get("tool", "")),
                    title=str(hit.metadata.get("title", "")),
                    device=str(hit.metadata.get("device", "")),
                    status=str(hit.metadata.get("status", "")),
                    similarity=round(hit.similarity, 4),
                )
            )
        return found[:limit]

    def forget(self, request_id: str) -> bool:
        """Never recall this request again (`UnknownMemory` if there is none): flagged in
        the tree at once, taken out of the index now or by the writer's next catch-up.
        Returns whether it was remembered before (False: already forgotten)."""
        record = self.tree.request(self.tree.resolve(request_id))
        assert record is not None
        self.tree.forget(record.id)
        self.catch_up()
        return not record.forgotten

    def close(self) -> None:
        self.index.close()


def request_entry(request: RequestRecord) -> Entry:
    """A request as a document of the requests collection."""
    summary = request.summary or {}
    plan = summary.get("plan") or {}
    stars = [s for s in plan.get("stars") or [] if isinstance(s, dict)]
    tools = sorted({str(s.get("tool") or "agent.do") for s in stars})
    fleet = [d for d in summary.get("fleet") or [] if isinstance(d, dict)]
    return Entry(
        id=request.id,
        text=request.text,
        metadata={
            "status": request.status,
            "source": request.source,
            "stars": len(stars),
            "tools": ",".join(tools),
            "devices": ",".join(sorted(str(d.get("name", "")) for d in fleet)),
            "finished_at": float(request.finished_at or 0.0),
        },
    )


def pattern_entries(request: RequestRecord) -> list[Entry]:
    """The stars of a finished request's final plan, as star-pattern documents."""
    summary = request.summary or {}
    plan = summary.get("plan") or {}
    outcome: dict[str, Any] = (summary.get("outcome") or {}).get("stars") or {}
    entries = []
    for star in (plan.get("stars") or [])[:MAX_PATTERN_STARS]:
        if not isinstance(star, dict) or not star.get("id"):
            continue
        tool = str(star.get("tool") or "agent.do")
        title = str(star.get("title") or "")
        status = str((outcome.get(str(star["id"])) or {}).get("status") or request.status)
        entries.append(
            Entry(
                id=f"{request.id}/{star['id']}",
                text=f"{tool}: {title or request.text}",
                metadata={
                    "request_id": request.id,
                    "tool": tool,
                    "title": title,
                    "device": _device_name(star.get("on")),
                    "status": status,
                },
            )
        )
    return entries


def _device_name(on: Any) -> str:
    if isinstance(on, str):
        return on
    if isinstance(on, dict) and isinstance(on.get("name"), str):
        return str(on["name"])
    return ""
