"""The llama.cpp backend with the real embedded default model (Gemma-3-270M, 241.4 MiB)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from agents.models.backend import LlamaBackend, LoadSettings
from agents.models.errors import ModelFileCorrupt, ModelFileMissing, SchemaNotConvertible
from tests.agents.models.embedded import default_model_entry, default_model_settings

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture
async def backend() -> AsyncIterator[LlamaBackend]:
    async with LlamaBackend(default_model_settings()) as loaded:
        yield loaded


async def test_load_and_chat(backend: LlamaBackend) -> None:
    completion = await backend.chat(USER, max_tokens=40)
    assert backend.loaded
    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    assert 0 < completion.completion_tokens <= 40
    assert completion.prompt_tokens_evaluated > 5  # the chat template wrapped the question
    assert 0 < completion.prompt_seconds <= completion.total_seconds


async def test_generation_is_repeatable_at_temperature_zero(backend: LlamaBackend) -> None:
    # A fresh model gives the same text for the same chat. (The same model asked twice
    # may not: a reused prompt prefix is evaluated in other batch sizes, which changes
    # the floating-point sums slightly, and greedy decoding can then diverge.)
    first = await backend.chat(USER, max_tokens=30)
    async with LlamaBackend(backend.settings) as fresh:
        second = await fresh.chat(USER, max_tokens=30)
    assert first.text == second.text


async def test_stream_yields_the_completion_piece_by_piece(backend: LlamaBackend) -> None:
    stream = backend.stream(USER, max_tokens=40)
    pieces = [piece async for piece in stream]
    assert len(pieces) > 1
    assert stream.completion is not None
    assert "".join(pieces) == stream.completion.text
    assert stream.completion.completion_tokens == len(pieces)


async def test_closing_a_stream_stops_generation_and_frees_the_worker(
    backend: LlamaBackend,
) -> None:
    long_task = [{"role": "user", "content": "Count from 1 to 500, one number per line."}]
    stream = backend.stream(long_task, max_tokens=400)
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    assert stream.completion is not None
    assert stream.completion.finish_reason == "cancelled"
    assert stream.completion.completion_tokens < 50
    after = await backend.chat(USER, max_tokens=10)  # the worker took the next job
    assert after.text


async def test_cancelling_the_waiting_task_stops_generation(backend: LlamaBackend) -> None:
    long_task = [{"role": "user", "content": "Write a very long story about a lighthouse."}]
    stream = backend.stream(long_task, max_tokens=400)
    pieces: list[str] = []

    async def consume() -> None:
        async for piece in stream:
            pieces.append(piece)

    task = asyncio.create_task(consume())
    while len(pieces) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.aclose()
    assert stream.completion is not None
    assert stream.completion.finish_reason == "cancelled"
    assert stream.completion.completion_tokens < 100
    assert (await backend.chat(USER, max_tokens=5)).completion_tokens > 0


class Step(BaseModel):
    tool: str = Field(json_schema_extra={"enum": ["shell.run", "fs.read", "fs.write"]})
    device: str = Field(json_schema_extra={"enum": ["laptop", "server"]})


class Plan(BaseModel):
    name: str = Field(max_length=40)
    steps: list[Step] = Field(min_length=1, max_length=3)


async def test_schema_constrained_output_validates(backend: LlamaBackend) -> None:
    messages = [
        {"role": "system", "content": "You plan tasks. Answer with JSON only."},
        {"role": "user", "content": "Back up the laptop's home directory to the server."},
    ]
    completion = await backend.chat(messages, max_tokens=200, schema=Plan.model_json_schema())
    plan = Plan.model_validate_json(completion.text)  # raises if the grammar let it stray
    assert 1 <= len(plan.steps) <= 3
    assert json.loads(completion.text)["steps"][0]["tool"] in ("shell.run", "fs.read", "fs.write")


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "integer", "minimum": 3}, "minimum"),
        ({"anyOf": [{"type": "string"}], "oneOf": [{"type": "string"}]}, "oneOf"),
        ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "'not'"),
    ],
)
async def test_a_schema_the_grammar_cannot_enforce_is_refused(
    backend: LlamaBackend, schema: dict[str, object], needle: str
) -> None:
    with pytest.raises(SchemaNotConvertible) as refused:
        backend.stream(USER, schema=schema)
    assert needle in str(refused.value)
    assert (await backend.chat(USER, max_tokens=5)).text  # nothing was queued or broken


async def test_a_shared_prompt_prefix_is_not_evaluated_again(backend: LlamaBackend) -> None:
    catalogue = "\n".join(f"- tool{i}.run: does thing number {i} on a device" for i in range(60))
    system = {"role": "system", "content": f"You plan tasks with these tools:\n{catalogue}"}
    first = await backend.chat([system, {"role": "user", "content": "Clean /tmp."}], max_tokens=4)
    await backend.chat([{"role": "user", "content": "Something unrelated."}], max_tokens=4)
    second = await backend.chat([system, {"role": "user", "content": "Copy logs."}], max_tokens=4)
    assert first.prompt_tokens_evaluated > 500
    assert second.prompt_tokens_evaluated < first.prompt_tokens_evaluated / 10


async def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    backend = LlamaBackend(LoadSettings(path=tmp_path / "nope.gguf"))
    with pytest.raises(ModelFileMissing, match=r"nope\.gguf does not exist: point"):
        await backend.load()
    await backend.close()


async def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("these are not weights")
    backend = LlamaBackend(LoadSettings(path=path))
    with pytest.raises(ModelFileCorrupt, match="not a GGUF file"):
        await backend.load()
    await backend.close()


@pytest.mark.parametrize("keep", [64 * 1024, 0.5])
async def test_a_truncated_model_file_is_a_clear_error(tmp_path: Path, keep: float) -> None:
    source = default_model_entry().path
    size = int(keep if keep > 1 else source.stat().st_size * keep)
    path = tmp_path / "truncated.gguf"
    with source.open("rb") as reader, path.open("wb") as writer:
        shutil.copyfileobj(_limited(reader, size), writer)
    backend = LlamaBackend(LoadSettings(path=path))
    with pytest.raises(ModelFileCorrupt, match=r"truncated\.gguf"):
        await backend.load()
    await backend.close()


class _limited:  # a file-like wrapper
    def __init__(self, handle: object, size: int) -> None:
        self.handle = handle
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data: bytes = self.handle.read(n)  # type: ignore[attr-defined]
        self.left -= len(data)
        return data
