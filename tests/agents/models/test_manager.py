"""Roles → models, placement choice, shared backends, events, and the config file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agents.models.errors import ChatTemplateMissing, ModelNotFound
from agents.models.manager import ModelConfig, ModelEvent, ModelManager
from agents.models.placement import GiB
from agents.models.registry import ModelRegistry
from app.settings import ConfigError, load_model_config
from tests.agents.models.embedded import default_model_entry

DEFAULT = "gemma-3-270m"


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    entry = default_model_entry()  # fails when the embedded models are not installed
    data = entry.path.parent.parent.parent  # <data>/cache/embedded/<file>: joined already
    return ModelRegistry.discover(data_dir=data)


def test_every_role_uses_the_default_unless_configured(registry: ModelRegistry) -> None:
    manager = ModelManager(registry, ModelConfig())
    assert manager.model_for("planner").name == DEFAULT
    configured = ModelManager(registry, ModelConfig(roles={"planner": "no-such-model"}))
    with pytest.raises(ModelNotFound, match=DEFAULT):
        configured.model_for("planner")
    assert configured.model_for("device").name == DEFAULT


def test_placement_uses_the_free_vram_when_llama_can_offload(registry: ModelRegistry) -> None:
    entry = registry.default()
    on_gpu = ModelManager(registry, free_vram=lambda: 8 * GiB, gpu_offload=lambda: True)
    assert on_gpu.plan(entry).placement.device == "gpu"
    assert on_gpu.plan(entry).settings.n_gpu_layers == -1
    no_support = ModelManager(registry, free_vram=lambda: 8 * GiB, gpu_offload=lambda: False)
    plan = no_support.plan(entry)
    assert (plan.placement.device, plan.settings.n_gpu_layers) == ("cpu", 0)
    assert "without GPU support" in plan.placement.reason
    no_gpu = ModelManager(registry, free_vram=lambda: None)
    assert no_gpu.plan(entry).placement.device == "cpu"
    off = ModelManager(registry, ModelConfig(use_gpu=False), free_vram=lambda: 8 * GiB)
    assert off.plan(entry).placement.device == "cpu"


def test_a_chat_format_can_be_configured_per_model(registry: ModelRegistry) -> None:
    entry = registry.default()
    manager = ModelManager(registry, ModelConfig(chat_formats={entry.name: "chatml"}))
    assert manager.plan(entry).settings.chat_format == "chatml"
    assert ModelManager(registry).plan(entry).settings.chat_format == "gemma"  # no template
    smollm2 = registry.get("smollm2-135m-instruct")
    assert ModelManager(registry).plan(smollm2).settings.chat_format is None  # its own


def test_a_file_without_template_of_unknown_kind_is_refused(registry: ModelRegistry) -> None:
    entry = registry.default()
    metadata = dataclasses.replace(entry.metadata, chat_template=None, architecture="rwkv6")
    bare = dataclasses.replace(entry, name="bare", metadata=metadata)
    with pytest.raises(ChatTemplateMissing):
        ModelManager(registry).plan(bare)


@pytest.mark.slow
async def test_roles_naming_one_model_share_one_backend(registry: ModelRegistry) -> None:
    events: list[ModelEvent] = []
    manager = ModelManager(registry, free_vram=lambda: None, on_event=events.append)
    try:
        planner = await manager.backend("planner")
        device = await manager.backend("device")
        assert planner is device
        assert manager.loaded() == [DEFAULT]
        assert (await planner.chat([{"role": "user", "content": "Hi"}], max_tokens=4)).text
    finally:
        await manager.close()
    assert [e.stage for e in events] == ["loading", "loaded", "unloaded"]
    assert "CPU" in events[0].detail
    assert manager.loaded() == []


def test_the_config_file_sets_paths_roles_and_formats(tmp_path: Path) -> None:
    (tmp_path / "orrery.toml").write_text(
        '[models]\npaths = ["~/m", "/x/y.gguf"]\nn_ctx = 2048\n'
        '[models.roles]\nplanner = "big"\n[models.chat_formats]\nbig = "gemma"\n'
    )
    config = load_model_config(tmp_path, extra_paths=[Path("/z.gguf")])
    assert config.paths == (Path("~/m").expanduser(), Path("/x/y.gguf"), Path("/z.gguf"))
    assert (config.n_ctx, config.roles, config.chat_formats) == (
        2048,
        {"planner": "big"},
        {"big": "gemma"},
    )
    assert load_model_config(tmp_path / "none") == ModelConfig()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[models]\nn_ctx = 10\n", "models.n_ctx"),
        ("[models]\nmistery = 1\n", "models.mistery"),
        ("[models\n", "cannot be read"),
    ],
)
def test_a_bad_config_file_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "orrery.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"orrery\.toml") as bad:
        load_model_config(tmp_path)
    assert needle in str(bad.value)
