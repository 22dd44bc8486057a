"""The planner evaluation set and its TaskBench-style scoring.

The set lives in ``resources/eval``: ``fleets.yaml`` names fleets of devices and
``requests.yaml`` holds requests, each with the constellation a sensible planner would make
for it on its fleet. `load_fleets` and `load_cases` read and check them; a problem raises
`EvalSetError` naming the fleet or case and what is wrong.

Scoring follows TaskBench: the tools of the stars are the graph's nodes and the (upstream
tool, downstream tool) pairs of its lines are its edges, both compared as multisets with an
F1 score, so star ids and device names do not matter. `parallel_satisfied` checks that
stars which should be able to run at the same time still can. `summarise` folds the
per-case `CaseScore`s into an `EvalSummary`; `bench/eval_planner.py` runs the planner
over the set and prints it.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import networkx as nx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.constellation.model import STAR_ID_PATTERN, PlanSpec, StarSpec, lines_of
from agents.constellation.plan_file import PlanLoader
from agents.constellation.validation import dependency_graph
from devices.registry import DeviceInfo

__all__ = [
    "BUILTIN_TOOLS",
    "CATEGORIES",
    "CaseScore",
    "CategorySummary",
    "EvalCase",
    "EvalDevice",
    "EvalSetError",
    "EvalSummary",
    "ExpectedPlan",
    "ExpectedStar",
    "case_score",
    "default_eval_dir",
    "edge_f1",
    "expected_edges",
    "expected_tools",
    "failed_case_score",
    "fleet_devices",
    "fleet_tools",
    "load_cases",
    "load_fleets",
    "node_f1",
    "parallel_satisfied",
    "plan_edges",
    "plan_tools",
    "summarise",
]

BUILTIN_TOOLS: frozenset[str] = frozenset(
    {
        "shell.run",
        "python.run",
        "fs.read",
        "fs.write",
        "fs.list",
        "artifact.put",
        "artifact.get",
        "http.get",
        "sys.info",
    }
)
"""The tools every device offers unless its policy turns them off (`devices.tools`)."""

Category = Literal["files", "reporting", "build", "backup", "monitoring", "transfer"]
CATEGORIES: tuple[str, ...] = get_args(Category)

CASE_ID_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"

# The repository root: this file is agents/planner/evaluation.py. (`app.resources` finds
# the same folder, but `agents` may not import `app`.)
_REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class EvalSetError(ValueError):
    """The evaluation set is malformed; the message names the fleet or case and the problem."""


def default_eval_dir() -> Path:
    """``resources/eval`` of the source tree this module belongs to."""
    path = _REPO_ROOT / "resources" / "eval"
    if not path.is_dir():
        raise FileNotFoundError(
            f"the planner evaluation set is missing at {path}; run from Orrery's source tree "
            "(`pip install -e .`) so the resources stay beside the packages"
        )
    return path


# --- the set ------------------------------------------------------------------------------


class EvalDevice(BaseModel):
    """One device of a fleet, as the orchestrator would see it once connected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    platform: Literal["linux", "windows", "macos"]
    labels: tuple[str, ...] = ()
    tools: tuple[str, ...] = Field(min_length=1)
    gpu: bool = False
    vram_free_mb: int = Field(default=0, ge=0)
    max_tasks: int = Field(default=4, ge=1, le=1024)

    def to_device_info(self) -> DeviceInfo:
        return DeviceInfo(
            name=self.name,
            platform=self.platform,
            labels=frozenset(self.labels),
            tools=frozenset(self.tools),
            gpu=self.gpu,
            vram_free_mb=self.vram_free_mb,
            max_tasks=self.max_tasks,
        )


class ExpectedStar(BaseModel):
    """A star the planner should make: its tool, optionally its device, what it waits for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=STAR_ID_PATTERN)
    tool: str = Field(min_length=1)
    on: str | None = None
    after: tuple[str, ...] = ()


class ExpectedPlan(BaseModel):
    """The constellation a sensible planner would make for a case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stars: tuple[ExpectedStar, ...] = Field(min_length=1)
    parallel: tuple[tuple[str, ...], ...] = ()
    """Groups of stars that must be able to run at the same time (none an ancestor of
    another)."""


class EvalCase(BaseModel):
    """One request of the evaluation set, on one fleet, with the expected plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=CASE_ID_PATTERN, max_length=80)
    category: Category
    fleet: str = Field(min_length=1)
    request: str = Field(min_length=1)
    expected: ExpectedPlan


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalSetError(f"{path}: cannot read the file: {exc}") from exc
    # The plan files' dialect: `on:` stays the key "on" (not True), duplicate keys are refused.
    try:
        return yaml.load(text, Loader=PlanLoader)
    except yaml.YAMLError as exc:
        raise EvalSetError(f"{path}: not valid YAML: {exc}") from exc


def _first_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(piece) for piece in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def load_fleets(path: Path) -> dict[str, list[EvalDevice]]:
    """The fleets of a ``fleets.yaml``: fleet name → its devices."""
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise EvalSetError(f"{path}: expected a mapping of fleet name to a list of devices")
    fleets: dict[str, list[EvalDevice]] = {}
    for name, entries in raw.items():
        where = f"{path}: fleet {name!r}"
        if not isinstance(entries, list) or not entries:
            raise EvalSetError(f"{where}: expected a non-empty list of devices")
        devices: list[EvalDevice] = []
        for index, entry in enumerate(entries):
            try:
                device = EvalDevice.model_validate(entry)
            except ValidationError as exc:
                raise EvalSetError(f"{where}, device {index}: {_first_error(exc)}") from exc
            unknown = sorted(set(device.tools) - BUILTIN_TOOLS)
            if unknown:
                raise EvalSetError(
                    f"{where}, device {device.name!r}: unknown tool(s) {', '.join(unknown)}; "
                    f"the built-ins are {', '.join(sorted(BUILTIN_TOOLS))}"
                )
            if any(other.name == device.name for other in devices):
                raise EvalSetError(f"{where}: two devices are named {device.name!r}")
            devices.append(device)
        fleets[str(name)] = devices
    return fleets


def _expected_graph(plan: ExpectedPlan) -> nx.DiGraph:
    graph = nx.DiGraph()
    for star in plan.stars:
        graph.add_node(star.id)
        for upstream in star.after:
            graph.add_edge(upstream, star.id)
    return graph


def _check_case(case: EvalCase, fleets: Mapping[str, Sequence[EvalDevice]]) -> None:
    """Raise `EvalSetError` for the first thing wrong with `case` on its fleet."""
    where = f"case {case.id!r}"
    fleet = fleets.get(case.fleet)
    if fleet is None:
        raise EvalSetError(
            f"{where}: unknown fleet {case.fleet!r} (known: {', '.join(sorted(fleets))})"
        )
    devices = {device.name: device for device in fleet}
    offered = {tool for device in fleet for tool in device.tools}
    ids: set[str] = set()
    for star in case.expected.stars:
        if star.id in ids:
            raise EvalSetError(f"{where}: two expected stars are called {star.id!r}")
        ids.add(star.id)
        if star.on is not None:
            device = devices.get(star.on)
            if device is None:
                raise EvalSetError(
                    f"{where}: star {star.id!r} runs on unknown device {star.on!r} "
                    f"(fleet {case.fleet!r} has {', '.join(devices)})"
                )
            if star.tool not in device.tools:
                raise EvalSetError(
                    f"{where}: star {star.id!r} uses {star.tool!r}, which device {star.on!r} lacks"
                )
        elif star.tool not in offered:
            raise EvalSetError(
                f"{where}: star {star.id!r} uses {star.tool!r}, which no device of fleet "
                f"{case.fleet!r} offers"
            )
    for star in case.expected.stars:
        if len(set(star.after)) != len(star.after):
            raise EvalSetError(f"{where}: star {star.id!r} lists a star twice in 'after'")
        for upstream in star.after:
            if upstream not in ids:
                raise EvalSetError(f"{where}: star {star.id!r} waits for unknown star {upstream!r}")
            if upstream == star.id:
                raise EvalSetError(f"{where}: star {star.id!r} waits for itself")
    graph = _expected_graph(case.expected)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = " -> ".join(source for source, _ in nx.find_cycle(graph))
        raise EvalSetError(f"{where}: the expected stars form a cycle ({cycle})")
    for group in case.expected.parallel:
        if len(group) < 2:
            raise EvalSetError(f"{where}: parallel group {list(group)} needs two stars or more")
        if len(set(group)) != len(group):
            raise EvalSetError(f"{where}: parallel group {list(group)} lists a star twice")
        unknown = [star_id for star_id in group if star_id not in ids]
        if unknown:
            raise EvalSetError(
                f"{where}: parallel group {list(group)} names unknown star(s) {', '.join(unknown)}"
            )
        for first, second in itertools.combinations(group, 2):
            if nx.has_path(graph, first, second) or nx.has_path(graph, second, first):
                raise EvalSetError(
                    f"{where}: parallel group {list(group)} cannot run at once: "
                    f"{first!r} and {second!r} depend on each other"
                )


def load_cases(path: Path, fleets: Mapping[str, Sequence[EvalDevice]]) -> list[EvalCase]:
    """The cases of a ``requests.yaml``, each checked against `fleets`."""
    raw = _read_yaml(path)
    if not isinstance(raw, list) or not raw:
        raise EvalSetError(f"{path}: expected a non-empty list of cases")
    cases: list[EvalCase] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        name = entry.get("id") if isinstance(entry, dict) else None
        where = f"case {name!r}" if isinstance(name, str) else f"case #{index + 1}"
        try:
            case = EvalCase.model_validate(entry)
        except ValidationError as exc:
            raise EvalSetError(f"{path}: {where}: {_first_error(exc)}") from exc
        if case.id in seen:
            raise EvalSetError(f"{path}: case {case.id!r}: the id is used twice")
        seen.add(case.id)
        try:
            _check_case(case, fleets)
        except EvalSetError as exc:
            raise EvalSetError(f"{path}: {exc}") from exc
        cases.append(case)
    return cases


def fleet_devices(fleet: Iterable[EvalDevice]) -> list[DeviceInfo]:
    """The orchestrator's view of a fleet's devices."""
    return [device.to_device_info() for device in fleet]


def fleet_tools(fleet: Iterable[EvalDevice]) -> set[str]:
    """Every tool some device of the fleet offers."""
    return {tool for device in fleet for tool in device.tools}


# --- scoring ------------------------------------------------------------------------------


def _multiset_f1(expected: Iterable[Any], got: Iterable[Any]) -> float:
    wanted, found = Counter(expected), Counter(got)
    if not wanted and not found:
        return 1.0
    overlap = sum((wanted & found).values())
    if not overlap:
        return 0.0
    precision = overlap / sum(found.values())
    recall = overlap / sum(wanted.values())
    return 2 * precision * recall / (precision + recall)


def node_f1(expected_tools: Sequence[str], got_tools: Sequence[str]) -> float:
    """F1 of the tools as a multiset (TaskBench node F1); 1.0 when both are empty."""
    return _multiset_f1(expected_tools, got_tools)


def edge_f1(
    expected_edges: Sequence[tuple[str, str]], got_edges: Sequence[tuple[str, str]]
) -> float:
    """F1 of the (upstream tool, downstream tool) pairs as a multiset (TaskBench edge F1).

    1.0 when both are empty, 0.0 when only one is.
    """
    return _multiset_f1(expected_edges, got_edges)


def plan_tools(spec: PlanSpec) -> list[str]:
    """The tool of every star of a plan (`agent.do` for an instruction)."""
    return [star.effective_tool for star in spec.stars]


def plan_edges(spec: PlanSpec) -> list[tuple[str, str]]:
    """The (upstream tool, downstream tool) pair of every line of a plan, `after` included.

    A line whose ends are not stars of the plan (which a validated plan never has) is left
    out.
    """
    stars: dict[str, StarSpec] = {star.id: star for star in spec.stars}
    edges: list[tuple[str, str]] = []
    for line in lines_of(spec):
        source, target = stars.get(line.source), stars.get(line.target)
        if source is not None and target is not None:
            edges.append((source.effective_tool, target.effective_tool))
    return edges


def expected_tools(case: EvalCase) -> list[str]:
    return [star.tool for star in case.expected.stars]


def expected_edges(case: EvalCase) -> list[tuple[str, str]]:
    """The (upstream tool, downstream tool) pair of every dependency of the expected plan."""
    tools = {star.id: star.tool for star in case.expected.stars}
    return [(tools[upstream], star.tool) for star in case.expected.stars for upstream in star.after]


def _plan_graph(spec: PlanSpec) -> nx.DiGraph:
    ids = {star.id for star in spec.stars}
    lines = [line for line in lines_of(spec) if line.source in ids and line.target in ids]
    return dependency_graph(ids, lines)


def _independent_stars(
    slots: Sequence[str],
    candidates: Mapping[str, Sequence[str]],
    related: Mapping[str, set[str]],
) -> bool:
    """Whether each slot (a tool) can get its own star, no two of them related.

    Backtracking over small groups: a slot takes a candidate star of its tool that is not
    used yet and is related (ancestor or descendant) to none chosen so far. Slots of the
    same tool pick stars in increasing candidate order, so no permutation is tried twice.
    """
    chosen: list[str] = []

    def place(slot: int, start: int) -> bool:
        if slot == len(slots):
            return True
        tool = slots[slot]
        options = candidates.get(tool, ())
        for position in range(start, len(options)):
            star = options[position]
            if star in chosen or any(star in related[other] for other in chosen):
                continue
            chosen.append(star)
            following = slot + 1
            next_start = position + 1 if following < len(slots) and slots[following] == tool else 0
            if place(following, next_start):
                return True
            chosen.pop()
        return False

    return place(0, 0)


def parallel_satisfied(case: EvalCase, spec: PlanSpec) -> bool | None:
    """Whether the plan keeps every parallel group of the case able to run at once.

    A group is satisfied when the plan has, for the group's multiset of tools, distinct
    stars with those tools none of which is an ancestor of another. None when the case has
    no parallel groups.
    """
    if not case.expected.parallel:
        return None
    graph = _plan_graph(spec)
    related: dict[str, set[str]] = {
        star: set(nx.ancestors(graph, star)) | set(nx.descendants(graph, star))
        for star in graph.nodes
    }
    candidates: dict[str, list[str]] = {}
    for star in spec.stars:
        candidates.setdefault(star.effective_tool, []).append(star.id)
    tools = {star.id: star.tool for star in case.expected.stars}
    for group in case.expected.parallel:
        slots = sorted(tools[star_id] for star_id in group)
        if not _independent_stars(slots, candidates, related):
            return False
    return True


def unmentioned_names(request: str, spec: PlanSpec, devices: Iterable[str] = ()) -> list[str]:
    """The files and folders a plan's arguments name that the request never mentioned.

    A name counts as mentioned when the request names it (or a folder above it), or when
    every word of its stem is a word of the request or of a device name: `summary.txt` for
    "write a summary", `web1-nginx.tar.gz` for "back up /etc/nginx from web1". System
    places (`/tmp`, `/var`, `/etc/nginx` for a request about nginx: see
    `agents.planner.decompose.system_path_allowed`) and `${...}` references are not
    counted.
    """
    from agents.planner.decompose import request_words, system_path_allowed, unmentioned_paths
    from agents.planner.steps import mentioned_files, mentioned_folders

    named = {name.lower().rstrip("/") for name in mentioned_files(request)}
    named |= {name.lower().rstrip("/") for name in mentioned_folders(request)}
    names = [d.lower() for d in devices]
    words = set(request_words(request)) | set(names)
    words |= {part for name in names for part in re.split(r"[^a-z0-9]+", name) if part}

    def known(name: str) -> bool:
        lowered = name.lower().rstrip("/").removeprefix("./")
        if not lowered or "${" in lowered or lowered in (".", "*"):
            return True
        if any(
            lowered == n or lowered.startswith(n + "/") or n.endswith("/" + lowered) for n in named
        ):
            return True
        base = lowered.rsplit("/", 1)[-1]
        if any(n.rsplit("/", 1)[-1] == base for n in named):
            return True
        stem = base.split(".", 1)[0]
        return bool(stem) and all(part in words for part in re.split(r"[-_]+", stem) if part)

    found: dict[str, None] = {}
    for star in spec.stars:
        for key, value in star.effective_args.items():
            if not isinstance(value, (str, list)):
                continue
            values = value if isinstance(value, list) else [value]
            for text in (str(item) for item in values):
                if "${" in text:
                    continue
                if key in ("cmd", "code"):
                    found.update(
                        dict.fromkeys(name for _, name in unmentioned_paths(text, known, words))
                    )
                elif (
                    key in ("path", "paths")
                    and not system_path_allowed(text, words)
                    and not known(text)
                ):
                    found[text] = None
    return list(found)


@dataclass(frozen=True, slots=True)
class CaseScore:
    """How the planner did on one case."""

    case_id: str
    category: str
    valid: bool
    node_f1: float
    edge_f1: float
    parallel_ok: bool | None
    seconds: float
    attempts: int
    error: str | None = None
    stars: tuple[str, ...] = ()
    """The plan, one star per item: `s2 fs.write@laptop after s1`."""
    run_ok: bool | None = None
    """Execution mode: whether the plan ran and named nothing unmentioned (None: not run)."""
    run_error: str | None = None


def describe_stars(spec: PlanSpec) -> tuple[str, ...]:
    """A compact line per star of a plan, for reports."""
    described = []
    for star in spec.stars:
        where = star.on.name if star.on is not None and star.on.name else "any"
        after = f" after {','.join(star.after)}" if star.after else ""
        described.append(f"{star.id} {star.effective_tool}@{where}{after}")
    return tuple(described)


def case_score(case: EvalCase, spec: PlanSpec, *, seconds: float, attempts: int) -> CaseScore:
    """The score of a valid plan the planner made for `case`."""
    return CaseScore(
        case_id=case.id,
        category=case.category,
        valid=True,
        node_f1=node_f1(expected_tools(case), plan_tools(spec)),
        edge_f1=edge_f1(expected_edges(case), plan_edges(spec)),
        parallel_ok=parallel_satisfied(case, spec),
        seconds=seconds,
        attempts=attempts,
        stars=describe_stars(spec),
    )


def failed_case_score(case: EvalCase, error: str, *, seconds: float, attempts: int) -> CaseScore:
    """The score of a case the planner made no valid plan for: zero, parallel groups failed."""
    return CaseScore(
        case_id=case.id,
        category=case.category,
        valid=False,
        node_f1=0.0,
        edge_f1=0.0,
        parallel_ok=False if case.expected.parallel else None,
        seconds=seconds,
        attempts=attempts,
        error=error,
    )


@dataclass(frozen=True, slots=True)
class CategorySummary:
    """The means of one category's cases."""

    cases: int
    valid_rate: float
    node_f1: float
    edge_f1: float
    parallel_rate: float | None


@dataclass(frozen=True, slots=True)
class EvalSummary:
    """The whole run: rates and means over every case, and per category."""

    cases: int
    valid_rate: float
    node_f1: float
    edge_f1: float
    parallel_rate: float | None
    """Share of the cases with parallel groups whose groups all held; None without any."""
    median_seconds: float
    categories: dict[str, CategorySummary] = field(default_factory=dict)
    run_success: float | None = None
    """Execution mode: the share of cases whose plan ran and named nothing unmentioned
    (an invalid plan counts as a failed run); None when plans were not run."""

    def last_line(self, model: str) -> str:
        runs = "n/a" if self.run_success is None else f"{self.run_success:.2f}"
        return (
            f"valid_rate={self.valid_rate:.2f} node_f1={self.node_f1:.3f} "
            f"edge_f1={self.edge_f1:.3f} run_success={runs} "
            f"median_plan_s={self.median_seconds:.2f} model={model}"
        )

    def table(self) -> str:
        """A plain-text table of the per-category means and the totals."""
        header = (
            f"{'category':<12} {'cases':>5} {'valid':>6} {'node_f1':>8} {'edge_f1':>8} {'par':>6}"
        )
        rows = [header, "-" * len(header)]
        entries = [*self.categories.items(), ("all", self._as_category())]
        for name, summary in entries:
            par = "-" if summary.parallel_rate is None else f"{summary.parallel_rate:.2f}"
            rows.append(
                f"{name:<12} {summary.cases:>5} {summary.valid_rate:>6.2f} "
                f"{summary.node_f1:>8.3f} {summary.edge_f1:>8.3f} {par:>6}"
            )
        return "\n".join(rows)

    def _as_category(self) -> CategorySummary:
        return CategorySummary(
            self.cases, self.valid_rate, self.node_f1, self.edge_f1, self.parallel_rate
        )


def _means(scores: Sequence[CaseScore]) -> CategorySummary:
    with_groups = [score.parallel_ok for score in scores if score.parallel_ok is not None]
    return CategorySummary(
        cases=len(scores),
        valid_rate=sum(score.valid for score in scores) / len(scores),
        node_f1=statistics.fmean(score.node_f1 if score.valid else 0.0 for score in scores),
        edge_f1=statistics.fmean(score.edge_f1 if score.valid else 0.0 for score in scores),
        parallel_rate=sum(with_groups) / len(with_groups) if with_groups else None,
    )


def _run_success(scores: Sequence[CaseScore]) -> float | None:
    if all(score.run_ok is None for score in scores):
        return None
    return sum(score.run_ok is True for score in scores) / len(scores)


def summarise(scores: Sequence[CaseScore]) -> EvalSummary:
    """Fold per-case scores into the run's summary; an invalid plan counts 0 for both F1s."""
    if not scores:
        raise ValueError("no case scores to summarise")
    overall = _means(scores)
    order = {name: index for index, name in enumerate(CATEGORIES)}
    names = sorted({score.category for score in scores}, key=lambda n: (order.get(n, 99), n))
    return EvalSummary(
        cases=overall.cases,
        valid_rate=overall.valid_rate,
        node_f1=overall.node_f1,
        edge_f1=overall.edge_f1,
        parallel_rate=overall.parallel_rate,
        median_seconds=statistics.median(score.seconds for score in scores),
        run_success=_run_success(scores),
        categories={
            name: _means([score for score in scores if score.category == name]) for name in names
        },
    )
