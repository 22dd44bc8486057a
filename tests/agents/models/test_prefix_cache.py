"""Saved prompt states cost what llama.cpp's state costs (issue 17: 512 MiB of logits each).

The first tests drive `CheckedRAMCache` with hand-made states; the others load the real
embedded model and look at what its prefix cache holds after real completions.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from llama_cpp.llama import LlamaState

from agents.models.backend import ChatMessage, LlamaBackend
from agents.models.errors import PrefixCacheEntryOversized
from agents.models.prefix_cache import OVERSIZE_SLACK_BYTES, CheckedRAMCache, entry_bytes
from devices.tools import default_tools
from tests.agents.models.embedded import default_model_settings

VOCAB = 1000
MiB = 2**20


def state(state_bytes: int, *, logits_rows: int = 0, n_ctx: int = 64) -> LlamaState:
    return LlamaState(
        input_ids=np.zeros(n_ctx, dtype=np.intc),
        scores=np.zeros((logits_rows, VOCAB), dtype=np.single),
        n_tokens=3,
        llama_state=bytes(state_bytes),
        llama_state_size=state_bytes,
        seed=0,
    )


def test_a_state_with_a_logits_copy_is_refused_and_not_stored() -> None:
    cache = CheckedRAMCache(capacity_bytes=1024 * MiB)
    oversized = state(MiB, logits_rows=2 * OVERSIZE_SLACK_BYTES // (VOCAB * 4))
    with pytest.raises(PrefixCacheEntryOversized) as caught:
        cache[(1, 2, 3)] = oversized
    assert caught.value.state_bytes == MiB
    assert caught.value.real_bytes == entry_bytes(oversized)
    assert "prefix_cache_mb = 0" in str(caught.value)
    assert len(cache.cache_state) == 0


def test_a_lean_state_is_stored_and_counted_with_every_byte_it_holds() -> None:
    cache = CheckedRAMCache(capacity_bytes=1024 * MiB)
    lean = state(MiB)
    cache[(1, 2, 3)] = lean
    assert cache[(1, 2, 3, 4)] is lean  # found by its prefix
    assert cache.cache_size == MiB + lean.input_ids.nbytes > lean.llama_state_size


def test_the_capacity_holds_for_the_real_bytes_of_the_entries() -> None:
    # Three entries of 1 MiB + a few rows of logits (under the slack, so stored): the stock
    # cache would count 3 MiB and keep them all; counting real bytes evicts the oldest.
    rows = OVERSIZE_SLACK_BYTES // (VOCAB * 4) // 2
    cache = CheckedRAMCache(capacity_bytes=3 * MiB + 2 * rows * VOCAB * 4 + MiB // 2)
    for key in range(3):
        cache[(key,)] = state(MiB, logits_rows=rows)
    assert list(cache.cache_state) == [(1,), (2,)]
    assert cache.cache_size <= cache.capacity_bytes


# ---------------------------------------------------------------------- the real model

SYSTEM: ChatMessage = {
    "role": "system",
    "content": "You plan tasks for a fleet of devices. Their tools: "
    + json.dumps(default_tools().schemas(), separators=(",", ":"))[:1500]
    + "\nAnswer in one short sentence.",
}
CALLS: list[list[ChatMessage]] = [
    [SYSTEM, {"role": "user", "content": "Collect disk usage from every device."}],
    [{"role": "user", "content": "What is 2 + 2?"}],  # pushes the first prompt out of the KV
    [SYSTEM, {"role": "user", "content": "Back up /etc on the rack1 devices."}],
]


@pytest.mark.slow
async def test_a_saved_state_is_about_the_llama_cpp_state_size() -> None:
    async with LlamaBackend(default_model_settings()) as backend:
        await backend.chat(CALLS[0], max_tokens=8)
        usage = await backend.prefix_cache_usage()
    assert usage.entries == 1
    # Before the fix the entry held a copy of the logits: 512 x 262,144 x 4 bytes = 512 MiB.
    assert usage.held_bytes <= usage.state_bytes + MiB
    assert usage.held_bytes < 64 * MiB


@pytest.mark.slow
async def test_outputs_with_the_prefix_cache_are_the_outputs_without_it() -> None:
    async def run(cache_bytes: int) -> list[tuple[str, int]]:
        settings = dataclasses.replace(default_model_settings(), prefix_cache_bytes=cache_bytes)
        async with LlamaBackend(settings) as backend:
            completions = [await backend.chat(call, max_tokens=32) for call in CALLS]
        return [(c.text, c.prompt_tokens_evaluated) for c in completions]

    cached, uncached = await run(256 * MiB), await run(0)
    assert [text for text, _ in cached] == [text for text, _ in uncached]
    # The third call restored the first one's saved state (a few tokens evaluated, not the
    # whole system prompt), so the comparison went through a saved and restored state.
    assert cached[2][1] < 50 < uncached[2][1]
