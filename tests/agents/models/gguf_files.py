"""Tiny GGUF files for tests, written with `gguf.GGUFWriter` (milliseconds, a few KiB each).

`write_gguf` makes a model-shaped file: F32 token embeddings, `blocks` repeating blocks of
two tensors each, and the architecture-prefixed keys `read_metadata` needs; `skip_keys`
leaves some out to make a file with unusable metadata.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    blocks: int = 2,
    embedding: int = 8,
    heads: int = 2,
    heads_kv: int | list[int] = 1,
    vocab: int = 16,
    context: int = 256,
    file_type: int | None = 0,
    name: str | None = "tiny",
    key_length: int | None = None,
    chat_template: str | None = None,
    skip_keys: Collection[str] = (),
) -> Path:
    """Write a tiny GGUF model file at `path` and return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(path, arch)
    if "architecture" in skip_keys:
        writer.kv_data[0].pop("general.architecture", None)
    if name is not None:
        writer.add_name(name)
    if file_type is not None:
        writer.add_file_type(file_type)
    if "block_count" not in skip_keys:
        writer.add_block_count(blocks)
    if "context_length" not in skip_keys:
        writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads_kv)
    if key_length is not None:
        writer.add_key_length(key_length)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.ones((vocab, embedding), dtype=np.float32))
    for index in range(blocks):
        writer.add_tensor(f"blk.{index}.attn_q.weight", np.ones((embedding, embedding), np.float32))
        writer.add_tensor(f"blk.{index}.attn_norm.weight", np.ones(embedding, dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(embedding, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
