"""Scheduling overhead and schedule quality of the orchestrator on random DAGs.

For DAGs of 1,000 and 10,000 stars on 4 and 64 simulated devices (one task at a time
each), with simulated durations on a virtual clock, it prints:

- overhead per star: the real time of a whole run (submit to finish, events published
  to a listener; "run us") minus the time the simulated fleet alone takes for the same
  assignments and results ("fleet us": its timers and `TaskResult`s are the devices'
  work, not the orchestrator's), divided by the number of stars; beside it, the same
  figure for a bare list scheduler (a heap and counters, nothing else) on the same DAG,
  so the ratio shows what the orchestrator's bookkeeping costs;
- makespan ratio: virtual finishing time divided by the lower bound
  max(critical path, total work / devices). No schedule can beat 1.0. Beside it, the
  ratio a first-come-first-served scheduler reaches on the same DAG.

The scheduler sees each star's `estimate` (its duration, as a planner or history would
give it). The last line is `overhead_us_per_star=<x> makespan_ratio=<y>` for the
10,000-star, 64-device case.

Usage: python bench/bench_orchestrator.py [--seed N] [--repeat K]
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import random
import time
from dataclasses import dataclass

from agents.clock import VirtualClock
from agents.constellation import Constellation, Line, Star
from agents.orchestrator import Orchestrator
from agents.simulation import Outcome, SimulatedDispatcher, simulated_fleet
from protocol.tasks import TaskAssignment

TOOL = "sim.work"


@dataclass(frozen=True)
class RandomDag:
    durations: list[float]
    edges: list[tuple[int, int]]

    def critical_path(self) -> float:
        finish = [0.0] * len(self.durations)
        preds: list[list[int]] = [[] for _ in self.durations]
        for a, b in self.edges:
            preds[b].append(a)
        for i, duration in enumerate(self.durations):  # ids are a topological order
            finish[i] = duration + max((finish[p] for p in preds[i]), default=0.0)
        return max(finish)

    def lower_bound(self, devices: int) -> float:
        return max(self.critical_path(), sum(self.durations) / devices)


def random_dag(n: int, rng: random.Random) -> RandomDag:
    """Layered random DAG: each star depends on up to 3 stars from a recent window."""
    durations = [rng.uniform(1.0, 10.0) for _ in range(n)]
    edges: set[tuple[int, int]] = set()
    window = max(8, n // 50)
    for i in range(1, n):
        for _ in range(rng.randint(0, 3)):
            j = rng.randrange(max(0, i - window), i)
            edges.add((j, i))
    return RandomDag(durations, sorted(edges))


def to_constellation(dag: RandomDag) -> Constellation:
    stars = {
        f"s{i}": Star(id=f"s{i}", tool=TOOL, estimate=duration)
        for i, duration in enumerate(dag.durations)
    }
    lines = [Line(source=f"s{a}", target=f"s{b}") for a, b in dag.edges]
    return Constellation(id="bench", name="bench", stars=stars, lines=lines)


def run_orchestrator(dag: RandomDag, devices: int) -> tuple[float, float]:
    """(real seconds spent scheduling, virtual makespan)."""
    constellation = to_constellation(dag)
    clock = VirtualClock()
    durations = dag.durations

    def behaviour(assignment: TaskAssignment) -> Outcome:
        return Outcome(duration=durations[int(assignment.star_id[1:])])

    dispatcher = SimulatedDispatcher(clock, simulated_fleet(devices, tools=[TOOL]), behaviour)
    orchestrator = Orchestrator(dispatcher, clock=clock)
    seen = [0]

    def count(_: object) -> None:
        seen[0] += 1

    orchestrator.events.listen(count)
    gc.collect()
    started = time.perf_counter()
    orchestrator.submit(constellation)
    clock.run_until_idle()
    elapsed = time.perf_counter() - started
    final = orchestrator.constellation("bench")
    assert final.status.value == "succeeded", final.status
    assert seen[0] >= 3 * len(dag.durations)
    return elapsed, clock.now()


def run_fleet_alone(dag: RandomDag, devices: int) -> float:
    """Real seconds the simulated fleet itself takes for the same work: every star's
    (prebuilt) assignment through `SimulatedDispatcher.assign`, its virtual-clock timer
    and its `TaskResult` back to a sink that only hands out the next assignment. This is
    the devices' share of a run, not the orchestrator's, and is subtracted from it."""
    clock = VirtualClock()
    durations = dag.durations

    def behaviour(assignment: TaskAssignment) -> Outcome:
        return Outcome(duration=durations[int(assignment.star_id[1:])])

    fleet = simulated_fleet(devices, tools=[TOOL])
    dispatcher = SimulatedDispatcher(clock, fleet, behaviour)
    assignments = [
        TaskAssignment(
            constellation_id="bench",
            star_id=f"s{i}",
            attempt=1,
            device=f"dev{i % devices}",
            tool=TOOL,
        )
        for i in range(len(durations))
    ]
    pending = iter(assignments)

    class NextPlease:
        def on_progress(self, progress: object) -> None:
            pass

        def on_result(self, result: object) -> None:
            following = next(pending, None)
            if following is not None:
                dispatcher.assign(following)

        def on_devices_changed(self) -> None:
            pass

    dispatcher.attach(NextPlease())
    gc.collect()
    started = time.perf_counter()
    for assignment in assignments[:devices]:
        next(pending)
        dispatcher.assign(assignment)
    clock.run_until_idle()
    return time.perf_counter() - started


def run_baseline(dag: RandomDag, devices: int, *, fifo: bool = False) -> tuple[float, float]:
    """A bare list scheduler on a plain event heap: the floor for overhead.

    With the same priority rule as the orchestrator by default; with `fifo=True` stars
    start in the order they became ready, to show what the priority rule buys.
    """
    n = len(dag.durations)
    succ: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for a, b in dag.edges:
        succ[a].append(b)
        indegree[b] += 1
    level = [0.0] * n
    for i in range(n - 1, -1, -1):
        level[i] = dag.durations[i] + max((level[s] for s in succ[i]), default=0.0)
    gc.collect()
    started = time.perf_counter()
    if fifo:
        level = [0.0] * n  # ties everywhere: the heap falls back to readiness order
    order = itertools.count()
    ready = [(-level[i], next(order), i) for i in range(n) if indegree[i] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    free, now = devices, 0.0
    while ready or running:
        while ready and free:
            _, _, i = heapq.heappop(ready)
            heapq.heappush(running, (now + dag.durations[i], i))
            free -= 1
        now, done = heapq.heappop(running)
        free += 1
        for s in succ[done]:
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(ready, (-level[s], next(order), s))
    return time.perf_counter() - started, now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; best time kept")
    options = parser.parse_args()
    rng = random.Random(options.seed)

    print(
        f"{'stars':>6} {'devices':>7} {'edges':>6} {'run us':>7} {'fleet us':>8} "
        f"{'us/star':>8} {'bare us':>8} {'cost ratio':>10} {'makespan':>10} {'bound':>10} "
        f"{'ratio':>6} {'fifo ratio':>10}"
    )
    last = (0.0, 0.0)
    for n in (1_000, 10_000):
        dag = random_dag(n, rng)
        for devices in (4, 64):
            ours = min(
                (run_orchestrator(dag, devices) for _ in range(options.repeat)),
                key=lambda r: r[0],
            )
            fleet = min(run_fleet_alone(dag, devices) for _ in range(options.repeat))
            bare = min(
                (run_baseline(dag, devices) for _ in range(options.repeat)), key=lambda r: r[0]
            )
            fifo = run_baseline(dag, devices, fifo=True)
            bound = dag.lower_bound(devices)
            run_us, fleet_us = ours[0] / n * 1e6, fleet / n * 1e6
            us, bare_us = run_us - fleet_us, bare[0] / n * 1e6
            ratio = ours[1] / bound
            print(
                f"{n:>6} {devices:>7} {len(dag.edges):>6} {run_us:>7.1f} {fleet_us:>8.1f} "
                f"{us:>8.1f} {bare_us:>8.2f} {us / bare_us:>10.1f} {ours[1]:>10.1f} "
                f"{bound:>10.1f} {ratio:>6.3f} {fifo[1] / bound:>10.3f}"
            )
            last = (us, ratio)
    print(f"overhead_us_per_star={last[0]:.1f} makespan_ratio={last[1]:.3f}")


if __name__ == "__main__":
    main()
