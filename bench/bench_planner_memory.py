"""Does planning hold a steady resident memory? N planner requests in one process.

One model is loaded (the embedded default, or `--model`) with the settings the model
manager gives it, prefix cache included, and one `Planner` plans the requests of the
evaluation set (resources/eval/requests.yaml, on their fleets) in turn, round and round
until `--requests` were planned or `--max-seconds` passed (the request in progress
finishes). The prefix cache fills during the first requests (it holds up to
`prefix_cache_mb` of saved states), so memory is compared from the end of `--warmup`
requests to the end: flat is the goal.

One line per request (seconds, resident memory, prefix-cache entries and bytes), then
`requests=<n> rss_warm_mib=<x> rss_end_mib=<y> growth_mib=<y-x> peak_rss_mib=<z> model=<name>`.

Usage: python bench/bench_planner_memory.py [--requests 100] [--warmup 20]
                                             [--max-seconds 3600] [--model PATH_OR_NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time

from eval_planner import chosen_model, contexts, data_dir, peak_rss_mib, rss_mib

from agents.models.backend import LlamaBackend
from agents.models.manager import ModelManager
from agents.planner.errors import PlanRejected
from agents.planner.evaluation import default_eval_dir, load_cases, load_fleets
from agents.planner.planner import Planner


async def run(options: argparse.Namespace) -> int:
    if options.requests < 1 or not 0 <= options.warmup < options.requests:
        print("need --requests >= 1 and 0 <= --warmup < --requests", file=sys.stderr)
        return 2
    eval_dir = default_eval_dir()
    fleets = load_fleets(eval_dir / "fleets.yaml")
    cases = load_cases(eval_dir / "requests.yaml", fleets)
    by_fleet = contexts(cases, fleets)
    entry, registry = chosen_model(options.model, data_dir(options.data_dir))
    plan = ModelManager(registry).plan(entry)
    print(
        f"model {entry.name}, {plan.placement.reason}; prefix cache "
        f"{plan.settings.prefix_cache_bytes / 2**20:.0f} MiB; rss before loading "
        f"{rss_mib():.0f} MiB",
        flush=True,
    )
    deadline = time.monotonic() + options.max_seconds
    warm = end = 0.0
    planned = 0
    async with LlamaBackend(plan.settings) as backend:
        planner = Planner(backend)
        print(f"loaded: rss {rss_mib():.0f} MiB", flush=True)
        for index, case in enumerate(itertools.islice(itertools.cycle(cases), options.requests)):
            if time.monotonic() > deadline:
                print(f"stopped after {planned} requests: --max-seconds passed", flush=True)
                break
            started = time.perf_counter()
            try:
                await planner.create(case.request, by_fleet[case.fleet])
                outcome = "planned "
            except PlanRejected:
                outcome = "rejected"
            planned += 1
            usage = await backend.prefix_cache_usage()
            rss = end = rss_mib()
            if planned == options.warmup or (options.warmup == 0 and planned == 1):
                warm = rss
            seconds = time.perf_counter() - started
            print(
                f"[{index + 1:>3}] {case.id:<28} {outcome} {seconds:6.2f}s "
                f"rss={rss:5.0f}MiB cache={usage.entries:>2} entries "
                f"{usage.held_bytes / 2**20:5.1f}MiB",
                flush=True,
            )
    if planned <= options.warmup:
        print("fewer requests than --warmup were planned: no growth to report", file=sys.stderr)
        return 1
    print(
        f"requests={planned} rss_warm_mib={warm:.0f} rss_end_mib={end:.0f} "
        f"growth_mib={end - warm:.0f} peak_rss_mib={peak_rss_mib():.0f} model={entry.name}"
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests to plan")
    parser.add_argument(
        "--warmup", type=int, default=20, help="requests before the baseline is taken"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=3600, help="stop starting requests after this"
    )
    parser.add_argument(
        "--model", help="a GGUF file or a registry name (default: the embedded default model)"
    )
    parser.add_argument(
        "--data-dir", help="where models and caches live (default: $ORRERY_HOME or a temp dir)"
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
