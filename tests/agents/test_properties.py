"""Property tests for the constellation invariants (DESIGN.md, "Constellation invariants").

1. Random DAGs build; the same DAGs with a back edge that closes a cycle are refused.
2. Random edit batches against a constellation whose stars are partly ready, running or
   finished keep the graph acyclic and its lines whole, never touch a started star, and
   are all-or-nothing, naming the offending edit; an accepted batch does what a small
   reference model of the edits says, a refused one is refused by the model too; undo
   after an accepted batch restores the structure before it.
3. Simulated runs (virtual clock, random outcomes, devices, timeouts, retries,
   cancellations and edits mid-run) keep statuses moving forward, respect lines and
   device limits, and always end with a status that matches what the stars did.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import networkx as nx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.clock import VirtualClock
from agents.constellation import (
    AddLine,
    AddStar,
    Constellation,
    ConstellationEditor,
    ConstellationError,
    ConstellationStatus,
    CycleDetected,
    DanglingLine,
    DuplicateLine,
    DuplicateStarId,
    EditBatch,
    InvalidChange,
    Line,
    LineKind,
    PlanSpec,
    RemoveLine,
    RemoveStar,
    Star,
    StarNotEditable,
    StarSpec,
    StarStatus,
    UnknownLine,
    UnknownStar,
    UnknownTool,
    UpdateStar,
    apply_batch,
    build_constellation,
)
from agents.constellation.errors import BadReference
from agents.constellation.lines import line_outcome
from agents.constellation.model import STATUS_RANK, AttemptStatus, lines_of
from agents.events import (
    AttemptFailed,
    ConstellationFinished,
    EditApplied,
    Event,
    EventStream,
    StaleResultIgnored,
    StarFinished,
    StarReady,
    StarStarted,
)
from agents.orchestrator import Orchestrator, OrchestratorError
from agents.simulation import Outcome, SimulatedDispatcher
from devices.registry import DeviceInfo
from protocol.tasks import TaskAssignment, TaskOutcome, TaskResult
from tests.agents.strategies import (
    KNOWN_TOOLS,
    NEW_IDS,
    DrawnPlan,
    RunAction,
    SimOutcome,
    apply_status_paths,
    edit_batches,
    lines,
    plans,
    replace_batches,
    run_actions,
    sim_outcome_lists,
    status_paths,
)

PROPERTY_SETTINGS = settings(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def examples(default: int) -> int:
    """`ORRERY_PROPERTY_EXAMPLES=5000` runs a deeper search than CI does."""
    return int(os.environ.get("ORRERY_PROPERTY_EXAMPLES", default))


REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_\-]*)\.(?:output|error)[^}]*\}")


# --------------------------------------------------------------------------- helpers


def star_json(star: Star) -> str:
    return json.dumps(star.model_dump(mode="json", by_alias=True), sort_keys=True)


def line_json(line: Line) -> str:
    return json.dumps(line.model_dump(mode="json", by_alias=True), sort_keys=True)


def structure(stars: dict[str, Star], lines_: list[Line]) -> tuple[dict[str, str], set[str]]:
    """Stars (spec and runtime state) and the set of lines: a constellation minus version."""
    return {sid: star_json(star) for sid, star in stars.items()}, {line_json(ln) for ln in lines_}


def structure_of(constellation: Constellation) -> tuple[dict[str, str], set[str]]:
    return structure(constellation.stars, constellation.lines)


def assert_graph_invariants(constellation: Constellation) -> None:
    keys = [line.key for line in constellation.lines]
    assert len(keys) == len(set(keys)), f"two lines join the same stars: {keys}"
    for source, target in keys:
        assert source in constellation.stars, f"line {source}->{target}: no star {source!r}"
        assert target in constellation.stars, f"line {source}->{target}: no star {target!r}"
    graph = nx.DiGraph()
    graph.add_nodes_from(constellation.stars)
    graph.add_edges_from(keys)
    assert nx.is_directed_acyclic_graph(graph), f"cycle: {nx.find_cycle(graph)}"


def referenced_stars(star: StarSpec) -> set[str]:
    return set(REFERENCE.findall(json.dumps(star.effective_args)))


_MISSING = object()


def _lookup(subject: Any, path: str) -> Any:
    current = subject
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def predicate_holds(data: dict[str, Any], subject: dict[str, Any]) -> bool:
    """An independent evaluator for the predicates the strategies draw (plan-data form)."""
    if "all" in data:
        return all(predicate_holds(item, subject) for item in data["all"])
    if "any" in data:
        return any(predicate_holds(item, subject) for item in data["any"])
    if "not" in data:
        return not predicate_holds(data["not"], subject)
    found = _lookup(subject, data["path"])
    op, value = data["op"], data.get("value")
    if op == "exists":
        return found is not _MISSING
    if op == "missing":
        return found is _MISSING
    if found is _MISSING:
        return False  # an unresolved path is false for every other op
    if op == "truthy":
        return bool(found)
    if op == "falsy":
        return not found
    if op == "eq":
        return bool(found == value)
    if op == "ne":
        return bool(found != value)
    try:
        if op == "gt":
            return bool(found > value)
        if op == "le":
            return bool(found <= value)
    except TypeError:
        return False
    raise AssertionError(f"the strategies draw no op {op!r}")


def line_satisfied(line: Line, upstream: Star) -> bool:
    """Whether a line whose upstream star is terminal lets its downstream star run."""
    assert upstream.status.terminal
    if line.kind is LineKind.SUCCESS:
        return upstream.status is StarStatus.SUCCEEDED
    if line.kind is LineKind.COMPLETION:
        return True
    assert line.when is not None
    subject = {"status": upstream.status.value, "output": upstream.output, "error": upstream.error}
    return predicate_holds(line.when.model_dump(mode="json", by_alias=True), subject)


# --------------------------------------------------------------------------- 1. building


@settings(PROPERTY_SETTINGS, max_examples=examples(150))
@given(plan=plans())
def test_random_dags_build(plan: DrawnPlan) -> None:
    constellation = build_constellation(plan.spec, known_tools=KNOWN_TOOLS)

    assert constellation.version == 1
    assert constellation.status is ConstellationStatus.PENDING
    assert list(constellation.stars) == plan.ids
    for spec in plan.spec.stars:
        star = constellation.stars[spec.id]
        assert star.status is StarStatus.PENDING
        assert star.attempts == []
        assert star.spec() == spec.model_copy(update={"after": []})

    # Every drawn edge is one line; an explicit line overrides the `after` shorthand.
    explicit = {line.key: line for line in plan.spec.lines}
    expected = dict(explicit)
    for spec in plan.spec.stars:
        for upstream in spec.after:
            expected.setdefault((upstream, spec.id), Line(source=upstream, target=spec.id))
    built = {line.key: line for line in constellation.lines}
    assert len(built) == len(constellation.lines)
    assert built == expected
    assert set(built) == {(plan.ids[i], plan.ids[j]) for i, j in plan.edges}
    assert_graph_invariants(constellation)

    # The canonical form is stable through a JSON round trip.
    text = constellation.canonical_json()
    assert Constellation.model_validate_json(text).canonical_json() == text


@settings(PROPERTY_SETTINGS, max_examples=examples(150))
@given(plan=plans(min_stars=2), data=st.data())
def test_back_edge_is_rejected(plan: DrawnPlan, data: st.DataObject) -> None:
    ids = plan.ids
    n = len(ids)
    forward = nx.DiGraph()
    forward.add_nodes_from(range(n))
    forward.add_edges_from(plan.edges)
    stars = [star.model_copy(deep=True) for star in plan.spec.stars]
    explicit = list(plan.spec.lines)

    reachable = [(i, j) for i in range(n) for j in sorted(nx.descendants(forward, i))]
    if not reachable:  # no edges at all: add one forward line to close a cycle against
        j = data.draw(st.integers(1, n - 1))
        i = data.draw(st.integers(0, j - 1))
        explicit.append(data.draw(lines(ids[i], ids[j])))
        reachable = [(i, j)]
    i, j = data.draw(st.sampled_from(reachable))
    # The back edge j -> i closes the cycle i ->* j -> i.
    if data.draw(st.booleans()):
        stars[i] = stars[i].model_copy(update={"after": [*stars[i].after, ids[j]]})
    else:
        explicit.append(data.draw(lines(ids[j], ids[i])))
    # Maybe more back edges (some closing further cycles, some harmless).
    taken = {line.key for line in explicit} | {
        (upstream, star.id) for star in stars for upstream in star.after
    }
    for high, low in data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3)
    ):
        if high > low and (ids[high], ids[low]) not in taken:
            explicit.append(data.draw(lines(ids[high], ids[low])))
            taken.add((ids[high], ids[low]))
    explicit = data.draw(st.permutations(explicit))
    spec = PlanSpec(name="cyclic", stars=stars, lines=explicit)

    with pytest.raises(CycleDetected) as info:
        build_constellation(spec, known_tools=KNOWN_TOOLS)

    error = info.value
    assert error.item
    # The reported cycle is a real one, made of the plan's lines.
    keys = {line.key for line in lines_of(spec)}
    path = error.item.split(" -> ")
    assert len(path) >= 3
    assert path[0] == path[-1]
    cycle_edges = list(pairwise(path))
    for edge in cycle_edges:
        assert edge in keys, f"{error.item}: {edge} is not a line"
    # ... and the error points at one of its lines in the plan.
    assert error.location
    if error.location[0] == "lines":
        located = spec.lines[int(error.location[1])].key
    else:
        assert error.location[0] == "stars"
        assert error.location[2] == "after"
        star = spec.stars[int(error.location[1])]
        located = (star.after[int(error.location[3])], star.id)
    assert located in cycle_edges


# --------------------------------------------------------------------------- 2. edits


@dataclass
class Verdict:
    """What the reference model says a batch does."""

    ok: bool
    reason: str = ""
    edit_index: int | None = None  # the edit that fails on its own, if one does
    errors: tuple[type[ConstellationError], ...] = ()
    stars: dict[str, Star] = field(default_factory=dict)
    lines: dict[tuple[str, str], Line] = field(default_factory=dict)


def changeable_dependencies(target: Star | None, line: Line, source: Star | None) -> bool:
    """A star's incoming lines may change while it is pending; once it is ready, only by a
    line that is already settled (upstream finished, line satisfied), which changes nothing."""
    if target is None or target.status is StarStatus.PENDING:
        return True
    if target.status is not StarStatus.READY or source is None or not source.status.terminal:
        return False
    return line_outcome(line, source).satisfied


def model_apply(constellation: Constellation, batch: EditBatch) -> Verdict:
    """A deliberately simple model of an edit batch (what DESIGN.md and the edit docs say).

    Edits apply in order to a working copy; only stars that have not started may
    change, and a line may be added only to a star that is still pending. Then the
    whole result must have every line's ends, no cycle, known tools and references to
    upstream stars only.
    """
    stars = dict(constellation.stars)
    lines_ = {line.key: line for line in constellation.lines}

    def refuse(index: int, error: type[ConstellationError], reason: str) -> Verdict:
        return Verdict(False, f"edit #{index}: {reason}", index, (error,))

    for index, edit in enumerate(batch.edits):
        if isinstance(edit, AddStar):
            spec = edit.star
            if spec.id in stars:
                return refuse(index, DuplicateStarId, f"{spec.id} exists")
            stars[spec.id] = Star.model_validate({**spec.model_dump(by_alias=True), "after": []})
            for upstream in spec.after:
                key = (upstream, spec.id)
                if key in lines_:
                    return refuse(index, DuplicateLine, f"line {key} exists")
                lines_[key] = Line(source=upstream, target=spec.id)
        elif isinstance(edit, RemoveStar | UpdateStar):
            star = stars.get(edit.id)
            if star is None:
                return refuse(index, UnknownStar, f"no star {edit.id}")
            if star.status.started:
                return refuse(index, StarNotEditable, f"{edit.id} is {star.status}")
            if isinstance(edit, RemoveStar):
                del stars[edit.id]
                continue
            changes = edit.changes.model_dump(exclude_unset=True)
            try:
                StarSpec.model_validate({**star.spec().model_dump(), **changes})
            except ValidationError:
                return refuse(index, InvalidChange, f"{edit.id} would be invalid: {changes}")
            stars[edit.id] = Star.model_validate({**star.model_dump(), **changes})
        elif isinstance(edit, AddLine):
            line = edit.line
            if line.key in lines_:
                return refuse(index, DuplicateLine, f"line {line.key} exists")
            target = stars.get(line.target)
            if not changeable_dependencies(target, line, stars.get(line.source)):
                assert target is not None
                return refuse(index, StarNotEditable, f"{line.target} is {target.status}")
            lines_[line.key] = line
        else:
            assert isinstance(edit, RemoveLine)
            key = (edit.source, edit.target)
            if key not in lines_:
                return refuse(index, UnknownLine, f"no line {key}")
            target = stars.get(edit.target)
            if not changeable_dependencies(target, lines_[key], stars.get(edit.source)):
                assert target is not None
                return refuse(index, StarNotEditable, f"{edit.target} is {target.status}")
            del lines_[key]

    errors: list[type[ConstellationError]] = []
    reasons: list[str] = []
    graph = nx.DiGraph()
    graph.add_nodes_from(stars)
    graph.add_edges_from(lines_)
    for source, target in lines_:
        if source not in stars or target not in stars:
            errors += [DanglingLine, UnknownStar]
            reasons.append(f"line {source}->{target} has a missing end")
    if not nx.is_directed_acyclic_graph(graph):
        errors.append(CycleDetected)
        reasons.append(f"cycle {nx.find_cycle(graph)}")
    for star in stars.values():
        if star.effective_tool not in KNOWN_TOOLS:
            errors.append(UnknownTool)
            reasons.append(f"{star.id} uses {star.effective_tool}")
        for ref in referenced_stars(star):
            if ref not in stars or ref not in nx.ancestors(graph, star.id):
                errors.append(BadReference)
                reasons.append(f"{star.id} refers to {ref}, which is not upstream")
    if errors:
        return Verdict(False, "; ".join(reasons), None, tuple(errors))
    return Verdict(True, stars=stars, lines=lines_)


def apply_checked(editor: ConstellationEditor, batch: EditBatch) -> Constellation | None:
    """Apply `batch` and check the edit invariants; the new constellation, or None if refused."""
    before = editor.constellation
    before_json = before.canonical_json()
    verdict = model_apply(before, batch)
    refusal: ConstellationError | None = None
    try:
        after = editor.apply(batch)
    except ConstellationError as exc:
        refusal = exc
    if refusal is not None:
        event(f"batch refused: {type(refusal).__name__}")
        # All or nothing: the refused batch left no trace.
        assert before.canonical_json() == before_json
        assert editor.constellation.canonical_json() == before_json
        assert refusal.item, f"{refusal!r} names no item"
        assert refusal.edit_index is not None, f"{refusal} names no edit"
        assert 0 <= refusal.edit_index < len(batch.edits), f"{refusal}: edit index out of range"
        assert not verdict.ok, f"a valid batch was refused: {refusal}"
        if verdict.edit_index is not None:
            assert refusal.edit_index == verdict.edit_index, f"{refusal} vs {verdict.reason}"
        assert isinstance(refusal, verdict.errors), f"{refusal!r} vs {verdict.reason}"
        return None

    assert verdict.ok, f"an invalid batch was accepted: {verdict.reason}"
    event("batch accepted")
    assert before.canonical_json() == before_json, "apply_batch changed its input"
    assert after.version == before.version + 1
    assert_graph_invariants(after)
    assert structure_of(after) == structure(verdict.stars, list(verdict.lines.values()))
    assert_started_untouched(before, after)
    return after


def assert_started_untouched(before: Constellation, after: Constellation) -> None:
    """Running and finished stars keep their spec, state and incoming lines."""
    for star_id, star in before.stars.items():
        if not star.status.started:
            continue
        assert star_id in after.stars, f"started star {star_id} was removed"
        assert star_json(after.stars[star_id]) == star_json(star)
        assert {line_json(ln) for ln in after.incoming(star_id)} == {
            line_json(ln) for ln in before.incoming(star_id)
        }, f"incoming lines of started star {star_id} changed"


def started_constellation(plan: DrawnPlan, data: st.DataObject) -> Constellation:
    constellation = build_constellation(plan.spec, known_tools=KNOWN_TOOLS)
    apply_status_paths(constellation, data.draw(status_paths(constellation), label="statuses"))
    return constellation


@settings(PROPERTY_SETTINGS, max_examples=examples(150))
@given(plan=plans(max_stars=15), data=st.data())
def test_edit_batches_keep_invariants(plan: DrawnPlan, data: st.DataObject) -> None:
    editor = ConstellationEditor(started_constellation(plan, data), known_tools=KNOWN_TOOLS)
    for _ in range(data.draw(st.integers(1, 15), label="batches")):
        before = editor.constellation
        after = apply_checked(editor, data.draw(edit_batches(before), label="batch"))
        if after is None or not data.draw(st.booleans(), label="undo"):
            continue
        # Undo is itself an edit batch: applied whole, as a new version, or refused whole
        # (test_undo_restores_the_previous_structure checks what it restores).
        after_json = after.canonical_json()
        try:
            undone, _ = editor.undo()
        except ConstellationError:
            assert editor.constellation.canonical_json() == after_json
            continue
        assert undone.version == after.version + 1
        assert_graph_invariants(undone)
        assert_started_untouched(after, undone)


@settings(PROPERTY_SETTINGS, max_examples=examples(150))
@given(plan=plans(max_stars=6), data=st.data())
def test_undo_restores_the_previous_structure(plan: DrawnPlan, data: st.DataObject) -> None:
    # Small on purpose: a failure here shrinks in seconds rather than minutes.
    editor = ConstellationEditor(started_constellation(plan, data), known_tools=KNOWN_TOOLS)
    for _ in range(data.draw(st.integers(1, 3), label="batches")):
        before = editor.constellation
        batch = data.draw(edit_batches(before, max_edits=3), label="batch")
        after = apply_checked(editor, batch)
        if after is None:
            continue
        event("undo")
        undone, _ = editor.undo()
        assert undone.version == after.version + 1
        # A ready star the batch removed comes back pending: readiness is the orchestrator's
        # to decide again (it does so at once when the star's lines are satisfied).
        removed = {edit.id for edit in batch.edits if isinstance(edit, RemoveStar)}
        restored = {
            sid: star.model_copy(update={"status": StarStatus.PENDING})
            if star.status is StarStatus.READY and sid in removed
            else star
            for sid, star in before.stars.items()
        }
        assert structure_of(undone) == structure(restored, before.lines)
        # Redo: the same batch applies again, to the same structure.
        redone = editor.apply(batch)
        assert structure_of(redone) == structure_of(after)


# --------------------------------------------------------------------------- 3. runs


class TrackingDispatcher(SimulatedDispatcher):
    """A simulated fleet that checks what the orchestrator asks of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight: dict[tuple[str, str, int], str] = {}
        self.limits = {device.name: device for device in self.fleet}
        self.violations: list[str] = []

    def assign(self, assignment: TaskAssignment) -> None:
        key = (assignment.constellation_id, assignment.star_id, assignment.attempt)
        device = self.limits.get(assignment.device)
        if device is None:
            self.violations.append(f"{key} sent to unknown device {assignment.device}")
        else:
            load = sum(1 for name in self.in_flight.values() if name == device.name)
            if load >= device.max_tasks:
                self.violations.append(f"{key}: {device.name} already runs {load} tasks")
            if assignment.tool not in device.tools:
                self.violations.append(f"{key}: {device.name} lacks {assignment.tool}")
        if any(other[:2] == key[:2] for other in self.in_flight):
            self.violations.append(f"{key}: another attempt of the star is in flight")
        self.in_flight[key] = assignment.device
        super().assign(assignment)

    def cancel(self, assignment: TaskAssignment, reason: str) -> None:
        self.in_flight.pop((assignment.constellation_id, assignment.star_id, assignment.attempt))
        super().cancel(assignment, reason)

    def deliver(self, result: TaskResult) -> None:
        self.in_flight.pop((result.constellation_id, result.star_id, result.attempt), None)
        super().deliver(result)


class Recorder:
    """Records every event and checks, at the moment of each, what the star's lines say."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.events: list[Event] = []
        self.problems: list[str] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if not isinstance(event, StarReady | StarStarted | StarFinished):
            return
        constellation = self.orchestrator.constellation(event.constellation_id)
        star = constellation.stars.get(event.star_id)
        if star is None:
            self.problems.append(f"{type(event).__name__} for a missing star {event.star_id}")
            return
        refused = []  # lines decided against the star
        for line in constellation.incoming(star.id):
            upstream = constellation.stars[line.source]
            undecided = not upstream.status.terminal
            refused.append(not undecided and not line_satisfied(line, upstream))
            if isinstance(event, StarReady | StarStarted) and (undecided or refused[-1]):
                self.problems.append(
                    f"t={event.ts}: {star.id} {type(event).__name__} although line "
                    f"{line.label()} is not satisfied (upstream {upstream.status})"
                )
        if isinstance(event, StarStarted) and star.status is not StarStatus.RUNNING:
            self.problems.append(f"{star.id} started but is {star.status}")
        if isinstance(event, StarFinished):
            if star.status.value != event.status:
                self.problems.append(f"{star.id} finished {event.status} but is {star.status}")
            if event.status == StarStatus.SKIPPED and not any(refused):
                self.problems.append(f"{star.id} skipped although no line is unsatisfied")


def frozen_part(constellation: Constellation, star_id: str) -> tuple[str, set[str]]:
    """What no edit may change once a star has started: its spec and its incoming lines."""
    spec = constellation.stars[star_id].spec().model_dump_json()
    return spec, {line_json(line) for line in constellation.incoming(star_id)}


def behaviour_from(table: dict[str, list[SimOutcome]]) -> Any:
    def behaviour(assignment: TaskAssignment) -> Outcome:
        drawn = table.get(assignment.star_id, [])
        if assignment.attempt > len(drawn):
            return Outcome(duration=1.0, output={"ok": True, "n": 1})
        outcome = drawn[assignment.attempt - 1]
        if outcome.kind == "succeed":
            return Outcome(duration=outcome.duration, output={"ok": outcome.ok, "n": outcome.n})
        if outcome.kind == "fail":
            return Outcome(duration=outcome.duration, status=TaskOutcome.FAILED, error="boom")
        if assignment.timeout is not None:
            return Outcome(duration=None)  # hangs until the timeout
        # A hang without a timeout would never end; make it merely slow.
        return Outcome(duration=60.0, output={"ok": False, "n": 0})

    return behaviour


@settings(PROPERTY_SETTINGS, max_examples=examples(250))
@given(plan=plans(), data=st.data())
def test_orchestrated_runs(plan: DrawnPlan, data: st.DataObject) -> None:
    constellation = build_constellation(plan.spec, known_tools=KNOWN_TOOLS, constellation_id="c1")
    cid = constellation.id
    table = {
        sid: data.draw(sim_outcome_lists, label=f"outcomes of {sid}")
        for sid in [*constellation.stars, *NEW_IDS]
    }
    fleet = [
        DeviceInfo(name=f"dev{i}", tools=KNOWN_TOOLS, max_tasks=data.draw(st.integers(1, 3)))
        for i in range(data.draw(st.integers(1, 4), label="devices"))
    ]
    actions: list[RunAction] = data.draw(run_actions(constellation), label="actions")

    clock = VirtualClock()
    dispatcher = TrackingDispatcher(
        clock,
        fleet,
        behaviour=behaviour_from(table),
        deliver_after_cancel=data.draw(st.booleans(), label="deliver_after_cancel"),
    )
    events = EventStream()
    orchestrator = Orchestrator(dispatcher, clock=clock, events=events, known_tools=KNOWN_TOOLS)
    recorder = Recorder(orchestrator)
    events.listen(recorder)
    cancelled_whole: list[float] = []
    action_problems: list[str] = []

    def fire(action: RunAction) -> None:
        current = orchestrator.constellation(cid)
        if action.kind == "cancel":
            if not current.status.terminal:
                cancelled_whole.append(clock.now())
            orchestrator.cancel(cid, "test cancels")
            return
        if action.kind == "cancel_star":
            assert action.star_id is not None
            with contextlib.suppress(UnknownStar, OrchestratorError):
                orchestrator.cancel_star(cid, action.star_id, "test cancels one")
            return
        before_json, version = current.canonical_json(), current.version
        frozen = {
            sid: frozen_part(current, sid) for sid, s in current.stars.items() if s.status.started
        }
        try:
            if action.kind in ("edit", "replace"):
                edits = edit_batches(current) if action.kind == "edit" else replace_batches(current)
                batch = data.draw(edits, label=f"{action.kind} at t={clock.now():g}")
                new_version = orchestrator.apply_edits(cid, batch)
            else:
                new_version = orchestrator.undo(cid)
        except ConstellationError as exc:
            event(f"mid-run {action.kind} refused: {type(exc).__name__}")
            if orchestrator.constellation(cid).canonical_json() != before_json:
                action_problems.append(f"refused {action} changed the constellation")
            return
        except OrchestratorError as exc:
            event(f"mid-run {action.kind} refused: {type(exc).__name__}")
            return
        if new_version != version + 1:
            action_problems.append(f"{action}: version {version} -> {new_version}")
        if action.kind != "undo" and action.undo_after is not None:
            undo = RunAction(clock.now() + action.undo_after, "undo")
            clock.call_later(action.undo_after, lambda: fire(undo))
        edited = orchestrator.constellation(cid)
        assert_graph_invariants(edited)
        for sid, part in frozen.items():
            if sid not in edited.stars or frozen_part(edited, sid) != part:
                action_problems.append(f"{action} changed started star {sid}")
        event(f"mid-run {action.kind} applied")

    orchestrator.submit(constellation)
    for action in actions:
        clock.call_later(action.at, lambda action=action: fire(action))
    clock.run_until_idle(max_timers=100_000)

    final = orchestrator.constellation(cid)
    event(f"run {final.status}")
    for kind in sorted({type(ev).__name__ for ev in recorder.events}):
        event(f"run has {kind}")
    for status in sorted({star.status.value for star in final.stars.values()}):
        event(f"run has a {status} star")
    assert not dispatcher.violations, dispatcher.violations
    assert not recorder.problems, recorder.problems
    assert not action_problems, action_problems

    # The constellation finished, every star is terminal, nothing is left on a device.
    assert final.status.terminal, f"constellation stuck in {final.status}"
    stuck = {sid: star.status for sid, star in final.stars.items() if not star.status.terminal}
    assert not stuck, f"stars not terminal: {stuck}"
    assert not dispatcher.in_flight, dispatcher.in_flight
    assert_graph_invariants(final)

    mine = [ev for ev in recorder.events if ev.constellation_id == cid]
    assert [ev.seq for ev in mine] == sorted({ev.seq for ev in mine})
    assert [ev.ts for ev in mine] == sorted(ev.ts for ev in mine), "time went backwards"
    finished = [ev for ev in mine if isinstance(ev, ConstellationFinished)]
    assert len(finished) == 1
    assert finished[0].status == final.status.value
    tail = mine[mine.index(finished[0]) + 1 :]
    assert all(isinstance(ev, StaleResultIgnored) for ev in tail), tail

    # Statuses only move forward; exactly one StarFinished per star.
    ranks: dict[str, list[int]] = defaultdict(list)
    started: dict[str, list[int]] = defaultdict(list)
    finishes: Counter[str] = Counter()
    running_on: dict[str, str] = {}
    load: Counter[str] = Counter()
    limits = {device.name: device.max_tasks for device in fleet}
    for ev in mine:
        if isinstance(ev, EditApplied):
            # A removed star's id may come back as a new, pending star.
            for edit in ev.edits:
                if edit["op"] == "remove_star":
                    ranks.pop(edit["id"], None)
        elif isinstance(ev, StarReady):
            ranks[ev.star_id].append(STATUS_RANK[StarStatus.READY])
        elif isinstance(ev, StarStarted):
            ranks[ev.star_id].append(STATUS_RANK[StarStatus.RUNNING])
            started[ev.star_id].append(ev.attempt)
            assert ev.star_id not in running_on, f"{ev.star_id} started twice at once"
            running_on[ev.star_id] = ev.device
            load[ev.device] += 1
            assert load[ev.device] <= limits[ev.device], f"{ev.device} overloaded"
        elif isinstance(ev, AttemptFailed):
            assert running_on.get(ev.star_id) == ev.device
            del running_on[ev.star_id]
            load[ev.device] -= 1
            retries = final.stars[ev.star_id].retries
            assert ev.will_retry == (ev.attempt <= retries), ev
        elif isinstance(ev, StarFinished):
            ranks[ev.star_id].append(STATUS_RANK[StarStatus(ev.status)])
            finishes[ev.star_id] += 1
            if ev.star_id in running_on:
                load[running_on.pop(ev.star_id)] -= 1
            if ev.status == StarStatus.SKIPPED:
                assert ranks[ev.star_id] == [3], f"{ev.star_id} skipped after being ready"
    assert not running_on, running_on
    for star_id, sequence in ranks.items():
        assert sequence == sorted(sequence), f"{star_id} moved backwards: {sequence}"
        assert sequence[0] != STATUS_RANK[StarStatus.RUNNING], f"{star_id} ran before ready"
    assert finishes == Counter(list(final.stars)), f"StarFinished counts: {finishes}"

    # Attempts are numbered 1..k, k <= retries + 1, each finished within its timeout.
    for star_id, star in final.stars.items():
        numbers = [attempt.number for attempt in star.attempts]
        assert numbers == list(range(1, len(numbers) + 1)), f"{star_id}: attempts {numbers}"
        assert started[star_id] == numbers
        assert len(numbers) <= star.retries + 1, f"{star_id}: {numbers}, retries={star.retries}"
        for attempt in star.attempts:
            assert attempt.status is not AttemptStatus.RUNNING, f"{star_id} #{attempt.number}"
            assert attempt.finished_at is not None
            if star.timeout is not None:
                assert attempt.finished_at - attempt.started_at <= star.timeout + 1e-9
        if star.attempts and star.status is StarStatus.SUCCEEDED:
            assert star.attempts[-1].status is AttemptStatus.SUCCEEDED

    # A success line's downstream ran only if its upstream succeeded.
    for line in final.lines:
        if line.kind is LineKind.SUCCESS and started[line.target]:
            assert final.stars[line.source].status is StarStatus.SUCCEEDED, line.label()

    # The final status says what the stars did.
    failed = sorted(
        sid
        for sid, star in final.stars.items()
        if star.status in (StarStatus.FAILED, StarStatus.CANCELLED) and not star.allow_failure
    )
    if cancelled_whole:
        expected = ConstellationStatus.CANCELLED
    elif failed:
        expected = ConstellationStatus.FAILED
    else:
        expected = ConstellationStatus.SUCCEEDED
    assert final.status is expected, f"{final.status}, failed stars: {failed}"
    edits = [ev for ev in mine if isinstance(ev, EditApplied)]
    assert final.version == 1 + len(edits)


# --------------------------------------------------------------------------- shrunk examples
# The smallest failing cases the properties above found, kept as plain tests.


def two_stars(*, reference: bool = False) -> Constellation:
    """`a` -> `b` (a success line); `b` may refer to `${a.output}`."""
    args = {"text": "${a.output}"} if reference else {}
    spec = PlanSpec.model_validate(
        {
            "name": "pair",
            "stars": [
                {"id": "a", "tool": "shell.run"},
                {"id": "b", "tool": "shell.run", "args": args, "after": ["a"]},
            ],
        }
    )
    return build_constellation(spec, known_tools=KNOWN_TOOLS)


def test_a_reference_cut_by_removing_a_line_names_that_edit() -> None:
    batch = EditBatch(
        edits=[AddStar(star=StarSpec(id="c", tool="fs.read")), RemoveLine(source="a", target="b")]
    )
    with pytest.raises(BadReference) as info:
        apply_batch(two_stars(reference=True), batch)
    assert info.value.edit_index == 1


@pytest.mark.parametrize(
    "edits",
    [
        pytest.param([RemoveLine(source="a", target="b")], id="remove-line-into-ready-star"),
        pytest.param(
            [RemoveLine(source="a", target="b"), RemoveStar(id="b")], id="remove-ready-star"
        ),
    ],
)
def test_undo_restores_a_ready_star(edits: list[Any]) -> None:
    """`a` succeeded and `b` is ready: removing the settled line a->b (and `b`) can be
    undone; a removed `b` comes back pending, and the orchestrator readies it again."""
    constellation = two_stars()
    for status in (StarStatus.READY, StarStatus.RUNNING, StarStatus.SUCCEEDED):
        constellation.stars["a"].move_to(status)
    constellation.stars["b"].move_to(StarStatus.READY)
    editor = ConstellationEditor(constellation, known_tools=KNOWN_TOOLS)
    stars_before, lines_before = structure_of(constellation)
    after = editor.apply(EditBatch(edits=edits))
    undone, _ = editor.undo()
    stars_after_undo, lines_after_undo = structure_of(undone)
    assert lines_after_undo == lines_before
    assert stars_after_undo["a"] == stars_before["a"]
    expected_b = StarStatus.READY if "b" in after.stars else StarStatus.PENDING
    assert undone.stars["b"].status is expected_b
    assert undone.stars["b"].spec() == constellation.stars["b"].spec()


def test_a_ready_star_cannot_gain_an_unsettled_dependency() -> None:
    constellation = two_stars()
    constellation.stars["a"].move_to(StarStatus.READY)
    constellation.stars["b"].move_to(StarStatus.READY)  # as if a->b were not there
    with pytest.raises(StarNotEditable):
        apply_batch(constellation, EditBatch(edits=[RemoveLine(source="a", target="b")]))


def test_a_queued_star_replaced_under_the_same_id_waits_for_its_new_lines() -> None:
    """`b` is ready but queued (the one slot is busy) when an edit replaces it by a star
    that waits for `d`; the stale queue entry must not start the new `b` early."""
    spec = PlanSpec.model_validate(
        {
            "name": "replace",
            "stars": [
                {"id": "a", "tool": "shell.run", "priority": 2},
                {"id": "d", "tool": "shell.run", "priority": 1},
                {"id": "b", "tool": "shell.run"},
            ],
        }
    )
    clock = VirtualClock()
    durations = {"a": 10.0, "d": 100.0, "b": 1.0}
    dispatcher = SimulatedDispatcher(
        clock,
        [DeviceInfo(name="dev", tools=KNOWN_TOOLS, max_tasks=2)],
        behaviour=lambda assignment: Outcome(duration=durations[assignment.star_id]),
    )
    orchestrator = Orchestrator(dispatcher, clock=clock, known_tools=KNOWN_TOOLS)
    handle = orchestrator.submit(build_constellation(spec, constellation_id="c"))
    replace = EditBatch(
        edits=[RemoveStar(id="b"), AddStar(star=StarSpec(id="b", tool="shell.run", after=["d"]))]
    )
    clock.call_later(1.0, lambda: orchestrator.apply_edits("c", replace))
    clock.run_until_idle()
    final = handle.constellation
    assert final.status is ConstellationStatus.SUCCEEDED
    assert final.stars["b"].attempts[0].started_at == 100.0  # when `d` finished
