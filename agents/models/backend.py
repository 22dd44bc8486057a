"""One loaded GGUF model, driven from asyncio through a worker thread.

`LlamaBackend` owns one `llama_cpp.Llama`. Every call into llama.cpp runs on the backend's
own thread, one job at a time, taken from a queue; the event loop only waits on futures
and on a stream of text pieces, so it never blocks. Generation streams (`stream`), can be
cancelled between tokens (cancel the awaiting task, or close the stream), can be
constrained to a JSON schema (through `grammar.schema_to_grammar`, which refuses schemas it
cannot enforce), and reuses the evaluated prompt prefix: llama.cpp keeps the KV cache of
the last prompt, and a RAM cache of saved states brings back a shared prefix (a planner's
system prompt and tool catalogue) after an unrelated call in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.models.chat_format import fold_system_messages
from agents.models.errors import (
    BackendUnavailable,
    GenerationFailed,
    ModelError,
    ModelFileCorrupt,
    ModelFileMissing,
    ModelNotLoaded,
)
from agents.models.grammar import schema_to_grammar
from agents.models.llama_log import route_llama_logging

if TYPE_CHECKING:
    from llama_cpp import Llama

    from agents.models.prefix_cache import PrefixCacheUsage

log = logging.getLogger("orrery.models")

ChatMessage = dict[str, str]
"""{"role": "system" | "user" | "assistant", "content": "..."}"""

GGUF_MAGIC = b"GGUF"
_IDS = itertools.count(1)


@dataclass(frozen=True)
class LoadSettings:
    """How to load one model file."""

    path: Path
    n_ctx: int = 4096
    n_gpu_layers: int = 0  # -1: all layers on the GPU
    n_threads: int | None = None  # None: llama-cpp-python's default (half the cores)
    chat_format: str | None = None  # None: the file's own template
    seed: int = 0
    prefix_cache_bytes: int = 256 * 2**20  # 0 turns the saved-state cache off


@dataclass(frozen=True)
class Completion:
    """What one generation produced, with its timings."""

    text: str
    finish_reason: str  # "stop", "length" or "cancelled"
    completion_tokens: int
    prompt_tokens_evaluated: int  # prompt tokens llama.cpp had to evaluate (not reused)
    prompt_seconds: float  # from the start of the job to the first token
    total_seconds: float

    @property
    def generation_seconds(self) -> float:
        return max(self.total_seconds - self.prompt_seconds, 0.0)

    @property
    def tokens_per_second(self) -> float:
        """Generation speed after the first token."""
        tokens = self.completion_tokens - 1
        return tokens / self.generation_seconds if tokens > 0 and self.generation_seconds else 0.0


class _End:
    __slots__ = ("completion", "error")

    def __init__(self, completion: Completion | None, error: BaseException | None) -> None:
        self.completion = completion
        self.error = error


@dataclass(eq=False)
class _Job:
    """One unit of work for the worker thread."""

    run: Callable[[Llama | None], Any]
    done: Callable[[Any, BaseException | None], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class ChatStream:
    """The text pieces of one generation, as they come; `completion` once it ended.

    Iterate it with `async for`. Leaving the loop early, `aclose()`, or cancelling the task
    that iterates stops the generation at the next token.
    """

    def __init__(self, job: _Job, pieces: asyncio.Queue[str | _End]) -> None:
        self._job = job
        self._pieces = pieces
        self.completion: Completion | None = None
        self._finished = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        try:
            while True:
                item = await self._pieces.get()
                if isinstance(item, _End):
                    self._finished = True
                    if item.error is not None:
                        raise item.error
                    self.completion = item.completion
                    return
                yield item
        finally:
            if not self._finished:
                self._job.cancelled.set()

    async def aclose(self) -> None:
        """Stop the generation (if still running) and wait until the worker let go of it."""
        if self._finished:
            return
        self._job.cancelled.set()
        while True:
            item = await self._pieces.get()
            if isinstance(item, _End):
                self._finished = True
                self.completion = item.completion
                return

    async def text(self) -> Completion:
        """Consume the whole stream; the completion."""
        async for _ in self:
            pass
        assert self.completion is not None
        return self.completion


class LlamaBackend:
    """One model in memory, one worker thread, jobs in order."""

    def __init__(self, settings: LoadSettings, *, name: str = "") -> None:
        self.settings = settings
        self.name = name or settings.path.stem
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._llama: Llama | None = None
        self._load_seconds = 0.0
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def load_seconds(self) -> float:
        return self._load_seconds

    async def load(self) -> None:
        """Load the model on the worker thread; raises `ModelError` subclasses."""
        if self._closed:
            raise ModelNotLoaded(self.name, "the backend was closed")
        if self._llama is not None:
            return
        check_model_file(self.settings.path)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name=f"llama-{self.name}-{next(_IDS)}", daemon=True
            )
            self._thread.start()
        started = time.perf_counter()
        self._llama = await self._submit(lambda _: _create_llama(self.settings))
        self._load_seconds = time.perf_counter() - started
        log.info(
            "model %s loaded in %.2fs from %s", self.name, self._load_seconds, self.settings.path
        )

    async def close(self) -> None:
        """Free the model and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        if self._llama is not None:
            with contextlib.suppress(Exception):
                await self._submit(lambda llm: llm.close() if llm is not None else None)
            self._llama = None
        self._jobs.put(None)
        await asyncio.to_thread(thread.join, 30)

    async def __aenter__(self) -> LlamaBackend:
        await self.load()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ generation

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        schema: dict[str, Any] | None = None,
        grammar: str | None = None,
        stop: Sequence[str] = (),
    ) -> ChatStream:
        """Start a chat generation; its pieces arrive on the returned stream.

        `schema` (a JSON schema) or `grammar` (GBNF text) constrain the output; a schema the
        grammar cannot enforce raises `SchemaNotConvertible` here, before anything runs.
        """
        if self._llama is None:
            raise ModelNotLoaded(self.name, "call load() first")
        if schema is not None:
            grammar = schema_to_grammar(schema)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | _End] = asyncio.Queue()
        request = _ChatRequest(
            messages=fold_system_messages(messages, self.settings.chat_format),
            max_tokens=max_tokens,
            temperature=temperature,
            grammar=grammar,
            stop=list(stop),
        )

        def post(item: str | _End) -> None:
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody listens any more
                job.cancelled.set()

        job = _Job(
            run=lambda llm: _generate(llm, request, job.cancelled, post, self.settings),
            done=lambda result, error: post(_End(result, error)),
        )
        self._jobs.put(job)
        return ChatStream(job, pieces)

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        schema: dict[str, Any] | None = None,
        grammar: str | None = None,
        stop: Sequence[str] = (),
    ) -> Completion:
        """Generate a whole reply. Cancelling the awaiting task stops the generation."""
        stream = self.stream(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            schema=schema,
            grammar=grammar,
            stop=stop,
        )
        try:
            return await stream.text()
        except asyncio.CancelledError:
            await asyncio.shield(stream.aclose())
            raise

    async def tokenize(self, text: str) -> list[int]:
        """The model's tokens for `text` (no special tokens added)."""
        return list(
            await self._submit(lambda llm: _loaded(llm).tokenize(text.encode(), add_bos=False))
        )

    async def prefix_cache_usage(self) -> PrefixCacheUsage:
        """How many saved prompt states the prefix cache holds, and their bytes."""
        from agents.models.prefix_cache import cache_usage

        return await self._submit(lambda llm: cache_usage(_loaded(llm)))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ worker

    async def _submit(self, run: Callable[[Llama | None], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            def settle() -> None:
                if future.done():
                    return
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        self._jobs.put(_Job(run=run, done=done))
        return await future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancelled.is_set():
                job.done(_cancelled_completion(), None)
                continue
            try:
                result = job.run(self._llama)
            except ModelError as exc:
                job.done(None, exc)
            except Exception as exc:  # llama.cpp errors surface as plain exceptions
                log.exception("model %s: job failed", self.name)
                job.done(None, GenerationFailed(self.name, f"{type(exc).__name__}: {exc}"))
            else:
                job.done(result, None)


# ---------------------------------------------------------------------- on the worker


@dataclass(frozen=True)
class _ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    grammar: str | None
    stop: list[str]


def check_model_file(path: Path) -> None:
    """Raise `ModelFileMissing` / `ModelFileCorrupt` before llama.cpp sees a bad file."""
    if not path.is_file():
        raise ModelFileMissing(path)
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelFileCorrupt(path, f"it cannot be read ({exc.strerror})") from exc
    if magic != GGUF_MAGIC:
        raise ModelFileCorrupt(path, "not a GGUF file (wrong magic bytes)")


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailable(str(exc)) from exc
    route_llama_logging()
    return llama_cpp


def _create_llama(settings: LoadSettings) -> Llama:
    _import_llama()
    from agents.models.prefix_cache import CheckedRAMCache, LeanLlama

    try:
        llm = LeanLlama(
            model_path=str(settings.path),
            n_ctx=settings.n_ctx,
            n_gpu_layers=settings.n_gpu_layers,
            chat_format=settings.chat_format,
            seed=settings.seed,
            verbose=False,
            n_threads=settings.n_threads or None,
            n_threads_batch=settings.n_threads or None,
        )
    except ValueError as exc:  # "Failed to load model from file": truncated, wrong tensors
        raise ModelFileCorrupt(
            settings.path, f"llama.cpp could not load it, truncated or damaged ({exc})"
        ) from exc
    if settings.prefix_cache_bytes > 0:
        llm.set_cache(CheckedRAMCache(capacity_bytes=settings.prefix_cache_bytes))
    return llm


def _loaded(llm: Llama | None) -> Llama:
    if llm is None:
        raise ModelNotLoaded("model", "call load() first")
    return llm


def _cancelled_completion() -> Completion:
    return Completion("", "cancelled", 0, 0, 0.0, 0.0)


def _generate(
    llm: Llama | None,
    request: _ChatRequest,
    cancelled: threading.Event,
    post: Callable[[str], None],
    settings: LoadSettings,
) -> Completion:
    model = _loaded(llm)
    llama_cpp = _import_llama()
    grammar = None
    if request.grammar is not None:
        grammar = llama_cpp.LlamaGrammar.from_string(request.grammar, verbose=False)
    started = time.perf_counter()
    first_token = 0.0
    llama_cpp.llama_perf_context_reset(model.ctx)
    chunks = model.create_chat_completion(
        messages=request.messages,  # type: ignore[arg-type]
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        grammar=grammar,
        stop=request.stop or None,
        stream=True,
        seed=settings.seed,
    )
    text: list[str] = []
    count = 0
    finish = "length"
    try:
        for chunk in chunks:
            if cancelled.is_set():
                finish = "cancelled"
                break
            choice = chunk["choices"][0]  # type: ignore[index]
            piece = choice.get("delta", {}).get("content")  # type: ignore[union-attr]
            if isinstance(piece, str) and piece:
                if not first_token:
                    first_token = time.perf_counter()
                count += 1
                text.append(piece)
                post(piece)
            if choice.get("finish_reason"):  # type: ignore[union-attr]
                finish = str(choice["finish_reason"])  # type: ignore[index]
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    ended = time.perf_counter()
    perf = llama_cpp.llama_perf_context(model.ctx)
    return Completion(
        text="".join(text),
        finish_reason=finish,
        completion_tokens=count,
        prompt_tokens_evaluated=int(perf.n_p_eval),
        prompt_seconds=(first_token or ended) - started,
        total_seconds=ended - started,
    )
