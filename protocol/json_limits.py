"""Reading JSON from a peer with bounds: its size is checked first, then a parser whose
nesting is bounded reads it, so no frame can exhaust the stack or the memory.

`json.loads` recurses once per nesting level: 100,000 brackets raise `RecursionError`
from deep inside the parser (or worse, in whatever walks the result next). Every
endpoint that reads JSON from the network (AIP at /aip/v1, the control API at
/control/v1) reads it through `load_json`, which refuses

- a frame larger than the endpoint's limit (checked before any parsing), and
- a value nested more than `MAX_DEPTH` levels deep: the parser (pydantic-core's, in
  Rust, iterative) stops at its nesting limit before building anything deeper,

with `JsonRefused`, whose message says which; endpoints answer it as `malformed`.
Strings with lone surrogate escapes (`"\\ud800"`, which no UTF-8 store can keep) are
refused too.
"""

from __future__ import annotations

from typing import Any, Final

import pydantic_core

MAX_DEPTH: Final = 200
"""Nesting levels a JSON value may have (the parser's own limit: a little deeper may pass
for arrays, never deeper than 202). Orrery's messages nest a handful of levels."""


class JsonRefused(ValueError):
    """A frame that is not read: too large, too deeply nested, or not JSON; `message`
    says which, for the `malformed` (or `too_large`) answer."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large


def frame_size(frame: str | bytes | bytearray | memoryview) -> int:
    """A frame's size in bytes (a text frame as UTF-8)."""
    if isinstance(frame, str):
        return len(frame.encode("utf-8", "surrogatepass"))
    return len(frame)


def load_json(frame: str | bytes | bytearray, *, max_bytes: int) -> Any:
    """The JSON value of `frame`, or `JsonRefused` when it is larger than `max_bytes`,
    nested deeper than `MAX_DEPTH`, or not JSON."""
    size = len(frame)
    if isinstance(frame, str) and size <= max_bytes < 4 * size:
        size = frame_size(frame)  # the limit is in bytes; a character takes up to 4
    if size > max_bytes:
        raise JsonRefused(f"frame of {size} bytes exceeds the limit of {max_bytes}", too_large=True)
    try:
        return pydantic_core.from_json(frame)
    except ValueError as exc:
        text = str(exc)
        if "recursion limit" in text:
            raise JsonRefused(
                f"not JSON that can be read: nested more than {MAX_DEPTH} levels deep"
            ) from None
        raise JsonRefused(f"not JSON: {text}") from None


__all__ = ["MAX_DEPTH", "JsonRefused", "frame_size", "load_json"]
