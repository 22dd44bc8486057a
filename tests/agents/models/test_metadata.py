"""Reading GGUF metadata: the real SmolLM2 file, tiny written files, broken files, the cache."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from agents.models.errors import ModelFileCorrupt, ModelFileMissing
from agents.models.metadata import GgufMetadata, MetadataCache, file_sha256, read_metadata
from tests.agents.models.gguf_files import SMOLLM2_SHA256, write_gguf


def test_real_model_shape(smollm2_meta: GgufMetadata, smollm2_gguf: Path) -> None:
    meta = smollm2_meta
    assert meta.path == smollm2_gguf
    assert meta.size_bytes == smollm2_gguf.stat().st_size == 98_362_432
    assert meta.architecture == "llama"
    assert meta.size_label == "135M"
    assert meta.file_type == 3
    assert meta.quantisation == "Q4_1"
    assert meta.context_length == 8192
    assert meta.block_count == 30
    assert meta.embedding_length == 576
    assert (meta.head_count, meta.head_count_kv) == (9, 3)
    assert (meta.key_length, meta.value_length) == (64, 64)
    assert meta.chat_template is not None
    assert "<|im_start|>" in meta.chat_template


def test_real_model_sizes(smollm2_meta: GgufMetadata) -> None:
    meta = smollm2_meta
    assert 130_000_000 < meta.parameters < 140_000_000
    # Embeddings (49152 x 576 at Q8_0) plus the final norm; tied output, no output.weight.
    assert meta.other_bytes == 30_081_024 + 576 * 4
    assert meta.layer_bytes == 2_216_448
    tensor_bytes = meta.other_bytes + meta.block_count * meta.layer_bytes
    assert meta.size_bytes - 2_000_000 < tensor_bytes < meta.size_bytes


def test_kv_bytes_per_token(smollm2_meta: GgufMetadata) -> None:
    # K and V, 30 layers, 3 KV heads of width 576 // 9 = 64, F16.
    assert smollm2_meta.kv_bytes_per_token() == 2 * 30 * 3 * 64 * 2
    assert smollm2_meta.kv_bytes_per_token(kv_type_bytes=1) == 2 * 30 * 3 * 64


def test_sha256_only_when_asked(smollm2_meta: GgufMetadata, gguf_cache_dir: Path) -> None:
    assert smollm2_meta.sha256 is None
    hashed = read_metadata(smollm2_meta.path, MetadataCache(gguf_cache_dir), with_sha256=True)
    assert hashed.sha256 == SMOLLM2_SHA256
    assert hashed == dataclasses.replace(smollm2_meta, sha256=SMOLLM2_SHA256)


def test_file_sha256(smollm2_gguf: Path, tmp_path: Path) -> None:
    assert file_sha256(smollm2_gguf) == SMOLLM2_SHA256
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_sha256(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_second_read_of_the_real_model_is_instant(
    smollm2_meta: GgufMetadata, gguf_cache_dir: Path
) -> None:
    started = time.perf_counter()
    again = MetadataCache(gguf_cache_dir).read(smollm2_meta.path)
    assert time.perf_counter() - started < 0.5
    assert again.block_count == smollm2_meta.block_count
    assert again.chat_template == smollm2_meta.chat_template


def test_tiny_file_without_optional_keys(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "Tiny-Model.gguf", name=None, file_type=None)
    meta = read_metadata(path)
    assert meta.name == "Tiny-Model"
    assert meta.size_label is None
    assert meta.chat_template is None
    assert meta.file_type == 1024  # LlamaFileType.GUESSED
    assert meta.quantisation == "F32"  # from the tensors
    assert (meta.block_count, meta.embedding_length, meta.context_length) == (2, 8, 256)
    assert meta.layer_bytes == (8 * 8 + 8) * 4
    assert meta.other_bytes == (16 * 8 + 8) * 4
    assert meta.parameters == 16 * 8 + 2 * (8 * 8 + 8) + 8


def test_keys_follow_the_architecture(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "g.gguf", arch="gemma3", heads_kv=[1, 2], key_length=16)
    meta = read_metadata(path)
    assert meta.architecture == "gemma3"
    assert meta.head_count_kv == 2  # per-layer values: the largest
    assert (meta.key_length, meta.value_length) == (16, 4)
    assert meta.kv_bytes_per_token() == 2 * 2 * (16 + 4) * 2


@pytest.mark.parametrize(("file_type", "name"), [(1, "F16"), (15, "Q4_K_M"), (0, "F32")])
def test_quantisation_names(tmp_path: Path, file_type: int, name: str) -> None:
    meta = read_metadata(write_gguf(tmp_path / "q.gguf", file_type=file_type))
    assert (meta.file_type, meta.quantisation) == (file_type, name)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileMissing) as caught:
        read_metadata(tmp_path / "nope.gguf")
    assert caught.value.path == tmp_path / "nope.gguf"


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelFileCorrupt, match="not a file"):
        read_metadata(tmp_path)


def test_text_file_is_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("hello, this is not a model\n")
    with pytest.raises(ModelFileCorrupt, match="not a GGUF file") as caught:
        read_metadata(path)
    assert caught.value.path == path


@pytest.mark.parametrize("size", [0, 3])
def test_too_short_for_a_header(tmp_path: Path, size: int) -> None:
    path = tmp_path / "short.gguf"
    path.write_bytes(b"GGUF"[:size])
    with pytest.raises(ModelFileCorrupt, match="truncated"):
        read_metadata(path)


def test_real_model_cut_to_1000_bytes(smollm2_gguf: Path, tmp_path: Path) -> None:
    path = _truncated_copy(smollm2_gguf, tmp_path, 1000)
    with pytest.raises(ModelFileCorrupt, match="truncated or damaged") as caught:
        read_metadata(path)
    assert "1000-byte" in caught.value.reason


@pytest.mark.slow
def test_real_model_cut_in_half(smollm2_gguf: Path, tmp_path: Path) -> None:
    path = _truncated_copy(smollm2_gguf, tmp_path, smollm2_gguf.stat().st_size // 2)
    with pytest.raises(ModelFileCorrupt, match="truncated or damaged"):
        read_metadata(path)


def test_missing_required_key(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "b.gguf", skip_keys={"block_count"})
    with pytest.raises(ModelFileCorrupt, match=r"unreadable metadata: no key llama\.block_count"):
        read_metadata(path)


def test_missing_architecture(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "a.gguf", skip_keys={"architecture"})
    with pytest.raises(ModelFileCorrupt, match=r"no key general\.architecture"):
        read_metadata(path)


def test_corrupt_files_are_not_cached(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path / "cache")
    path = tmp_path / "x.gguf"
    path.write_text("not a model")
    for _ in range(2):
        with pytest.raises(ModelFileCorrupt):
            cache.read(path)
    assert not list((tmp_path / "cache").glob("*.json"))


def test_cache_hit_is_keyed_by_size_and_mtime(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path / "cache")
    path = write_gguf(tmp_path / "m.gguf", blocks=2)
    assert cache.read(path).block_count == 2
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1

    stat = path.stat()
    write_gguf(path, blocks=3)  # a new version of the file at the same path
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.read(path).block_count == 3
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1


def test_cache_serves_without_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = MetadataCache(tmp_path / "cache")
    path = write_gguf(tmp_path / "m.gguf")
    first = cache.read(path)

    def no_parsing(_: Path) -> GgufMetadata:
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr("agents.models.metadata._parse", no_parsing)
    assert MetadataCache(tmp_path / "cache").read(path) == first


def test_cache_remembers_the_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = MetadataCache(tmp_path / "cache")
    path = write_gguf(tmp_path / "m.gguf")
    assert cache.read(path).sha256 is None
    hashed = cache.read(path, with_sha256=True)
    assert hashed.sha256 == file_sha256(path)

    def no_hashing(_: Path) -> str:
        raise AssertionError("the cache should have the hash")

    monkeypatch.setattr("agents.models.metadata.file_sha256", no_hashing)
    assert cache.read(path, with_sha256=True) == hashed


def test_damaged_cache_entry_is_ignored(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path / "cache")
    path = write_gguf(tmp_path / "m.gguf")
    first = cache.read(path)
    for entry in (tmp_path / "cache").glob("*.json"):
        entry.write_text("{not json")
    assert cache.read(path) == first


def test_cache_that_cannot_be_written_only_costs_time(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    path = write_gguf(tmp_path / "m.gguf")
    assert MetadataCache(blocker).read(path).block_count == 2


def test_cached_entry_reports_the_path_asked_for(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path / "cache")
    path = write_gguf(tmp_path / "m.gguf")
    link = tmp_path / "link.gguf"
    link.symlink_to(path)
    cache.read(path)
    assert cache.read(link).path == link


def _truncated_copy(source: Path, directory: Path, size: int) -> Path:
    """A copy of the first `size` bytes of `source`, as an interrupted download leaves."""
    target = directory / source.name
    with open(source, "rb") as src:
        target.write_bytes(src.read(size))
    return target
