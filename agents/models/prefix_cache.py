"""Saved prompt states that cost what llama.cpp's state costs, and a cache that checks it.

llama-cpp-python saves a `LlamaState` into its prefix cache after every completion. The stock
`Llama.save_state` puts a copy of `Llama.scores` (the logits array: n_batch x vocabulary x 4
bytes, 512 MiB for Gemma-3's 262,144 tokens) into every state, `LlamaRAMCache` counts only
`llama_state_size` against its capacity, and with `logits_all` off nothing reads the copy:
the process grew ~530 MiB per planner call. `LeanLlama` saves and restores states without it
(the stock path when `logits_all` is on, where the logits are real); `CheckedRAMCache` counts
every byte an entry holds against its capacity and refuses, with `PrefixCacheEntryOversized`,
an entry much larger than the llama.cpp state it wraps, so such a regression fails at the
first completion instead of after gigabytes.

This module imports llama_cpp; `agents.models.backend` imports it only when it loads a model.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp.llama import Llama, LlamaState
from llama_cpp.llama_cache import LlamaRAMCache

from agents.models.errors import PrefixCacheEntryOversized

OVERSIZE_SLACK_BYTES = 4 * 2**20
"""How far an entry may exceed its llama.cpp state (token ids, bookkeeping) before the cache
refuses it; a logits copy is hundreds of MiB, so the margin only absorbs noise."""


class LeanLlama(Llama):
    """A `Llama` whose saved states hold the llama.cpp state and the token ids, not logits.

    With `logits_all` off, `Llama.scores` is never written by evaluation (sampling happens in
    llama.cpp) and nothing reads it (logprobs need `logits_all`), so neither saving nor
    restoring it changes what the model generates.
    """

    def save_state(self) -> LlamaState:
        if self._logits_all:
            return super().save_state()
        size = llama_cpp.llama_state_get_size(self._ctx.ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_get_data(self._ctx.ctx, buffer, size))
        if written > size:
            raise RuntimeError(f"llama.cpp wrote {written} bytes of state into {size}")
        return LlamaState(
            input_ids=self.input_ids.copy(),
            scores=np.empty((0, self._n_vocab), dtype=np.single),
            n_tokens=self.n_tokens,
            llama_state=bytes(memoryview(buffer)[:written]),
            llama_state_size=written,
            seed=self._seed,
        )

    def load_state(self, state: LlamaState) -> None:
        if self._logits_all:
            super().load_state(state)
            return
        self.input_ids = state.input_ids.copy()
        self.n_tokens = state.n_tokens
        self._requires_eval = True  # the next token comes from a fresh decode, as in the stock path
        self._seed = state.seed
        data = (ctypes.c_uint8 * state.llama_state_size).from_buffer_copy(state.llama_state)
        if llama_cpp.llama_state_set_data(self._ctx.ctx, data, state.llama_state_size) != (
            state.llama_state_size
        ):
            raise RuntimeError("llama.cpp refused the saved state")


def entry_bytes(state: LlamaState) -> int:
    """What one saved state really holds in memory: llama.cpp's state, logits, token ids."""
    return len(state.llama_state) + int(state.scores.nbytes) + int(state.input_ids.nbytes)


def check_entry(state: LlamaState) -> int:
    """`entry_bytes(state)`, or `PrefixCacheEntryOversized` when it strays far from the
    llama.cpp state size (more than the token ids and `OVERSIZE_SLACK_BYTES`)."""
    real = entry_bytes(state)
    allowed = state.llama_state_size + int(state.input_ids.nbytes) + OVERSIZE_SLACK_BYTES
    if real > allowed:
        raise PrefixCacheEntryOversized(real, state.llama_state_size)
    return real


class CheckedRAMCache(LlamaRAMCache):
    """`LlamaRAMCache` that counts each entry's real bytes against `capacity_bytes` and
    refuses entries that `check_entry` finds oversized (nothing is stored then)."""

    @property
    def cache_size(self) -> int:
        return sum(entry_bytes(state) for state in self.cache_state.values())

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        check_entry(value)
        super().__setitem__(key, value)


@dataclass(frozen=True)
class PrefixCacheUsage:
    """What a backend's prefix cache holds now."""

    entries: int
    state_bytes: int
    """The llama.cpp states' own sizes (what the stock cache counted)."""
    held_bytes: int
    """Every byte the entries hold (what `CheckedRAMCache` counts against its capacity)."""
    capacity_bytes: int


def cache_usage(llm: Llama) -> PrefixCacheUsage:
    """The usage of `llm`'s prefix cache (all zero when it has none)."""
    cache = llm.cache
    if not isinstance(cache, LlamaRAMCache):
        return PrefixCacheUsage(0, 0, 0, 0)
    states = list(cache.cache_state.values())
    return PrefixCacheUsage(
        entries=len(states),
        state_bytes=sum(state.llama_state_size for state in states),
        held_bytes=sum(entry_bytes(state) for state in states),
        capacity_bytes=cache.capacity_bytes,
    )
