"""How many of a model's layers to put on the GPU, given the free VRAM: pure arithmetic, no I/O.

The model follows llama.cpp's ``n_gpu_layers``: the last ``n`` repeating blocks go to the
GPU; ``-1`` means every block *and* the output layer. Assumptions:

- Each offloaded block costs its weights (`layer_bytes`) plus its slice of the KV cache,
  ``n_ctx * kv_bytes_per_token / block_count``.
- The non-block tensors (`other_bytes`: token embeddings, output, final norm) are counted on
  the GPU only when everything is offloaded (``-1``); llama.cpp moves the output layer with the
  last step and keeps the input embeddings on the CPU, so counting all of `other_bytes` there
  errs on the safe side (by the embedding table's size when the output is a separate tensor).
- ``margin_bytes`` (default 512 MiB) is kept free for what the sum above leaves out: the CUDA
  context of the process that loads the model (NVML reports free memory before it exists),
  llama.cpp's compute buffers, and other programs allocating while we load. It is a fixed
  amount rather than a fraction because those costs do not grow with the GPU's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_MARGIN_BYTES = 512 * MiB
ALL_LAYERS = -1
"""llama.cpp's ``n_gpu_layers`` for every block and the output layer."""

Device = Literal["cpu", "gpu", "split"]


class ModelSizes(Protocol):
    """What placement needs to know about a model; `GgufMetadata` is one."""

    @property
    def block_count(self) -> int: ...

    @property
    def layer_bytes(self) -> int: ...

    @property
    def other_bytes(self) -> int: ...

    def kv_bytes_per_token(self, kv_type_bytes: int = 2) -> int:
        """KV-cache bytes per token of context, over all blocks."""
        ...


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a model's layers go: `n_gpu_layers` is what to pass to llama.cpp.

    `device` is "gpu" when everything is offloaded (``n_gpu_layers == -1``), "split" when some
    blocks are, "cpu" when none are. The two byte counts are the planned GPU use, not
    counting the margin. `reason` is one line for the user.
    """

    n_gpu_layers: int
    device: Device
    weights_on_gpu_bytes: int
    kv_on_gpu_bytes: int
    reason: str

    @property
    def gpu_bytes(self) -> int:
        """Planned GPU memory: weights plus KV cache."""
        return self.weights_on_gpu_bytes + self.kv_on_gpu_bytes


def plan_placement(
    model: ModelSizes,
    *,
    free_vram_bytes: int | None,
    n_ctx: int,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
    kv_type_bytes: int = 2,
) -> Placement:
    """The most layers of `model` that fit in `free_vram_bytes` with a context of `n_ctx`.

    `free_vram_bytes` None or 0 (no usable GPU) gives a CPU placement. The planned GPU use
    plus `margin_bytes` never exceeds `free_vram_bytes`. More free memory never gives fewer
    layers; a longer context or a bigger margin never gives more.
    """
    if n_ctx <= 0:
        raise ValueError(f"n_ctx must be a positive number of tokens, not {n_ctx}")
    if margin_bytes < 0 or kv_type_bytes <= 0:
        raise ValueError(
            f"margin_bytes must be >= 0 and kv_type_bytes > 0, not {margin_bytes} and "
            f"{kv_type_bytes}"
        )
    if not free_vram_bytes or free_vram_bytes <= 0:
        return Placement(0, "cpu", 0, 0, "no GPU with free memory found: running on the CPU")

    blocks = model.block_count
    kv_all = model.kv_bytes_per_token(kv_type_bytes) * n_ctx
    budget = free_vram_bytes - margin_bytes
    free_text = f"{_gib(free_vram_bytes)} free"

    full_weights = model.other_bytes + blocks * model.layer_bytes
    if full_weights + kv_all <= budget:
        used = _gib(full_weights + kv_all)
        return Placement(
            ALL_LAYERS,
            "gpu",
            full_weights,
            kv_all,
            f"all {blocks} layers and the output on GPU: {used} of {free_text}",
        )

    n = _most_blocks_within(budget, blocks, model.layer_bytes, kv_all)
    weights = n * model.layer_bytes
    kv = _kv_for(n, blocks, kv_all)
    if n == 0:
        one = _gib(model.layer_bytes + _kv_for(1, blocks, kv_all))
        return Placement(
            0,
            "cpu",
            0,
            0,
            f"not even one layer fits on the GPU ({one} per layer plus a "
            f"{_gib(margin_bytes)} margin; {free_text}): running on the CPU",
        )
    output = ", output on CPU" if n == blocks else ""
    return Placement(
        n,
        "split",
        weights,
        kv,
        f"{n}/{blocks} layers on GPU{output}: {_gib(weights + kv)} of {free_text}",
    )


def _kv_for(n: int, blocks: int, kv_all: int) -> int:
    """KV-cache bytes of `n` of `blocks` blocks, rounded up."""
    if blocks <= 0:
        return 0
    return -(-n * kv_all // blocks)


def _most_blocks_within(budget: int, blocks: int, layer_bytes: int, kv_all: int) -> int:
    """The largest n <= blocks with n * layer_bytes + KV(n) <= budget."""
    if budget <= 0:
        return 0
    low, high = 0, blocks  # invariant: low fits; search for the last n that fits
    while low < high:
        mid = (low + high + 1) // 2
        if mid * layer_bytes + _kv_for(mid, blocks, kv_all) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"
