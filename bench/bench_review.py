"""How long the planner takes to review a run after a failure, with a real model.

A small plan (read notes.txt on laptop, then write a copy on nas) runs on two in-process
devices with real tools in temporary workspaces; notes.txt is not there, so its first star
fails, and the runtime's `PlanReviewer` asks the planner (the step planner, as the
runtime's default) what to do about it, within the review deadline, on the real clock. The
plan runs `--reviews` times, one review each (later reviews find the planner's prompt prefix
in the model's cache, as a server's do); each review's time is the `review.finished`
event's `seconds`, from the failure's review starting to its outcome. A review that times
out is waited for (its model call winds down) before the next run starts, so each is
measured alone.

The last line is
`reviews=<n> median_review_s=<x.xx> p95_review_s=<x.xx> timed_out=<k> deadline_s=<d>`
(p95 by nearest rank: the slowest review for fewer than 20).

Usage: python bench/bench_review.py [--model PATH_OR_NAME] [--reviews N] [--deadline S]
                                    [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
from pathlib import Path

from eval_planner import chosen_model, data_dir

from agents.events import Event, ReviewFinished, ReviewStarted
from agents.fleet_dispatcher import merged_tool_schemas
from agents.models.backend import LlamaBackend
from agents.models.manager import ModelManager
from agents.planner.context import PlanningContext
from agents.planner.decompose import StepPlanner
from agents.planner.review import EditPolicy, PlanReviewer
from app.runtime import InProcessDevice, Runtime
from app.settings import PlannerSettings
from memory import Store

REQUEST = "copy notes.txt from the laptop to the nas"
PLAN = """
name: copy notes
stars:
  - id: s1
    tool: fs.read
    on: laptop
    args: {path: notes.txt}
  - id: s2
    after: [s1]
    tool: fs.write
    on: nas
    args: {path: notes-copy.txt, content: "${s1.output.content}"}
"""
RUN_SECONDS = 300.0


async def review_once(
    runtime: Runtime, planner: StepPlanner, deadline: float
) -> tuple[ReviewFinished, str]:
    """Run the failing plan once with a reviewer; its review's end and the reasons."""
    constellation = runtime.parse_plan(PLAN)
    devices = runtime.dispatcher.dispatchers
    reviewer = PlanReviewer(
        runtime.orchestrator,
        planner,
        constellation.id,
        request=REQUEST,
        context=lambda: PlanningContext.from_devices(
            runtime.dispatcher.devices(), merged_tool_schemas(devices)
        ),
        policy=EditPolicy.ON_FAILURE,
        max_reviews=1,
        deadline_s=deadline,
    )
    seen: list[Event] = []

    def mine(event: Event) -> None:
        if event.constellation_id == constellation.id:
            seen.append(event)

    stop = runtime.stream.listen(mine)
    try:
        runtime.start_constellation(constellation)
        await asyncio.wait_for(runtime.orchestrator.wait(constellation.id), RUN_SECONDS)
        await asyncio.wait_for(reviewer.settled(), RUN_SECONDS)
    finally:
        stop()
        reviewer.close()
    started = next(e for e in seen if isinstance(e, ReviewStarted))
    finished = next(e for e in seen if isinstance(e, ReviewFinished))
    return finished, "; ".join(started.reasons)


async def run(options: argparse.Namespace) -> int:
    entry, registry = chosen_model(options.model, data_dir(options.data_dir))
    plan = ModelManager(registry).plan(entry)
    deadline = float(options.deadline)
    print(f"model {entry.name} ({entry.path.name}), {plan.placement.reason}; deadline {deadline}s")
    seconds: list[float] = []
    timed_out = 0
    with tempfile.TemporaryDirectory(prefix="orrery-bench-review-") as tmp:
        root = Path(tmp)
        devices = [InProcessDevice(root / name, name=name) for name in ("laptop", "nas")]
        with Store.open_path(root / "orrery.db") as store:
            async with (
                LlamaBackend(plan.settings) as backend,
                Runtime(store, devices) as runtime,
            ):
                print(f"model loaded in {backend.load_seconds:.1f}s", flush=True)
                planner = StepPlanner(backend)
                for index in range(1, options.reviews + 1):
                    finished, reasons = await review_once(runtime, planner, deadline)
                    seconds.append(finished.seconds)
                    timed_out += finished.outcome == "timed_out"
                    print(
                        f"review {index}/{options.reviews} ({reasons}): {finished.seconds:.2f}s "
                        f"{finished.describe()}",
                        flush=True,
                    )
    ordered = sorted(seconds)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    print(
        f"reviews={len(seconds)} median_review_s={statistics.median(seconds):.2f} "
        f"p95_review_s={p95:.2f} timed_out={timed_out} deadline_s={deadline:g}"
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model", help="a GGUF file or a registry name (default: the embedded default model)"
    )
    parser.add_argument("--reviews", type=int, default=6, help="reviews to time (default 6)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=PlannerSettings().review_deadline_s,
        help="the review deadline in seconds (default: [planner] review_deadline_s's default)",
    )
    parser.add_argument(
        "--data-dir", help="where models and caches live (default: $ORRERY_HOME or a temp dir)"
    )
    options = parser.parse_args()
    if options.reviews < 1 or options.deadline <= 0:
        parser.error("--reviews must be at least 1 and --deadline positive")
    sys.exit(asyncio.run(run(options)))


if __name__ == "__main__":
    main()
