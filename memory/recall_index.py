"""The recall index: persistent ChromaDB collections in DATA_DIR/recall, embedded locally.

Two collections: `orrery-requests` (one document per finished request: its text, with
its status, source, tools and devices as metadata) and `orrery-star-patterns` (one per
star of a finished request: `tool: title`, with the tool, the device and the status).
Embeddings come from `LocalEmbedding`, a chromadb embedding function over
`memory.embedding.MiniLmEmbedder` (registered with chromadb under the name
`orrery-minilm-int8`, so a collection reopened later finds it again); cosine distance.

One process writes at a time. ChromaDB keeps an in-memory HNSW index per process, which
does not see another process's writes, so the first process that writes takes an
exclusive lock on `recall/writer.lock` (held until `close()`) and keeps one client open;
a process that cannot take it (an `orrery serve` holds it) writes nothing — the rows stay
`indexed = false` in the tree and the writer catches up (`memory.recall`) — and reads
through a fresh client each time, which loads what is on disk now. Readers never wait.

Imports chromadb (and through `memory.embedding`, numpy and onnxruntime): import this
module only where recall is needed. Failures are `RecallUnavailable`, one line each.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.config import Settings
from chromadb.errors import NotFoundError
from chromadb.utils.embedding_functions import register_embedding_function

from memory.embedding import MODEL_ID, MiniLmEmbedder
from memory.errors import RecallUnavailable
from memory.recall_entries import Entry, Hit, Metadata

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per data dir is the rule there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("orrery.memory.recall")

LOCK_FILE = "writer.lock"

_shared_embedders: dict[str, MiniLmEmbedder] = {}
_shared_lock = threading.Lock()


def shared_embedder() -> MiniLmEmbedder:
    """One embedder per process (the model takes a moment to load)."""
    with _shared_lock:
        if "default" not in _shared_embedders:
            _shared_embedders["default"] = MiniLmEmbedder()
        return _shared_embedders["default"]


@register_embedding_function
class LocalEmbedding(EmbeddingFunction[Documents]):
    """chromadb's embedding function for Orrery: all-MiniLM-L6-v2 int8, on this machine."""

    def __init__(self, embedder: MiniLmEmbedder | None = None) -> None:
        self._embedder = embedder

    @property
    def embedder(self) -> MiniLmEmbedder:
        if self._embedder is None:
            self._embedder = shared_embedder()
        return self._embedder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return "orrery-minilm-int8"

    def get_config(self) -> dict[str, Any]:
        return {"model": MODEL_ID}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> LocalEmbedding:
        return LocalEmbedding()

    def default_space(self) -> Any:
        return "cosine"

    def supported_spaces(self) -> list[Any]:
        return ["cosine"]


class RecallIndex:
    """The recall collections in `directory`; see the module docstring."""

    def __init__(self, directory: Path, embedding: LocalEmbedding | None = None) -> None:
        self.directory = directory
        self.embedding = embedding or LocalEmbedding()
        self._client: ClientAPI | None = None  # the writer's
        self._collections: dict[str, Collection] = {}  # the writer's, by name
        self._lock_file: IO[bytes] | None = None
        self._guard = threading.RLock()
        self._settings = Settings(anonymized_telemetry=False, allow_reset=False, is_persistent=True)

    # -- writing --------------------------------------------------------------------------------

    @property
    def writer(self) -> bool:
        """Whether this process holds the writer lock (after `try_write`)."""
        return self._client is not None

    def try_write(self) -> bool:
        """Take the writer lock if no other process holds it; whether this one may write."""
        with self._guard:
            if self._client is not None:
                return True
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                handle = open(self.directory / LOCK_FILE, "ab")  # noqa: SIM115 (held open)
            except OSError as exc:
                raise RecallUnavailable(
                    f"cannot open the recall index in {self.directory}: {exc}; give Orrery a "
                    "data directory it can write (--data-dir or ORRERY_HOME)"
                ) from None
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    handle.close()
                    log.info("recall index %s: another process writes it", self.directory)
                    return False
            self._lock_file = handle
            self._client = self._open_client()
            return True

    def upsert(self, collection: str, entries: Sequence[Entry]) -> None:
        """Add or replace documents (the caller holds the writer lock: `try_write`)."""
        if not entries:
            return
        with self._guard, _translated(self.directory):
            target = self._writable(collection)
            target.upsert(
                ids=[e.id for e in entries],
                documents=[e.text for e in entries],
                metadatas=[dict(e.metadata) for e in entries],
            )

    def upsert_vectors(
        self, collection: str, entries: Sequence[Entry], vectors: Sequence[Sequence[float]]
    ) -> None:
        """As `upsert`, with the embeddings already computed (by the same embedder)."""
        if not entries:
            return
        with self._guard, _translated(self.directory):
            target = self._writable(collection)
            target.upsert(
                ids=[e.id for e in entries],
                documents=[e.text for e in entries],
                metadatas=[dict(e.metadata) for e in entries],
                embeddings=cast(Any, vectors),
            )

    def delete(
        self, collection: str, *, ids: Sequence[str] = (), where: Metadata | None = None
    ) -> None:
        with self._guard, _translated(self.directory):
            target = self._writable(collection)
            if ids:
                target.delete(ids=list(ids))
            if where:
                target.delete(where=cast(Any, dict(where)))

    def _writable(self, collection: str) -> Collection:
        if self._client is None:
            raise RecallUnavailable(
                f"the recall index in {self.directory} is written by another process"
            )
        if collection not in self._collections:
            self._collections[collection] = self._client.get_or_create_collection(
                collection,
                embedding_function=cast(Any, self.embedding),
                metadata={"hnsw:space": "cosine"},
            )
        return self._collections[collection]

    # -- reading --------------------------------------------------------------------------------

    def query(
        self, collection: str, text: str, limit: int, where: Metadata | None = None
    ) -> list[Hit]:
        """The `limit` documents nearest to `text` (closest first)."""
        if self._client is None and not (self.directory / "chroma.sqlite3").is_file():
            return []  # nothing was ever indexed: no need to load the model
        vector = self.embedding.embedder.embed([text])[0]
        return self.query_vector(collection, vector.tolist(), limit, where)

    def query_vector(
        self, collection: str, vector: Sequence[float], limit: int, where: Metadata | None = None
    ) -> list[Hit]:
        with self._guard, self._reading(collection) as found:
            if found is None:
                return []
            result = found.query(
                query_embeddings=cast(Any, [list(vector)]),
                n_results=limit,  # fewer when the collection has fewer
                where=cast(Any, dict(where)) if where else None,
                include=cast(Any, ["metadatas", "distances"]),
            )
        ids = result["ids"][0]
        distances = (result.get("distances") or [[]])[0]
        metadatas = (result.get("metadatas") or [[]])[0]
        return [
            Hit(id, float(distance), dict(metadata or {}))
            for id, distance, metadata in zip(ids, distances, metadatas, strict=False)
        ]

    def count(self, collection: str) -> int:
        with self._guard, self._reading(collection) as found:
            return 0 if found is None else found.count()

    @contextlib.contextmanager
    def _reading(self, collection: str) -> Iterator[Collection | None]:
        with _translated(self.directory):
            if self._client is not None:
                yield self._collections.get(collection) or self._collection(
                    self._client, collection
                )
                return
            if not (self.directory / "chroma.sqlite3").is_file():
                yield None  # nothing was ever indexed: do not create anything
                return
            client = self._open_client()  # a fresh one: what is on disk now
            try:
                yield self._collection(client, collection)
            finally:
                cast(Any, client).close()

    def _collection(self, client: ClientAPI, collection: str) -> Collection | None:
        try:
            return client.get_collection(collection, embedding_function=cast(Any, self.embedding))
        except (NotFoundError, ValueError):
            return None

    # -- lifecycle ------------------------------------------------------------------------------

    def _open_client(self) -> ClientAPI:
        with _translated(self.directory):
            return chromadb.PersistentClient(path=str(self.directory), settings=self._settings)

    def close(self) -> None:
        """Release the client and the writer lock. Idempotent."""
        with self._guard:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    cast(Any, self._client).close()
                self._client = None
                self._collections = {}
            if self._lock_file is not None:
                self._lock_file.close()  # closing releases the flock
                self._lock_file = None


@contextlib.contextmanager
def _translated(directory: Path) -> Iterator[None]:
    """chromadb's errors as one-line `RecallUnavailable`s naming the directory."""
    try:
        yield
    except RecallUnavailable:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        hint = "check that it is readable and writable, or move it aside to rebuild it"
        if not os.access(directory, os.W_OK) and directory.exists():
            hint = "it is read-only: make it writable or give Orrery another --data-dir"
        raise RecallUnavailable(
            f"the recall index {directory} failed: {type(exc).__name__}: {detail}; {hint}"
        ) from exc
