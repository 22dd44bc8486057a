"""How well the planner turns requests into constellations, TaskBench style, in one run.

Every case of the evaluation set (resources/eval/requests.yaml, on the fleets of
resources/eval/fleets.yaml; `--cases FILE` and `--fleets FILE` name other files of the same
format) goes through the planner (the step planner, `--planner whole` for the whole-plan
generation) with a planning context made of the case's fleet and the built-in tools'
schemas. A plan counts as valid when the planner returns one (after its own bounded
repair); it is scored by node F1 (tools, as a multiset), edge F1 ((upstream tool,
downstream tool) pairs, as a multiset) and whether the expected parallel groups can still
run at once. An invalid plan scores 0 for both F1s.

Execution mode (unless `--no-run`, `bench/eval_runs.py`): each valid plan runs on
in-process devices named as in the case's fleet, each with a temporary workspace seeded
with the files the request mentions, shell.run and python.run inside bubblewrap without
network, http.get answering only the request's own URLs; a run succeeds when the
constellation succeeds and no argument names a file or folder the request never
mentioned. `run_success` is the share of cases whose run succeeded (an invalid plan
counts as failed).

The per-case lines come as they finish (each with the process's resident memory after it),
then a per-category table, and the last line is
`valid_rate=<x.xx> node_f1=<x.xxx> edge_f1=<x.xxx> run_success=<x.xx> median_plan_s=<x.xx>
model=<name> peak_rss_mib=<n>` (one line; run_success is n/a with `--no-run`; the peak
resident memory of the whole run, from getrusage).

`--memory` adds the memory mode, leave-one-out (`agents.planner.eval_memory`): a task
memory holds every case's expected plan as a past successful run on its fleet, and each
case is planned again as the runtime plans a request in words, recalling the nearest
*other* cases (reused when one is the same request, else planned by the planner of
`--planner` with them as its worked examples, as the runtime does: the step planner
shows them to the model only when it falls back to the whole plan). Both
runs are measured in one go; the last line is then
`memory_node_f1=<x.xxx> memory_edge_f1=<x.xxx> node_f1=<x.xxx> edge_f1=<x.xxx>
memory_valid_rate=<x.xx> valid_rate=<x.xx> reused=<n> model=<name>` (on one line).

Usage: python bench/eval_planner.py [--model PATH_OR_NAME] [--limit N] [--category C]
                                     [--cases FILE] [--fleets FILE] [--no-run]
                                     [--planner steps|whole] [--json FILE]
                                     [--data-dir DIR] [--memory]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.models.backend import LlamaBackend
from agents.models.manager import ModelManager
from agents.models.registry import ModelEntry, ModelRegistry
from agents.planner.context import PlanningContext
from agents.planner.decompose import StepPlanner
from agents.planner.errors import PlanRejected
from agents.planner.evaluation import (
    CATEGORIES,
    CaseScore,
    EvalCase,
    EvalDevice,
    case_score,
    default_eval_dir,
    failed_case_score,
    fleet_devices,
    fleet_tools,
    load_cases,
    load_fleets,
    summarise,
)
from agents.planner.planner import Planner
from devices.tools import default_tools


def data_dir(explicit: str | None) -> Path:
    """`--data-dir`, else `$ORRERY_HOME`, else a temporary folder shared with bench_models."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    home = os.environ.get("ORRERY_HOME")
    if home:
        return Path(home).expanduser().resolve()
    return Path(tempfile.gettempdir()) / "orrery-bench-models"


def chosen_model(model: str | None, data: Path) -> tuple[ModelEntry, ModelRegistry]:
    """The registry entry for `--model` (a GGUF path or a registry name; default: default)."""
    path = Path(model).expanduser() if model else None
    is_file = path is not None and path.is_file()
    registry = ModelRegistry.discover(data_dir=data, paths=[path] if is_file and path else [])
    if model is None:
        return registry.default(), registry
    if is_file and path is not None:
        wanted = path.resolve()
        for entry in registry.entries():
            if entry.path.resolve() == wanted:
                return entry, registry
        problems = "; ".join(str(problem) for problem in registry.problems)
        raise SystemExit(f"cannot use {path} as a model: {problems or 'not found'}")
    return registry.get(model), registry


def rss_mib() -> float:
    """The resident memory of this process now, in MiB (Linux; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return peak_rss_mib()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB (getrusage's ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes there, KiB here


def contexts(
    cases: list[EvalCase], fleets: dict[str, list[EvalDevice]]
) -> dict[str, PlanningContext]:
    """One planning context per fleet the cases use: its devices and their tools' schemas."""
    schemas = default_tools().schemas()
    made: dict[str, PlanningContext] = {}
    for name in sorted({case.fleet for case in cases}):
        tools = fleet_tools(fleets[name])
        made[name] = PlanningContext.from_devices(
            fleet_devices(fleets[name]),
            {tool: schema for tool, schema in schemas.items() if tool in tools},
        )
    return made


async def evaluate(
    planner: Planner,
    case: EvalCase,
    context: PlanningContext,
    fleet: list[EvalDevice] | None = None,
) -> CaseScore:
    """One case planned (and, given its `fleet`, run: the execution mode)."""
    started = time.perf_counter()
    try:
        outcome = await planner.create(case.request, context)
    except PlanRejected as exc:
        # `reasons` holds one line per attempt: the last says why the plan was given up.
        error = exc.reasons[-1] if exc.reasons else str(exc)
        failed = failed_case_score(
            case, error, seconds=time.perf_counter() - started, attempts=len(exc.reasons)
        )
        return failed if fleet is None else dataclasses.replace(failed, run_ok=False)
    score = case_score(case, outcome.spec, seconds=outcome.seconds, attempts=outcome.attempts)
    if fleet is None:
        return score
    from eval_runs import run_plan

    ran = await run_plan(case, outcome.spec, fleet)
    return dataclasses.replace(score, run_ok=ran.ok, run_error=ran.reason)


def case_line(index: int, total: int, score: CaseScore, rss: float) -> str:
    width = len(str(total))
    head = f"[{index:>{width}}/{total}] {score.case_id:<28} {score.category:<10}"
    timing = f"{score.seconds:6.2f}s x{score.attempts} rss={rss:4.0f}MiB"
    if not score.valid:
        return f"{head} INVALID {timing}  {score.error}"
    par = {None: "-", True: "yes", False: "no"}[score.parallel_ok]
    why = " ".join((score.run_error or "").split())
    ran = {None: "", True: " run=ok", False: f" run=FAILED ({why})"}[score.run_ok]
    return (
        f"{head} valid   {timing}  node_f1={score.node_f1:.3f} "
        f"edge_f1={score.edge_f1:.3f} parallel={par}{ran}"
    )


async def run(options: argparse.Namespace) -> int:
    eval_dir = default_eval_dir()
    fleets = load_fleets(Path(options.fleets) if options.fleets else eval_dir / "fleets.yaml")
    cases_file = Path(options.cases) if options.cases else eval_dir / "requests.yaml"
    cases = load_cases(cases_file, fleets)
    if options.category:
        cases = [case for case in cases if case.category == options.category]
    if options.limit is not None:
        cases = cases[: options.limit]
    if not cases:
        print("no cases to run", file=sys.stderr)
        return 2

    entry, registry = chosen_model(options.model, data_dir(options.data_dir))
    plan = ModelManager(registry).plan(entry)
    by_fleet = contexts(cases, fleets)
    print(
        f"model {entry.name} ({entry.path.name}), {plan.placement.reason}; "
        f"{len(cases)} cases on {len(by_fleet)} fleets"
    )

    scores: list[CaseScore] = []
    kind = StepPlanner if options.planner == "steps" else Planner
    async with LlamaBackend(plan.settings) as backend:
        planner = kind(backend, examples=[] if options.no_examples else None)
        for index, case in enumerate(cases, start=1):
            fleet = None if options.no_run else fleets[case.fleet]
            score = await evaluate(planner, case, by_fleet[case.fleet], fleet)
            scores.append(score)
            print(case_line(index, len(cases), score, rss_mib()), flush=True)

    memory_scores: list[CaseScore] = []
    reused = 0
    if options.memory:
        async with LlamaBackend(plan.settings) as backend:
            memory_scores, reused = await evaluate_with_memory(
                kind(backend), cases, fleets, by_fleet, cases_file
            )

    summary = summarise(scores)
    if options.json:
        report: dict[str, Any] = {
            "model": entry.name,
            "cases": [dataclasses.asdict(score) for score in scores],
            "summary": dataclasses.asdict(summary),
            "peak_rss_mib": round(peak_rss_mib()),
        }
        text = json.dumps(report, indent=2) + "\n"
        await asyncio.to_thread(Path(options.json).write_text, text, encoding="utf-8")
    print()
    print(summary.table())
    peak = f"peak_rss_mib={peak_rss_mib():.0f}"
    if options.memory:
        with_memory = summarise(memory_scores)
        print()
        print("with memory (leave-one-out):")
        print(with_memory.table())
        print(f"{summary.last_line(entry.name)} {peak}")
        print(
            f"memory_node_f1={with_memory.node_f1:.3f} memory_edge_f1={with_memory.edge_f1:.3f} "
            f"node_f1={summary.node_f1:.3f} edge_f1={summary.edge_f1:.3f} "
            f"memory_valid_rate={with_memory.valid_rate:.2f} valid_rate={summary.valid_rate:.2f} "
            f"reused={reused} model={entry.name} {peak}"
        )
        return 0
    print(f"{summary.last_line(entry.name)} {peak}")
    return 0


async def evaluate_with_memory(
    planner: Planner,
    cases: list[EvalCase],
    fleets: dict[str, list[EvalDevice]],
    by_fleet: dict[str, PlanningContext],
    cases_file: Path,
) -> tuple[list[CaseScore], int]:
    """Every case planned with the memory of all the others (see the module docstring)."""
    from agents.planner.eval_memory import remember_cases
    from memory import Store
    from memory.recall import TaskRecall
    from memory.tree import TaskTree

    everything = load_cases(cases_file, fleets)
    scores: list[CaseScore] = []
    reused = 0
    with (
        tempfile.TemporaryDirectory(prefix="orrery-eval-memory-") as home,
        Store.open_path(Path(home) / "orrery.db") as store,
    ):
        tree = TaskTree(store)
        remember_cases(tree, everything, fleets, default_tools().schemas())
        recall = TaskRecall(tree, Path(home) / "recall")
        try:
            recall.catch_up()
            print(f"memory: {tree.count_requests()} remembered requests", flush=True)
            for index, case in enumerate(cases, start=1):
                score, was_reused = await evaluate_one_with_memory(
                    planner, case, by_fleet[case.fleet], recall
                )
                reused += int(was_reused)
                scores.append(score)
                how = " (reused)" if was_reused else ""
                line = case_line(index, len(cases), score, rss_mib())
                print(f"memory {line}{how}", flush=True)
        finally:
            recall.close()
    return scores, reused


async def evaluate_one_with_memory(
    planner: Planner, case: EvalCase, context: PlanningContext, recall: Any
) -> tuple[CaseScore, bool]:
    """One case planned with memory: its score, and whether a remembered plan was reused."""
    from agents.planner.eval_memory import plan_case

    started = time.perf_counter()
    try:
        planned = await plan_case(planner, case, context, recall)
    except PlanRejected as exc:
        error = exc.reasons[-1] if exc.reasons else str(exc)
        failed = failed_case_score(
            case, error, seconds=time.perf_counter() - started, attempts=len(exc.reasons)
        )
        return failed, False
    assert planned.spec is not None
    score = case_score(case, planned.spec, seconds=planned.seconds, attempts=planned.attempts)
    return score, planned.reused


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model", help="a GGUF file or a registry name (default: the embedded default model)"
    )
    parser.add_argument("--limit", type=int, help="run only the first N cases")
    parser.add_argument(
        "--cases", help="a requests file in the format of resources/eval/requests.yaml"
    )
    parser.add_argument(
        "--fleets", help="a fleets file in the format of resources/eval/fleets.yaml"
    )
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="only plan: do not run each valid plan on in-process devices (bench/eval_runs.py)",
    )
    parser.add_argument(
        "--planner",
        choices=("steps", "whole"),
        default="steps",
        help="steps: decompose the request (the default); whole: one generated plan",
    )
    parser.add_argument("--category", choices=CATEGORIES, help="run only this category")
    parser.add_argument(
        "--no-examples",
        action="store_true",
        help="plan without the worked examples of resources/planner/examples.yaml",
    )
    parser.add_argument("--json", help="write per-case results (and the summary) to this file")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also plan every case with the task memory of the other cases (leave-one-out)",
    )
    parser.add_argument(
        "--data-dir", help="where models and caches live (default: $ORRERY_HOME or a temp dir)"
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
