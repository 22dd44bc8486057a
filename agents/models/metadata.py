"""What a GGUF model file says about itself, read with `gguf.GGUFReader`, and a disk cache of it.

`read_metadata` checks the file (exists, GGUF magic, parsable header and tensor table,
required architecture keys) and summarises it as a `GgufMetadata`: the model's shape, its
quantisation, its chat template and the byte sizes the GPU placement needs. Parsing takes
seconds on a real model (the reader decodes the tokenizer arrays), so `MetadataCache` keeps
one JSON file per model, keyed by resolved path, size and modification time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType, ReaderTensor

from agents.models.errors import ModelFileCorrupt, ModelFileMissing
from agents.models.progress import PrepareProgress, StepReporter

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_HASH_BLOCK = 1 << 20
_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True, slots=True)
class GgufMetadata:
    """The facts about one GGUF model file that loading, choosing and placing it need.

    Shape fields come from the architecture-prefixed keys (``llama.block_count``,
    ``gemma3.context_length``, ...); byte sizes come from the tensor table. `sha256` is
    None unless a hash was asked for (now, or by an earlier read that the cache remembers).
    """

    path: Path
    size_bytes: int
    sha256: str | None
    architecture: str
    name: str
    size_label: str | None
    """The publisher's size label, e.g. ``"135M"``, or None when the file has none."""
    parameters: int
    """Number of weights, summed over the tensor shapes."""
    file_type: int
    """``general.file_type`` (a `gguf.LlamaFileType` value); GUESSED (1024) when absent."""
    quantisation: str
    """Readable quantisation, e.g. ``"Q4_1"``, ``"Q4_K_M"``, ``"F16"``."""
    context_length: int
    """The context length the model was trained for, in tokens."""
    block_count: int
    """Number of repeating transformer blocks (layers)."""
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    """Width of one key head; ``embedding_length // head_count`` unless the file says."""
    value_length: int
    """Width of one value head; ``embedding_length // head_count`` unless the file says."""
    chat_template: str | None
    layer_bytes: int
    """Average bytes of one repeating block (the tensors named ``blk.N.*``)."""
    other_bytes: int
    """Bytes of every tensor outside the blocks: token embeddings, output, final norm."""

    def kv_bytes_per_token(self, kv_type_bytes: int = 2) -> int:
        """Bytes the KV cache needs per token of context over all layers (K and V).

        ``kv_type_bytes`` is the size of one cached element: 2 for F16 (llama.cpp's
        default), 1 for Q8_0 (approximately).
        """
        per_layer = self.head_count_kv * (self.key_length + self.value_length)
        return self.block_count * per_layer * kv_type_bytes


def read_metadata(
    path: str | os.PathLike[str],
    cache: MetadataCache | None = None,
    *,
    with_sha256: bool = False,
    progress: PrepareProgress | None = None,
) -> GgufMetadata:
    """Read and check the GGUF file at `path`, through `cache` when one is given.

    Raises `ModelFileMissing` if there is no such file and `ModelFileCorrupt` if it is not
    a GGUF file, ends early, or lacks the metadata a model needs. With `with_sha256`, the
    file is also hashed (once per file version when a cache is used). A parse (not a cache
    hit) is reported to `progress` as one step.
    """
    if cache is not None:
        return cache.read(path, with_sha256=with_sha256, progress=progress)
    meta = _parse_reporting(Path(path), progress)
    if with_sha256:
        meta = dataclasses.replace(meta, sha256=file_sha256(meta.path))
    return meta


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of the file at `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class MetadataCache:
    """`GgufMetadata` of model files, kept as one JSON file each in `directory`.

    An entry is used only while the model file has the same resolved path, size and
    modification time (ns) as when it was read; otherwise the file is parsed again and the
    entry replaced. Corrupt files are never cached. Failing to write the cache is logged
    and otherwise ignored: the cache only saves time.
    """

    _FORMAT = 1

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def read(
        self,
        path: str | os.PathLike[str],
        *,
        with_sha256: bool = False,
        progress: PrepareProgress | None = None,
    ) -> GgufMetadata:
        """Like `read_metadata(path, with_sha256=..., progress=...)`, instant when the cache
        has the file."""
        path = Path(path)
        stat = _stat_model_file(path)
        key = _CacheKey(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        cached = self._load(key)
        if cached is not None and (cached.sha256 is not None or not with_sha256):
            log.debug("gguf metadata cache hit for %s", path)
            return dataclasses.replace(cached, path=path)
        if cached is not None:
            meta = dataclasses.replace(cached, path=path)
        else:
            started = time.perf_counter()
            meta = _parse_reporting(path, progress)
            log.debug("parsed %s in %.2f s", path, time.perf_counter() - started)
        if with_sha256:
            meta = dataclasses.replace(meta, sha256=file_sha256(path))
        self._store(key, meta)
        return meta

    def _entry_path(self, key: _CacheKey) -> Path:
        name = hashlib.sha256(key.resolved_path.encode()).hexdigest()[:32]
        return self.directory / f"{name}.json"

    def _load(self, key: _CacheKey) -> GgufMetadata | None:
        try:
            document = json.loads(self._entry_path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.debug("ignoring unreadable gguf metadata cache entry for %s: %s", key, exc)
            return None
        if not isinstance(document, dict) or document.get("key") != dataclasses.asdict(key):
            return None
        if document.get("format") != self._FORMAT:
            return None
        try:
            fields: dict[str, Any] = dict(document["metadata"])
            fields["path"] = Path(fields["path"])
            return GgufMetadata(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            log.debug("ignoring malformed gguf metadata cache entry for %s: %s", key, exc)
            return None

    def _store(self, key: _CacheKey, meta: GgufMetadata) -> None:
        fields = dataclasses.asdict(meta)
        fields["path"] = str(meta.path)
        document = {"format": self._FORMAT, "key": dataclasses.asdict(key), "metadata": fields}
        target = self._entry_path(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=self.directory, suffix=".tmp", delete=False
            ) as tmp:
                json.dump(document, tmp)
            os.replace(tmp.name, target)
        except OSError as exc:
            log.warning("cannot write gguf metadata cache %s: %s", target, exc)


@dataclass(frozen=True, slots=True)
class _CacheKey:
    resolved_path: str
    size: int
    mtime_ns: int


def _stat_model_file(path: Path) -> os.stat_result:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ModelFileMissing(path) from None
    except OSError as exc:
        raise ModelFileCorrupt(path, f"cannot be read ({exc})") from exc
    if not path.is_file():
        raise ModelFileCorrupt(path, "it is a directory or device, not a file")
    return stat


def _parse_reporting(path: Path, progress: PrepareProgress | None) -> GgufMetadata:
    step = StepReporter(progress, f"reading the metadata of {path.name}", None)
    try:
        meta = _parse(path)
    except Exception as exc:
        step.fail(exc.reason if isinstance(exc, ModelFileCorrupt) else str(exc))
        raise
    step.finish()
    return meta


def _parse(path: Path) -> GgufMetadata:
    stat = _stat_model_file(path)
    try:
        with open(path, "rb") as file:
            magic = file.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelFileCorrupt(path, f"cannot be read ({exc})") from exc
    if len(magic) < len(GGUF_MAGIC):
        raise ModelFileCorrupt(path, f"truncated: only {stat.st_size} bytes")
    if magic != GGUF_MAGIC:
        raise ModelFileCorrupt(path, f"not a GGUF file (starts with {magic!r}, not b'GGUF')")
    try:
        reader = GGUFReader(path)
    except OSError as exc:
        raise ModelFileCorrupt(path, f"cannot be read ({exc})") from exc
    except Exception as exc:
        # The reader indexes a memory map of the file: a file that ends early, or a header
        # with nonsense counts or lengths, fails as IndexError/ValueError/... from numpy.
        raise ModelFileCorrupt(
            path,
            f"truncated or damaged: the header and tensor table of this {stat.st_size}-byte "
            f"file cannot be parsed ({type(exc).__name__}: {exc})",
        ) from exc
    return _summarise(path, stat.st_size, _Fields(path, reader), reader.tensors)


class _Fields:
    """Typed access to a reader's key-value metadata; missing or mistyped keys are corrupt."""

    def __init__(self, path: Path, reader: GGUFReader) -> None:
        self._path = path
        self._reader = reader

    def text(self, key: str) -> str | None:
        field = self._reader.get_field(key)
        if field is None:
            return None
        value = field.contents()
        if not isinstance(value, str):
            raise ModelFileCorrupt(self._path, f"unreadable metadata: {key} is not a string")
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        field = self._reader.get_field(key)
        if field is None:
            if default is None:
                raise ModelFileCorrupt(self._path, f"unreadable metadata: no key {key}")
            return default
        value = field.contents()
        if isinstance(value, list) and value:  # per-layer values in some architectures
            value = max(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelFileCorrupt(self._path, f"unreadable metadata: {key} is not an integer")
        return value


def _summarise(path: Path, size: int, fields: _Fields, tensors: list[ReaderTensor]) -> GgufMetadata:
    arch = fields.text("general.architecture")
    if not arch:
        raise ModelFileCorrupt(path, "unreadable metadata: no key general.architecture")
    embedding_length = fields.integer(f"{arch}.embedding_length")
    head_count = fields.integer(f"{arch}.attention.head_count")
    if head_count <= 0:
        raise ModelFileCorrupt(path, f"unreadable metadata: {arch}.attention.head_count is 0")
    head_width = embedding_length // head_count
    block_count = fields.integer(f"{arch}.block_count")
    file_type = fields.integer("general.file_type", int(LlamaFileType.GUESSED))

    block_bytes = 0
    blocks: set[str] = set()
    for tensor in tensors:
        match = _BLOCK_TENSOR.match(tensor.name)
        if match:
            blocks.add(match.group(1))
            block_bytes += tensor.n_bytes
    other_bytes = sum(t.n_bytes for t in tensors) - block_bytes

    return GgufMetadata(
        path=path,
        size_bytes=size,
        sha256=None,
        architecture=arch,
        name=fields.text("general.name") or path.stem,
        size_label=fields.text("general.size_label") or None,
        parameters=sum(t.n_elements for t in tensors),
        file_type=file_type,
        quantisation=_quantisation(file_type, tensors),
        context_length=fields.integer(f"{arch}.context_length"),
        block_count=block_count,
        embedding_length=embedding_length,
        head_count=head_count,
        head_count_kv=fields.integer(f"{arch}.attention.head_count_kv", head_count),
        key_length=fields.integer(f"{arch}.attention.key_length", head_width),
        value_length=fields.integer(f"{arch}.attention.value_length", head_width),
        chat_template=fields.text("tokenizer.chat_template"),
        layer_bytes=block_bytes // len(blocks) if blocks else 0,
        other_bytes=other_bytes,
    )


def _quantisation(file_type: int, tensors: list[ReaderTensor]) -> str:
    """``general.file_type`` as a name ("Q4_K_M"); else the type holding the most bytes."""
    try:
        known = LlamaFileType(file_type)
    except ValueError:
        known = LlamaFileType.GUESSED
    if known is not LlamaFileType.GUESSED:
        return known.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    by_type: Counter[GGMLQuantizationType] = Counter()
    for tensor in tensors:
        by_type[tensor.tensor_type] += tensor.n_bytes
    if not by_type:
        return "unknown"
    return by_type.most_common(1)[0][0].name
