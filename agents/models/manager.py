"""Models by role: which model the planner and the device agent use, loaded on demand.

`ModelManager` resolves a role ("planner", "device") to a registry entry, plans where it
runs (`placement.plan_placement` with the free VRAM NVML reports, or the CPU), chooses its
chat format (`chat_format.choose_chat_format`), loads it into a `LlamaBackend` the first
time it is asked for, and tells listeners each step (`ModelEvent`). Two roles that name the
same model share one loaded backend. `unload` frees a model; `close` frees them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agents.models.backend import LlamaBackend, LoadSettings
from agents.models.chat_format import choose_chat_format, llama_chat_format_argument
from agents.models.placement import Placement, plan_placement
from agents.models.registry import ModelEntry, ModelRegistry
from agents.models.vram import read_free_vram

log = logging.getLogger("orrery.models")

ROLES = ("planner", "device")


@dataclass(frozen=True)
class ModelConfig:
    """The `[models]` part of the configuration."""

    paths: tuple[Path, ...] = ()
    """GGUF files or directories of them, besides `<data_dir>/models` and embedded ones."""
    default: str | None = None
    """The model for roles not named in `roles` (None: the registry's default)."""
    roles: Mapping[str, str] = field(default_factory=dict)
    """role → model name, e.g. {"planner": "qwen2.5-7b-instruct-q4_k_m"}."""
    chat_formats: Mapping[str, str] = field(default_factory=dict)
    """model name → llama-cpp-python chat format, for files whose template is missing."""
    n_ctx: int = 4096
    use_gpu: bool = True
    prefix_cache_mb: int = 256


Stage = Literal["loading", "loaded", "unloaded", "failed"]


@dataclass(frozen=True)
class ModelEvent:
    """One step of loading or unloading a model."""

    model: str
    stage: Stage
    detail: str
    placement: Placement | None = None


@dataclass(frozen=True)
class ModelPlan:
    """What loading a model would do: the entry, where it runs, its chat format."""

    entry: ModelEntry
    placement: Placement
    chat_format: str
    settings: LoadSettings


class ModelManager:
    """Loads models for roles on first use; see the module docstring."""

    def __init__(
        self,
        registry: ModelRegistry,
        config: ModelConfig = ModelConfig(),
        *,
        free_vram: Callable[[], int | None] = read_free_vram,
        gpu_offload: Callable[[], bool] | None = None,
        on_event: Callable[[ModelEvent], None] | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self._free_vram = free_vram
        self._gpu_offload = gpu_offload or _llama_supports_gpu
        self._on_event = on_event
        self._backends: dict[str, LlamaBackend] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def model_for(self, role: str) -> ModelEntry:
        """The registry entry `role` uses."""
        name = self.config.roles.get(role) or self.config.default
        return self.registry.get(name) if name else self.registry.default()

    def plan(self, entry: ModelEntry) -> ModelPlan:
        """Where `entry` would run and how it would be loaded (reads free VRAM, no loading)."""
        free = self._free_vram() if self.config.use_gpu else None
        if free is not None and not self._gpu_offload():
            free = None
            note = " (llama.cpp was built without GPU support)"
        else:
            note = ""
        placement = plan_placement(entry.metadata, free_vram_bytes=free, n_ctx=self.config.n_ctx)
        if note:
            placement = Placement(0, "cpu", 0, 0, placement.reason + note)
        chosen = choose_chat_format(
            architecture=entry.metadata.architecture,
            chat_template=entry.metadata.chat_template,
            configured=self.config.chat_formats.get(entry.name),
            path=str(entry.path),
        )
        settings = LoadSettings(
            path=entry.path,
            n_ctx=min(self.config.n_ctx, entry.metadata.context_length or self.config.n_ctx),
            n_gpu_layers=placement.n_gpu_layers,
            chat_format=llama_chat_format_argument(chosen),
            prefix_cache_bytes=self.config.prefix_cache_mb * 2**20,
        )
        return ModelPlan(entry, placement, chosen, settings)

    async def backend(self, role: str) -> LlamaBackend:
        """The loaded backend for `role`, loading it first if needed."""
        entry = self.model_for(role)
        lock = self._locks.setdefault(entry.name, asyncio.Lock())
        async with lock:
            loaded = self._backends.get(entry.name)
            if loaded is not None:
                return loaded
            plan = self.plan(entry)
            self._emit(ModelEvent(entry.name, "loading", plan.placement.reason, plan.placement))
            backend = LlamaBackend(plan.settings, name=entry.name)
            try:
                await backend.load()
            except Exception as exc:
                await backend.close()
                self._emit(ModelEvent(entry.name, "failed", str(exc), plan.placement))
                raise
            self._backends[entry.name] = backend
            self._emit(
                ModelEvent(
                    entry.name,
                    "loaded",
                    f"loaded in {backend.load_seconds:.1f}s; {plan.placement.reason}",
                    plan.placement,
                )
            )
            return backend

    def loaded(self) -> list[str]:
        """Names of the models in memory."""
        return sorted(self._backends)

    async def unload(self, name: str) -> None:
        """Free model `name` (a no-op when it is not loaded)."""
        backend = self._backends.pop(name, None)
        if backend is not None:
            await backend.close()
            self._emit(ModelEvent(name, "unloaded", "freed"))

    async def close(self) -> None:
        for name in list(self._backends):
            await self.unload(name)

    def _emit(self, event: ModelEvent) -> None:
        log.info("model %s %s: %s", event.model, event.stage, event.detail)
        if self._on_event is not None:
            self._on_event(event)


def _llama_supports_gpu() -> bool:
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


class LazyModelManager:
    """A `ModelManager` made on first use: finding models reads GGUF files (seconds), which
    a device agent should not pay at start when it may never run agent.do."""

    def __init__(self, make: Callable[[], ModelManager]) -> None:
        self._make = make
        self._manager: ModelManager | None = None
        self._lock = asyncio.Lock()

    async def backend(self, role: str) -> LlamaBackend:
        return await (await self.manager()).backend(role)

    async def manager(self) -> ModelManager:
        """The manager, made now if it was not yet (in a worker thread)."""
        async with self._lock:
            if self._manager is None:
                self._manager = await asyncio.to_thread(self._make)
        return self._manager

    def loaded(self) -> list[str]:
        """Names of the models in memory (none before the manager is made)."""
        return self._manager.loaded() if self._manager is not None else []

    async def unload(self, name: str) -> None:
        if self._manager is not None:
            await self._manager.unload(name)

    async def close(self) -> None:
        if self._manager is not None:
            await self._manager.close()
