"""The constellation layout: deterministic, fewer crossings than columns by depth, and
stars that stay put while the plan is edited."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from app.gui.constellation.layout import (
    ConstellationLayout,
    LayoutMetrics,
    Placement,
    _pack,
    layered_drawing,
)
from tests.app.gui.graphs import crossings, longest_path_positions, polylines, random_dag
from tests.app.gui.layout_reference import placed_again

ROOT = Path(__file__).resolve().parents[3]
METRICS = LayoutMetrics()

# Input order puts every line across the others: a1->b4, a2->b3, a3->b2, a4->b1.
CROSSED = (
    ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"],
    [("a1", "b4"), ("a2", "b3"), ("a3", "b2"), ("a4", "b1"), ("a1", "b3"), ("a4", "b2")],
)


def assert_no_overlap(placement: Placement, metrics: LayoutMetrics = METRICS) -> None:
    by_column: dict[int, list[float]] = {}
    for star, column in placement.columns.items():
        by_column.setdefault(column, []).append(placement.positions[star][1])
    for column, heights in by_column.items():
        heights.sort()
        for upper, lower in itertools.pairwise(heights):
            assert lower - upper >= metrics.node_height, (column, upper, lower)


def assert_lines_point_right(placement: Placement, edges: list[tuple[str, str]]) -> None:
    for a, b in edges:
        assert placement.columns[b] > placement.columns[a], (a, b)


def test_the_same_graph_gives_the_same_drawing() -> None:
    stars, edges = random_dag(120, seed=7)
    first = layered_drawing(stars, edges)
    second = layered_drawing(stars, edges)
    assert first == second


def test_the_drawing_does_not_depend_on_hash_seeds() -> None:
    """Two interpreters with different hash seeds draw the same positions."""
    script = (
        "import json; from tests.app.gui.graphs import random_dag\n"
        "from app.gui.constellation.layout import ConstellationLayout\n"
        "stars, edges = random_dag(80, seed=3)\n"
        "p = ConstellationLayout().update(stars, edges)\n"
        "print(json.dumps([sorted(p.positions.items()), sorted(map(str, p.routes.items()))]))\n"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]


def test_crossing_reduction_beats_columns_by_depth() -> None:
    stars, edges = CROSSED
    naive = crossings(polylines(edges, longest_path_positions(stars, edges)))
    placement = ConstellationLayout().update(stars, edges)
    ours = crossings(polylines(edges, placement.positions, placement.routes))
    assert naive >= 5
    assert ours == 0


def test_fewer_crossings_on_a_random_plan() -> None:
    stars, edges = random_dag(60, seed=11)
    naive = crossings(polylines(edges, longest_path_positions(stars, edges)))
    layout = ConstellationLayout()
    placement = layout.update(stars, edges)
    ours = crossings(polylines(edges, placement.positions, placement.routes))
    assert ours < naive / 2, (ours, naive)
    assert layout.last_crossings == ours  # the count the ordering optimised is the real one


def test_every_star_gets_a_place_without_overlaps() -> None:
    stars, edges = random_dag(200, seed=5)
    placement = ConstellationLayout().update(stars, edges)
    assert set(placement.positions) == set(stars)
    assert_no_overlap(placement)
    assert_lines_point_right(placement, edges)
    for (a, b), bends in placement.routes.items():
        assert len(bends) == placement.columns[b] - placement.columns[a] - 1


def test_a_cycle_is_drawn_rather_than_looping() -> None:
    drawing = layered_drawing(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")])
    assert set(drawing.columns) == {"a", "b", "c"}


def test_lines_to_unknown_stars_and_duplicates_are_ignored() -> None:
    drawing = layered_drawing(["a", "b"], [("a", "b"), ("a", "b"), ("a", "zz"), ("b", "b")])
    assert drawing.columns == {"a": 0, "b": 1}


def test_adding_a_star_keeps_the_others_in_place() -> None:
    stars, edges = random_dag(40, seed=2)
    layout = ConstellationLayout()
    before = layout.update(stars, edges).positions
    after = layout.update([*stars, "new"], [*edges, ("s3", "new"), ("new", "s30")])
    assert after.added == {"new"}
    assert not after.full
    for star in stars:
        if star not in after.moved:
            assert after.positions[star] == before[star]
    # only stars downstream of the new one may have moved, and only to the right
    for star in after.moved:
        assert after.positions[star][0] > before[star][0]
        assert after.columns[star] > after.columns["new"]
    assert_no_overlap(after)
    assert_lines_point_right(after, [*edges, ("s3", "new"), ("new", "s30")])


def test_a_new_leaf_moves_nothing() -> None:
    stars, edges = random_dag(40, seed=4)
    layout = ConstellationLayout()
    before = layout.update(stars, edges).positions
    after = layout.update([*stars, "leaf"], [*edges, ("s10", "leaf")])
    assert after.moved == frozenset()
    assert {s: after.positions[s] for s in stars} == before
    assert after.columns["leaf"] == after.columns["s10"] + 1
    assert_no_overlap(after)


def test_removing_a_star_keeps_the_others_in_place() -> None:
    stars, edges = random_dag(40, seed=6)
    layout = ConstellationLayout()
    before = layout.update(stars, edges).positions
    kept = [s for s in stars if s != "s12"]
    after = layout.update(kept, [(a, b) for a, b in edges if "s12" not in (a, b)])
    assert after.removed == {"s12"}
    assert after.moved == frozenset()
    assert {s: after.positions[s] for s in kept} == {s: before[s] for s in kept}


def test_a_star_inserted_between_two_pushes_the_downstream_one_right() -> None:
    layout = ConstellationLayout()
    layout.update(["a", "b", "c"], [("a", "b"), ("b", "c")])
    after = layout.update(["a", "b", "c", "x"], [("a", "x"), ("x", "b"), ("b", "c")])
    assert [after.columns[s] for s in ("a", "x", "b", "c")] == [0, 1, 2, 3]
    assert after.moved == {"b", "c"}
    assert after.added == {"x"}


def test_reset_draws_afresh() -> None:
    layout = ConstellationLayout()
    layout.update(["a", "b"], [("a", "b")])
    again = layout.update(["a", "b"], [("a", "b")])
    assert not again.full
    layout.reset()
    assert layout.update(["a", "b"], [("a", "b")]).full


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=2, max_value=40),
    st.integers(min_value=0, max_value=10_000),
    st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), min_size=1, max_size=6),
)
def test_edits_never_overlap_and_only_report_moves(
    n: int, seed: int, edits: list[tuple[bool, int]]
) -> None:
    """Any sequence of additions and removals: no overlaps, lines point right, and a star
    not reported as moved is exactly where it was."""
    stars, edges = random_dag(n, seed)
    layout = ConstellationLayout()
    placement = layout.update(stars, edges)
    fresh = 0
    for add, pick in edits:
        if add or len(stars) < 3:
            fresh += 1
            new = f"n{fresh}"
            up, down = stars[pick % len(stars)], stars[(pick // 7) % len(stars)]
            index = {s: i for i, s in enumerate(stars)}
            edges = [*edges, (up, new)]
            if index[down] > index[up]:  # keep it acyclic: later stars come after
                edges.append((new, down))
            stars = [*stars[: index[up] + 1], new, *stars[index[up] + 1 :]]
        else:
            gone = stars[pick % len(stars)]
            stars = [s for s in stars if s != gone]
            edges = [(a, b) for a, b in edges if gone not in (a, b)]
        before = placement.positions
        placement = layout.update(stars, edges)
        assert_no_overlap(placement)
        assert_lines_point_right(placement, edges)
        for star in stars:
            if star in before and star not in placement.moved:
                assert placement.positions[star] == before[star]


def test_pack_keeps_order_and_room() -> None:
    out = _pack([0.0, 0.0, 0.0, 100.0], [1.0, 1.0, 1.0, 1.0], [10.0, 10.0, 10.0])
    assert out == sorted(out)
    assert all(b - a >= 10.0 - 1e-9 for a, b in itertools.pairwise(out))
    assert abs(out[3] - 100.0) < 1e-9  # free to sit where it wants
    assert abs(sum(out[:3]) / 3 - 0.0) < 1e-9  # the squeezed ones centre on their wish


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=2, max_value=50),
    st.integers(min_value=0, max_value=10_000),
    st.lists(
        st.tuples(
            st.sampled_from(["star", "append", "line", "unline", "remove", "loop", "same"]),
            st.integers(0, 10_000),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_an_update_places_exactly_what_placing_everything_again_would(
    n: int, seed: int, edits: list[tuple[str, int]]
) -> None:
    """The layout keeps its rooms, routes and graph between updates and looks only at
    what changed; its placements are the ones a full pass over the previous placement
    gives (stars and lines added in between or after the others, lines and stars
    removed, a cycle, the same graph again)."""
    stars, edges = random_dag(n, seed)
    layout = ConstellationLayout()
    placement = layout.update(stars, edges)
    fresh = 0
    for kind, pick in edits:
        a, b = stars[pick % len(stars)], stars[(pick // 7) % len(stars)]
        if kind == "star" or len(stars) < 3:
            fresh += 1
            new = f"n{fresh}"
            edges = [*edges, (a, new)] + ([(new, b)] if stars.index(b) > stars.index(a) else [])
            stars = [*stars[: stars.index(a) + 1], new, *stars[stars.index(a) + 1 :]]
        elif kind == "append":  # stars and lines only added after the others: grown
            fresh += 1
            new = f"n{fresh}"
            edges = [*edges, (a, new), (new, "later")]  # (to a star that comes later)
            stars = [*stars, new, *(["later"] if pick % 3 == 0 else [])]
        elif kind == "line" and stars.index(a) < stars.index(b):
            edges = [*edges, (a, b)]
        elif kind == "unline" and edges:
            edges = [e for i, e in enumerate(edges) if i != pick % len(edges)]
        elif kind == "remove":
            stars = [s for s in stars if s != a]
            edges = [e for e in edges if a not in e]
        elif kind == "loop" and a != b:
            edges = [*edges, (a, b), (b, a)]
        expected = placed_again(placement, stars, edges, layout.metrics)
        placement = layout.update(stars, edges)
        assert placement.positions == expected.positions
        assert placement.columns == expected.columns
        assert placement.routes == expected.routes
        assert (placement.added, placement.removed, placement.moved) == (
            expected.added, expected.removed, expected.moved
        )  # fmt: skip


def test_the_same_stars_and_lines_again_change_nothing() -> None:
    stars, edges = random_dag(80, seed=9)
    layout = ConstellationLayout()
    first = layout.update(stars, edges)
    again = layout.update(list(stars), list(edges))
    assert (again.added, again.removed, again.moved, again.full) == (set(), set(), set(), False)
    assert again.positions == first.positions
    assert again.routes == first.routes
