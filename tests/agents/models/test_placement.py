"""GPU placement arithmetic for realistic Q4 model shapes on 4, 8 and 24 GiB GPUs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.models.metadata import GgufMetadata
from agents.models.placement import (
    ALL_LAYERS,
    DEFAULT_MARGIN_BYTES,
    GiB,
    MiB,
    Placement,
    plan_placement,
)


@dataclass(frozen=True)
class Shape:
    """A synthetic model: enough of a GGUF's numbers for placement."""

    block_count: int
    layer_bytes: int
    other_bytes: int
    head_count_kv: int
    head_dim: int

    def kv_bytes_per_token(self, kv_type_bytes: int = 2) -> int:
        return 2 * self.block_count * self.head_count_kv * self.head_dim * kv_type_bytes


# Q4_K_M-sized layers and embeddings/output of real models (SmolLM2, Llama 3.2 1B and 3B,
# Mistral 7B, Llama 2 13B without GQA, Llama 3 70B), rounded to whole MiB.
SHAPES = {
    "135M": Shape(30, 2_216_448, 30_083_328, 3, 64),
    "1B": Shape(16, 36 * MiB, 220 * MiB, 8, 64),
    "3B": Shape(28, 60 * MiB, 330 * MiB, 8, 128),
    "7B": Shape(32, 128 * MiB, 170 * MiB, 8, 128),
    "13B": Shape(40, 185 * MiB, 220 * MiB, 40, 128),
    "70B": Shape(80, 520 * MiB, 1100 * MiB, 8, 128),
}

# At n_ctx 4096 with an F16 KV cache, one block of 7B costs 128 + 16 MiB, of 13B 185 + 80
# MiB, of 70B 520 + 16 MiB; the budget is the free memory less the 512 MiB margin.
EXPECTED_AT_4096 = [
    ("135M", 4, ALL_LAYERS),
    ("1B", 4, ALL_LAYERS),
    ("3B", 4, ALL_LAYERS),  # 330 + 28 * 76 = 2458 MiB <= 3584
    ("7B", 4, 24),  # 3584 // 144
    ("13B", 4, 13),  # 3584 // 265
    ("70B", 4, 6),  # 3584 // 536
    ("7B", 8, ALL_LAYERS),  # 170 + 32 * 144 = 4778 MiB <= 7680
    ("13B", 8, 28),  # 7680 // 265
    ("70B", 8, 14),  # 7680 // 536
    ("13B", 24, ALL_LAYERS),  # 220 + 40 * 265 = 10820 MiB <= 24064
    ("70B", 24, 44),  # 24064 // 536
]


def effective_layers(placement: Placement, shape: Shape) -> int:
    """Layers on the GPU counting the output as one more, so -1 orders above every n."""
    if placement.n_gpu_layers == ALL_LAYERS:
        return shape.block_count + 1
    return placement.n_gpu_layers


@pytest.mark.parametrize(("model", "gib", "layers"), EXPECTED_AT_4096)
def test_layers_for_common_gpus(model: str, gib: int, layers: int) -> None:
    shape = SHAPES[model]
    placement = plan_placement(shape, free_vram_bytes=gib * GiB, n_ctx=4096)
    assert placement.n_gpu_layers == layers
    assert placement.gpu_bytes + DEFAULT_MARGIN_BYTES <= gib * GiB
    if layers == ALL_LAYERS:
        assert placement.device == "gpu"
        weights = shape.other_bytes + shape.block_count * shape.layer_bytes
        assert placement.weights_on_gpu_bytes == weights
        assert placement.kv_on_gpu_bytes == shape.kv_bytes_per_token() * 4096
        assert placement.reason.startswith(f"all {shape.block_count} layers and the output")
    else:
        assert placement.device == "split"
        assert placement.weights_on_gpu_bytes == layers * shape.layer_bytes
        assert placement.reason.startswith(f"{layers}/{shape.block_count} layers on GPU: ")
        assert placement.reason.endswith(f"of {gib}.0 GiB free")


def test_reason_reads_like_the_example() -> None:
    placement = plan_placement(SHAPES["7B"], free_vram_bytes=4 * GiB, n_ctx=4096)
    assert placement.reason == "24/32 layers on GPU: 3.4 GiB of 4.0 GiB free"


@pytest.mark.parametrize("free", [None, 0, -1])
def test_no_gpu_means_cpu(free: int | None) -> None:
    placement = plan_placement(SHAPES["1B"], free_vram_bytes=free, n_ctx=4096)
    assert placement == Placement(0, "cpu", 0, 0, placement.reason)
    assert "CPU" in placement.reason


def test_gpu_too_small_for_one_layer_means_cpu() -> None:
    placement = plan_placement(SHAPES["70B"], free_vram_bytes=1 * GiB, n_ctx=4096)
    assert (placement.n_gpu_layers, placement.device, placement.gpu_bytes) == (0, "cpu", 0)
    assert placement.reason.startswith("not even one layer fits on the GPU")


def test_all_blocks_but_not_the_output() -> None:
    shape = Shape(4, 100 * MiB, 1000 * MiB, 1, 1)
    placement = plan_placement(shape, free_vram_bytes=512 * MiB + 450 * MiB, n_ctx=1)
    assert (placement.n_gpu_layers, placement.device) == (4, "split")
    assert "4/4 layers on GPU, output on CPU" in placement.reason


def test_longer_context_costs_layers() -> None:
    short = plan_placement(SHAPES["13B"], free_vram_bytes=8 * GiB, n_ctx=2048)
    long = plan_placement(SHAPES["13B"], free_vram_bytes=8 * GiB, n_ctx=16384)
    assert long.n_gpu_layers < short.n_gpu_layers


def test_quantised_kv_cache_frees_room() -> None:
    f16 = plan_placement(SHAPES["13B"], free_vram_bytes=8 * GiB, n_ctx=8192)
    q8 = plan_placement(SHAPES["13B"], free_vram_bytes=8 * GiB, n_ctx=8192, kv_type_bytes=1)
    assert q8.n_gpu_layers > f16.n_gpu_layers


def test_real_smollm2_fits_any_gpu(smollm2_meta: GgufMetadata) -> None:
    placement = plan_placement(smollm2_meta, free_vram_bytes=4 * GiB, n_ctx=8192)
    assert (placement.n_gpu_layers, placement.device) == (ALL_LAYERS, "gpu")
    assert placement.kv_on_gpu_bytes == smollm2_meta.kv_bytes_per_token() * 8192


@pytest.mark.parametrize(("n_ctx", "margin", "kv_type"), [(0, 0, 2), (1, -1, 2), (1, 0, 0)])
def test_nonsense_arguments_are_refused(n_ctx: int, margin: int, kv_type: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        plan_placement(
            SHAPES["1B"],
            free_vram_bytes=GiB,
            n_ctx=n_ctx,
            margin_bytes=margin,
            kv_type_bytes=kv_type,
        )


shapes = st.builds(
    Shape,
    block_count=st.integers(1, 128),
    layer_bytes=st.integers(0, 2 * GiB),
    other_bytes=st.integers(0, 4 * GiB),
    head_count_kv=st.integers(1, 64),
    head_dim=st.sampled_from([32, 64, 80, 128, 256]),
)
free_vram = st.integers(0, 96 * GiB)
contexts = st.integers(1, 131072)
margins = st.sampled_from([0, 256 * MiB, DEFAULT_MARGIN_BYTES, GiB])


@given(shapes, free_vram, contexts, margins)
def test_budget_is_never_exceeded(shape: Shape, free: int, n_ctx: int, margin: int) -> None:
    placement = plan_placement(shape, free_vram_bytes=free, n_ctx=n_ctx, margin_bytes=margin)
    if placement.device == "cpu":
        assert (placement.n_gpu_layers, placement.gpu_bytes) == (0, 0)
    else:
        assert placement.gpu_bytes + margin <= free
        assert placement.n_gpu_layers == ALL_LAYERS or placement.n_gpu_layers > 0
    assert placement.n_gpu_layers <= shape.block_count
    assert (placement.device == "gpu") == (placement.n_gpu_layers == ALL_LAYERS)


@given(shapes, free_vram, contexts, margins)
def test_one_more_layer_would_not_fit(shape: Shape, free: int, n_ctx: int, margin: int) -> None:
    placement = plan_placement(shape, free_vram_bytes=free, n_ctx=n_ctx, margin_bytes=margin)
    n = placement.n_gpu_layers
    if n == ALL_LAYERS or free == 0:
        return
    kv_all = shape.kv_bytes_per_token() * n_ctx
    everything = shape.other_bytes + shape.block_count * shape.layer_bytes + kv_all
    assert everything + margin > free
    if n < shape.block_count:
        more = n + 1
        kv_more = -(-more * kv_all // shape.block_count)  # rounded up, as planned
        assert more * shape.layer_bytes + kv_more + margin > free


@given(shapes, free_vram, free_vram, contexts)
def test_more_vram_never_means_fewer_layers(shape: Shape, a: int, b: int, n_ctx: int) -> None:
    low, high = sorted((a, b))
    fewer = plan_placement(shape, free_vram_bytes=low, n_ctx=n_ctx)
    more = plan_placement(shape, free_vram_bytes=high, n_ctx=n_ctx)
    assert effective_layers(fewer, shape) <= effective_layers(more, shape)


@given(shapes, free_vram, contexts, contexts)
def test_longer_context_never_means_more_layers(shape: Shape, free: int, a: int, b: int) -> None:
    short, long = sorted((a, b))
    at_short = plan_placement(shape, free_vram_bytes=free, n_ctx=short)
    at_long = plan_placement(shape, free_vram_bytes=free, n_ctx=long)
    assert effective_layers(at_long, shape) <= effective_layers(at_short, shape)
