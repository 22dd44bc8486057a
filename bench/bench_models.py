"""What Orrery's model backend costs, and what prompt-prefix reuse saves, in one run.

(1) Generation speed: the same chat (greedy, `--tokens` new tokens at most) through
    `agents.models.backend.LlamaBackend` (a worker thread, a queue, pieces handed to the
    event loop) and through a `llama_cpp.Llama` called directly (streaming, same settings,
    same thread count), alternating `--rounds` times. Tokens/s counts the tokens after the
    first over the time after the first (prompt evaluation excluded on both sides).
    backend_ratio = median(ours) / median(direct); goal >= 0.95.
(2) Prefix reuse: a planner-like prompt (a system prompt with the built-in tools' JSON
    schemas and a catalogue of devices, then a short request). With a freshly loaded model:
    call 1 (cold), an unrelated chat in between, then call 2 with the same system prompt
    and another request. Prompt time = time to the first token. prefix_speedup =
    median(call 1) / median(call 2) over `--trials` fresh loads; goal >= 3.

The last line is `backend_ratio=<x> prefix_speedup=<y>`.

Usage: python bench/bench_models.py [--model PATH] [--tokens 96] [--rounds 5] [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.models.backend import LlamaBackend, LoadSettings
from agents.models.llama_log import route_llama_logging
from agents.models.manager import ModelManager
from agents.models.registry import ModelRegistry
from devices.tools import default_tools

STORY = [{"role": "user", "content": "Tell a long story about a lighthouse keeper and a storm."}]


def chosen_model(path: str | None) -> tuple[Path, str | None]:
    """The GGUF to measure and its llama-cpp-python chat format (None: its own template)."""
    data = Path(tempfile.gettempdir()) / "orrery-bench-models"
    registry = ModelRegistry.discover(data_dir=data, paths=[Path(path)] if path else [])
    entry = registry.default()
    if path:
        entry = next(e for e in registry.entries() if e.path.resolve() == Path(path).resolve())
    plan = ModelManager(registry, free_vram=lambda: None).plan(entry)
    return entry.path, plan.settings.chat_format


def planner_system_prompt() -> str:
    tools = json.dumps(default_tools().schemas(), separators=(",", ":"))
    devices = "\n".join(
        f"- device{i:02d}: platform linux, labels [rack{i % 4}, {'gpu' if i % 3 == 0 else 'cpu'}]"
        for i in range(24)
    )
    return (
        "You are Orrery's planner. Turn the user's request into a constellation of stars "
        "(tasks) connected by lines (dependencies). Each star runs one tool on one device.\n"
        f"Tools and their argument schemas:\n{tools}\nConnected devices:\n{devices}\n"
        "Answer with JSON only."
    )


def settings(path: Path, chat_format: str | None, *, cache: bool) -> LoadSettings:
    return LoadSettings(
        path=path,
        n_ctx=4096,
        n_threads=os.cpu_count(),
        chat_format=chat_format,
        prefix_cache_bytes=256 * 2**20 * cache,
    )


def direct_tokens_per_second(llm: Any, tokens: int) -> float:
    started = time.perf_counter()
    first = 0.0
    count = 0
    for chunk in llm.create_chat_completion(
        messages=STORY, max_tokens=tokens, temperature=0.0, stream=True, seed=0
    ):
        if chunk["choices"][0].get("delta", {}).get("content"):
            if not first:
                first = time.perf_counter()
            count += 1
    ended = time.perf_counter()
    del started
    return (count - 1) / (ended - first) if count > 1 else 0.0


async def generation(
    path: Path, chat_format: str | None, tokens: int, rounds: int
) -> tuple[list[float], list[float]]:
    import llama_cpp

    route_llama_logging()  # as the backend does, so both sides log (and print) alike
    ours: list[float] = []
    direct: list[float] = []
    threads = os.cpu_count() or 1
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=4096,
        n_threads=threads,
        n_threads_batch=threads,
        seed=0,
        chat_format=chat_format,
        verbose=False,
    )
    async with LlamaBackend(settings(path, chat_format, cache=False)) as backend:
        await backend.chat(STORY, max_tokens=8)  # warm-up, both sides
        direct_tokens_per_second(llm, 8)
        for _ in range(rounds):
            completion = await backend.chat(STORY, max_tokens=tokens)
            ours.append(completion.tokens_per_second)
            direct.append(await asyncio.to_thread(direct_tokens_per_second, llm, tokens))
    llm.close()
    return ours, direct


async def prefix(
    path: Path, chat_format: str | None, trials: int
) -> tuple[list[float], list[float], int, int]:
    system = {"role": "system", "content": planner_system_prompt()}
    cold: list[float] = []
    warm: list[float] = []
    cold_tokens = warm_tokens = 0
    for _ in range(trials):
        async with LlamaBackend(settings(path, chat_format, cache=True)) as backend:
            first = await backend.chat(
                [system, {"role": "user", "content": "Collect disk usage from every device."}],
                max_tokens=1,
            )
            await backend.chat([{"role": "user", "content": "What is 2 + 2?"}], max_tokens=4)
            second = await backend.chat(
                [system, {"role": "user", "content": "Back up /etc on the rack1 devices."}],
                max_tokens=1,
            )
        cold.append(first.prompt_seconds)
        warm.append(second.prompt_seconds)
        cold_tokens, warm_tokens = first.prompt_tokens_evaluated, second.prompt_tokens_evaluated
    return cold, warm, cold_tokens, warm_tokens


async def run(options: argparse.Namespace) -> None:
    path, chat_format = chosen_model(options.model)
    ours, direct = await generation(path, chat_format, options.tokens, options.rounds)
    cold, warm, cold_tokens, warm_tokens = await prefix(path, chat_format, options.trials)
    ratio = statistics.median(ours) / statistics.median(direct)
    speedup = statistics.median(cold) / statistics.median(warm)
    print(f"model {path.name}, {os.cpu_count()} threads, CPU")
    print(f"{'case':<58} {'median':>10}")
    print(f"{'(1) generation through LlamaBackend, tokens/s':<58} {statistics.median(ours):>10.1f}")
    print(
        f"{'(1) generation through llama_cpp.Llama directly, tokens/s':<58} "
        f"{statistics.median(direct):>10.1f}"
    )
    print(
        f"{f'(2) planner call 1, cold: {cold_tokens} prompt tokens, s':<58} "
        f"{statistics.median(cold):>10.3f}"
    )
    print(
        f"{f'(2) planner call 2, shared prefix: {warm_tokens} evaluated, s':<58} "
        f"{statistics.median(warm):>10.3f}"
    )
    print(f"backend_ratio={ratio:.3f} prefix_speedup={speedup:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", help="a GGUF file (default: the embedded default model)")
    parser.add_argument("--tokens", type=int, default=96, help="new tokens per generation")
    parser.add_argument("--rounds", type=int, default=5, help="alternating generation rounds")
    parser.add_argument("--trials", type=int, default=3, help="fresh loads for the prefix case")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
