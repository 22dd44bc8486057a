"""Hypothesis strategies for constellations, edit batches and simulated runs.

Star ids are ``s0``, ``s1``, ... in plan order (lines only go from a lower to a higher
index, so every drawn plan is a DAG), ``n0``... for stars that edits add, and ``ghost...``
for ids that never exist. Every tool used is in `KNOWN_TOOLS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import networkx as nx
from hypothesis import strategies as st
from pydantic import TypeAdapter

from agents.constellation import (
    AddLine,
    AddStar,
    Constellation,
    EditBatch,
    Line,
    LineKind,
    PlanSpec,
    RemoveLine,
    RemoveStar,
    StarChanges,
    StarSpec,
    StarStatus,
    UpdateStar,
)
from agents.constellation.predicate import Predicate
from agents.constellation.validation import dependency_graph

TOOLS = ("shell.run", "python.run", "fs.read", "fs.write")
KNOWN_TOOLS = frozenset({*TOOLS, "agent.do"})
NEW_IDS = tuple(f"n{i}" for i in range(6))
GHOST_IDS = ("ghost", "ghost-2")
TERMINAL_NAMES = ("succeeded", "failed", "cancelled", "skipped")

T = TypeVar("T")

PREDICATE: TypeAdapter[Any] = TypeAdapter(Predicate)

# --------------------------------------------------------------------------- predicates

_compare_data = st.one_of(
    st.fixed_dictionaries(
        {"path": st.just("output.ok"), "op": st.sampled_from(["eq", "ne"]), "value": st.booleans()}
    ),
    st.fixed_dictionaries(
        {
            "path": st.just("status"),
            "op": st.sampled_from(["eq", "ne"]),
            "value": st.sampled_from(TERMINAL_NAMES),
        }
    ),
    st.fixed_dictionaries(
        {
            "path": st.just("output.n"),
            "op": st.sampled_from(["gt", "le"]),
            "value": st.integers(0, 3),
        }
    ),
    st.fixed_dictionaries(
        {
            "path": st.sampled_from(["error", "output", "output.ok"]),
            "op": st.sampled_from(["exists", "missing", "truthy", "falsy"]),
        }
    ),
)

predicate_data = st.one_of(
    _compare_data,
    st.builds(lambda items: {"all": items}, st.lists(_compare_data, min_size=1, max_size=3)),
    st.builds(lambda items: {"any": items}, st.lists(_compare_data, min_size=1, max_size=3)),
    st.builds(lambda item: {"not": item}, _compare_data),
)
"""Predicates as plan data, over an outcome ``{status, output: {ok, n} | None, error}``."""

predicates = predicate_data.map(PREDICATE.validate_python)


_kinds = st.sampled_from(LineKind)
_styles = st.sampled_from(["after", "explicit", "both"])
_booleans = st.booleans()
_one_in_four = st.integers(0, 3)
_one_in_five = st.integers(0, 4)
_commands = st.sampled_from(["true", "ls", "echo hi"])
_ref_paths = st.sampled_from(["output", "output.ok", "output.n"])
_priorities = st.integers(-1000, 1000) | st.sampled_from([0, 1, -1])
_retries = st.integers(0, 3)
_timeouts = st.none() | st.integers(1, 12).map(float)
_estimates = st.none() | st.floats(0.1, 100.0)
_instructions = st.sampled_from(["summarise the disk", "tidy up"])
_tools = st.sampled_from(TOOLS)


@cache
def _sampled(options: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(options)


@cache
def _predecessors(j: int) -> st.SearchStrategy[frozenset[int]]:
    return st.frozensets(st.integers(0, j - 1), max_size=min(j, 4))


def draw_line(draw: st.DrawFn, source: str, target: str) -> Line:
    """A line of a random kind (a condition line gets a random predicate)."""
    kind = draw(_kinds)
    when = draw(predicates) if kind is LineKind.CONDITION else None
    return Line(source=source, target=target, kind=kind, when=when)


@st.composite
def lines(draw: st.DrawFn, source: str, target: str) -> Line:
    return draw_line(draw, source, target)


# --------------------------------------------------------------------------- stars and plans


def reference_to(star_id: str, path: str) -> str:
    return "${" + star_id + "." + path + "}"


def draw_star_spec(
    draw: st.DrawFn,
    star_id: str,
    upstream: tuple[str, ...] = (),
    *,
    after: tuple[str, ...] = (),
    stray_references: tuple[str, ...] = (),
) -> StarSpec:
    """A valid star; its args may reference `upstream` (and, rarely, `stray_references`)."""
    args: dict[str, Any] = {"cmd": draw(_commands)}
    referable = (*upstream, *stray_references)
    if referable and draw(_one_in_four) == 0:
        ref = reference_to(draw(_sampled(referable)), draw(_ref_paths))
        args["ref"] = ref if draw(_booleans) else f"value: {ref}"
    fields: dict[str, Any] = {
        "id": star_id,
        "priority": draw(_priorities),
        "retries": draw(_retries),
        "timeout": draw(_timeouts),
        "estimate": draw(_estimates),
        "allow_failure": draw(_booleans),
        "after": list(after),
        "args": args,
    }
    if draw(_one_in_five) == 0:
        fields["instruction"] = draw(_instructions)
    else:
        fields["tool"] = draw(_tools)
    return StarSpec.model_validate(fields)


@dataclass(frozen=True)
class DrawnPlan:
    spec: PlanSpec
    edges: tuple[tuple[int, int], ...]  # (upstream index, downstream index), upstream < downstream

    @property
    def ids(self) -> list[str]:
        return [star.id for star in self.spec.stars]


@st.composite
def plans(draw: st.DrawFn, min_stars: int = 1, max_stars: int = 25) -> DrawnPlan:
    """A random DAG: stars 0..n-1, lines only from lower to higher index.

    A `success` line is written either as `after`, as an explicit line, or both (the
    explicit one wins); other kinds are explicit lines. Some explicit lines override an
    `after` entry with another kind. Args may reference direct upstream stars.
    """
    n = draw(st.integers(min_stars, max_stars))
    ids = [f"s{i}" for i in range(n)]
    edges: list[tuple[int, int]] = []
    stars: list[StarSpec] = []
    explicit: list[Line] = []
    for j in range(n):
        preds = sorted(draw(_predecessors(j))) if j else []
        after: list[str] = []
        for i in preds:
            edges.append((i, j))
            line = draw_line(draw, ids[i], ids[j])
            style = draw(_styles)
            if line.kind is LineKind.SUCCESS and style == "after":
                after.append(ids[i])
                continue
            if style == "both":
                after.append(ids[i])  # overridden by the explicit line
            explicit.append(line)
        upstream = tuple(ids[i] for i in preds)
        stars.append(draw_star_spec(draw, ids[j], upstream, after=tuple(after)))
    explicit = draw(st.permutations(explicit))
    spec = PlanSpec(name="prop", stars=stars, lines=explicit)
    return DrawnPlan(spec=spec, edges=tuple(edges))


# --------------------------------------------------------------------------- runtime statuses

# Legal paths from `pending` (via `Star.move_to`) to each status a star may be found in.
STATUS_PATHS: dict[str, tuple[StarStatus, ...]] = {
    "pending": (),
    "ready": (StarStatus.READY,),
    "running": (StarStatus.READY, StarStatus.RUNNING),
    "succeeded": (StarStatus.READY, StarStatus.RUNNING, StarStatus.SUCCEEDED),
    "failed": (StarStatus.READY, StarStatus.RUNNING, StarStatus.FAILED),
    "failed-fast": (StarStatus.READY, StarStatus.FAILED),
    "cancelled-running": (StarStatus.READY, StarStatus.RUNNING, StarStatus.CANCELLED),
    "cancelled-ready": (StarStatus.READY, StarStatus.CANCELLED),
    "cancelled-pending": (StarStatus.CANCELLED,),
    "skipped": (StarStatus.SKIPPED,),
}
_NOT_READY_PATHS = ("pending", "cancelled-pending", "skipped")


# Many stars stay pending, so that edits have something to work on; many are ready.
_ANY_PATH = st.sampled_from(
    ["pending"] * 7 + ["ready"] * 3 + ["running"] * 2 + ["succeeded"] * 2 + list(STATUS_PATHS)
)
_NOT_READY_PATH = st.sampled_from(["pending", *_NOT_READY_PATHS])


@st.composite
def status_paths(draw: st.DrawFn, constellation: Constellation) -> dict[str, str]:
    """A plausible runtime state: a star got past `pending` only if its upstream finished."""
    chosen: dict[str, str] = {}
    finished: set[str] = set()
    for star_id in sorted(constellation.stars, key=lambda sid: int(sid[1:])):
        upstream = {line.source for line in constellation.incoming(star_id)}
        name = draw(_ANY_PATH if upstream <= finished else _NOT_READY_PATH)
        chosen[star_id] = name
        path = STATUS_PATHS[name]
        if path and path[-1].terminal:
            finished.add(star_id)
    return chosen


def apply_status_paths(constellation: Constellation, chosen: dict[str, str]) -> None:
    for star_id, name in chosen.items():
        for status in STATUS_PATHS[name]:
            constellation.stars[star_id].move_to(status)


# --------------------------------------------------------------------------- edit batches


@cache
def _below(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)


def pick(draw: st.DrawFn, options: Sequence[T]) -> T:
    """One of `options` (shrinks towards the first)."""
    return options[draw(_below(len(options)))]


_CHANGE_KINDS = (
    "priority",
    "retries",
    "timeout",
    "estimate",
    "title",
    "allow_failure",
    "args",
    "to-instruction",
    "to-tool",
    "several",
    "bad-both",
    "bad-instruction-only",
    "bad-priority",
    "bad-retries",
    "bad-timeout",
    "bad-tool-name",
    "unknown-tool",
)
_small_priorities = st.integers(-5, 5)
_titles = st.text(max_size=10)


def draw_star_changes(
    draw: st.DrawFn, reference_ids: Sequence[str], kinds: Sequence[str] = _CHANGE_KINDS
) -> StarChanges:
    """Valid and invalid changes (both tool and instruction, out-of-range numbers, bad tools)."""
    choice = pick(draw, kinds)
    changes: dict[str, Any]
    if choice == "priority":
        changes = {"priority": draw(_priorities)}
    elif choice == "retries":
        changes = {"retries": draw(_retries)}
    elif choice == "timeout":
        changes = {"timeout": draw(_timeouts)}
    elif choice == "estimate":
        changes = {"estimate": draw(_estimates)}
    elif choice == "title":
        changes = {"title": draw(_titles)}
    elif choice == "allow_failure":
        changes = {"allow_failure": draw(_booleans)}
    elif choice == "args":
        args: dict[str, Any] = {"cmd": "echo changed"}
        if reference_ids and draw(_booleans):
            args["ref"] = reference_to(pick(draw, reference_ids), "output")
        changes = {"args": args}
    elif choice == "to-instruction":
        changes = {"tool": None, "instruction": "do it differently"}
    elif choice == "to-tool":
        changes = {"instruction": None, "tool": pick(draw, TOOLS)}
    elif choice == "several":
        changes = {
            "priority": draw(_small_priorities),
            "retries": draw(_retries),
            "allow_failure": draw(_booleans),
        }
    elif choice == "bad-both":
        changes = {"tool": pick(draw, TOOLS), "instruction": "and also this"}
    elif choice == "bad-instruction-only":
        # Valid for a star that has no tool, invalid (both set) for one that has.
        changes = {"instruction": "just this"}
    elif choice == "bad-priority":
        changes = {"priority": pick(draw, (-1001, 5000))}
    elif choice == "bad-retries":
        changes = {"retries": pick(draw, (-1, 101))}
    elif choice == "bad-timeout":
        changes = {"timeout": pick(draw, (0.0, -3.0))}
    elif choice == "bad-tool-name":
        changes = {"tool": "Not A Tool"}
    else:
        changes = {"tool": "gpu.render"}  # well formed, but no device offers it
    return StarChanges.model_validate(changes)


_EDIT_OPS = ("add_star", "remove_star", "update_star", "add_line", "remove_line")
_VALID_CHANGE_KINDS = _CHANGE_KINDS[: _CHANGE_KINDS.index("several") + 1]
_edit_counts = {n: st.integers(1, n) for n in range(1, 6)}
_mostly = st.integers(0, 5)  # > 0: five times in six
_up_to_three = st.integers(0, 3)


@st.composite
def edit_batches(draw: st.DrawFn, constellation: Constellation, max_edits: int = 5) -> EditBatch:
    """1..max_edits edits against `constellation`.

    A third of the batches are careless: ids come from the constellation, from stars added
    earlier in the batch, from fresh ids and from ids that never exist; changes may be
    invalid; lines may duplicate, dangle or close cycles. The others are careful:
    they touch only stars that have not started, add lines in topological order, remove
    a star together with its lines, and make valid changes, so that most of them apply.
    """
    careful = draw(_mostly) > 1  # two in three
    graph = dependency_graph(constellation.stars, constellation.lines)
    order = list(nx.topological_sort(graph))
    # Lines that would close a cycle: from a star back to one of its ancestors.
    closing = [(below, above) for above in order for below in sorted(nx.descendants(graph, above))]
    status = {sid: star.status for sid, star in constellation.stars.items()}
    line_keys = {line.key for line in constellation.lines}
    existing = list(constellation.stars)
    added: list[str] = []
    edits: list[Any] = []

    def any_id() -> str:
        pools = [existing + added] if existing + added else []
        pools += [list(GHOST_IDS), list(NEW_IDS)]
        return pick(draw, pick(draw, pools))

    def known_id() -> str:
        known = existing + added
        if known and draw(_mostly) > 0:
            return pick(draw, known)
        return any_id()

    def editable() -> list[str]:
        return [sid for sid in order if not status[sid].started]

    for _ in range(draw(_edit_counts[max_edits])):
        op = pick(draw, _EDIT_OPS)
        if op == "add_star":
            fresh = [sid for sid in NEW_IDS if sid not in status]
            if careful and fresh:
                star_id = pick(draw, fresh)
                count = draw(_up_to_three) if order else 0
                after = list(dict.fromkeys(pick(draw, order) for _ in range(count)))
                spec = draw_star_spec(draw, star_id, tuple(after), after=tuple(after))
            else:
                star_id = pick(draw, fresh) if fresh and draw(_mostly) > 0 else known_id()
                candidates = sorted({*existing, *added, *GHOST_IDS} - {star_id})
                after = list(
                    dict.fromkeys(pick(draw, candidates) for _ in range(draw(_up_to_three)))
                )
                others = [sid for sid in existing + added if sid != star_id]
                stray = (pick(draw, others),) if others and draw(_up_to_three) == 0 else ()
                spec = draw_star_spec(
                    draw, star_id, tuple(after), after=tuple(after), stray_references=stray
                )
            edits.append(AddStar(star=spec))
            added.append(star_id)
            if star_id not in status:
                status[star_id] = StarStatus.PENDING
                order.append(star_id)
                line_keys.update((upstream, star_id) for upstream in after)
        elif op == "remove_star":
            if careful and editable():
                ready = [sid for sid in order if status[sid] is StarStatus.READY]
                star_id = pick(draw, ready if ready and draw(_booleans) else editable())
                for key in sorted(key for key in line_keys if star_id in key):
                    edits.append(RemoveLine(source=key[0], target=key[1]))
                    line_keys.discard(key)
                order.remove(star_id)
                del status[star_id]
                edits.append(RemoveStar(id=star_id))
                if order and draw(_booleans):
                    # Replace it: a new star under the same id, with new dependencies.
                    unfinished = [sid for sid in order if not status[sid].terminal]
                    pool = unfinished if unfinished and draw(_booleans) else order
                    after = list(
                        dict.fromkeys(pick(draw, pool) for _ in range(1 + draw(_up_to_three)))
                    )
                    spec = draw_star_spec(draw, star_id, tuple(after), after=tuple(after))
                    edits.append(AddStar(star=spec))
                    status[star_id] = StarStatus.PENDING
                    order.append(star_id)
                    line_keys.update((upstream, star_id) for upstream in after)
            else:
                edits.append(RemoveStar(id=known_id()))
        elif op == "update_star":
            if careful and editable():
                star_id = pick(draw, editable())
                changes = draw_star_changes(draw, (), kinds=_VALID_CHANGE_KINDS)
            else:
                star_id = known_id()
                refs = [sid for sid in existing + added if sid != star_id]
                changes = draw_star_changes(draw, refs)
            edits.append(UpdateStar(id=star_id, changes=changes))
        elif op == "add_line":
            fresh_pairs = [
                (source, target)
                for at, target in enumerate(order)
                if status[target] is StarStatus.PENDING
                for source in order[:at]
                if (source, target) not in line_keys
            ]
            if careful and fresh_pairs:
                source, target = pick(draw, fresh_pairs)
            elif closing and draw(_booleans):
                source, target = pick(draw, closing)  # closes a cycle (unless cut meanwhile)
            else:
                source = known_id()
                target = known_id()
                if source == target:
                    target = pick(draw, [sid for sid in (*GHOST_IDS, *NEW_IDS) if sid != source])
            edits.append(AddLine(line=draw_line(draw, source, target)))
            line_keys.add((source, target))
        else:
            removable = sorted(
                k for k in line_keys if status.get(k[1], StarStatus.PENDING) is StarStatus.PENDING
            )
            if careful and removable:
                source, target = pick(draw, removable)
            elif line_keys and draw(_up_to_three) > 0:
                source, target = pick(draw, sorted(line_keys))
            else:
                source, target = known_id(), known_id()
            edits.append(RemoveLine(source=source, target=target))
            line_keys.discard((source, target))
    return EditBatch(edits=edits, rationale=pick(draw, ("", "replan")))


@st.composite
def replace_batches(draw: st.DrawFn, constellation: Constellation) -> EditBatch:
    """Replace a star that has not started (a ready one if there is one) by a new star
    under the same id that depends on other stars, most of them unfinished."""
    stars = constellation.stars
    ready = [sid for sid, star in stars.items() if star.status is StarStatus.READY]
    editable = [sid for sid, star in stars.items() if not star.status.started]
    candidates = ready or editable or list(stars)
    star_id = pick(draw, candidates)
    edits: list[Any] = [
        RemoveLine(source=line.source, target=line.target)
        for line in constellation.lines
        if star_id in line.key
    ]
    edits.append(RemoveStar(id=star_id))
    others = [sid for sid in stars if sid != star_id]
    unfinished = [sid for sid in others if not stars[sid].status.terminal]
    pool = unfinished if unfinished and draw(_mostly) > 0 else others
    count = 1 + draw(_up_to_three) if pool else 0
    after = tuple(dict.fromkeys(pick(draw, pool) for _ in range(count)))
    edits.append(AddStar(star=draw_star_spec(draw, star_id, after, after=after)))
    return EditBatch(edits=edits, rationale="replace")


# --------------------------------------------------------------------------- simulated runs


@dataclass(frozen=True)
class SimOutcome:
    """How one attempt of a star behaves on a simulated device."""

    kind: str  # "succeed" | "fail" | "hang"
    duration: float
    ok: bool = True
    n: int = 0


_durations = st.integers(0, 10).map(float)
sim_outcomes = st.one_of(
    st.builds(
        SimOutcome,
        kind=st.just("succeed"),
        duration=_durations,
        ok=_booleans,
        n=_up_to_three,
    ),
    st.builds(SimOutcome, kind=st.just("fail"), duration=_durations),
    st.builds(SimOutcome, kind=st.just("hang"), duration=st.just(0.0)),
)
sim_outcome_lists = st.lists(sim_outcomes, max_size=4)


@dataclass(frozen=True)
class RunAction:
    """Something done to a running constellation at virtual time `at`.

    An "edit" or "replace" draws its batch when it fires, against the constellation as it
    is then, and, if the batch is accepted and `undo_after` is set, undoes it that much later.
    """

    at: float
    kind: str  # "cancel_star" | "cancel" | "edit" | "replace"
    star_id: str | None = None
    undo_after: float | None = None


_ACTION_KINDS = ("edit", "cancel_star", "edit", "cancel", "replace", "edit")
_action_times = st.integers(0, 6).map(float) | st.integers(0, 40).map(float)
_undo_delays = st.none() | st.integers(0, 5).map(float)
_action_counts = st.integers(0, 4)


@st.composite
def run_actions(draw: st.DrawFn, constellation: Constellation) -> list[RunAction]:
    actions: list[RunAction] = []
    for _ in range(draw(_action_counts)):
        at = draw(_action_times)
        kind = pick(draw, _ACTION_KINDS)
        if kind == "cancel_star":
            pool = [*constellation.stars, *NEW_IDS[:2]]
            actions.append(RunAction(at, kind, star_id=pick(draw, pool)))
        elif kind in ("edit", "replace"):
            actions.append(RunAction(at, kind, undo_after=draw(_undo_delays)))
        else:
            actions.append(RunAction(at, kind))
    return actions
