"""Graphs for the layout tests: random DAGs and a geometric crossing count."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

Point = tuple[float, float]


def random_dag(n: int, seed: int, *, reach: int = 12) -> tuple[list[str], list[tuple[str, str]]]:
    """`n` stars; each after the first has one to three upstream stars among the
    `reach` before it."""
    rng = random.Random(seed)
    edges: dict[tuple[int, int], None] = {}
    for b in range(1, n):
        for _ in range(rng.choice((1, 1, 2, 3))):
            edges[(rng.randrange(max(0, b - reach), b), b)] = None
    ids = [f"s{i}" for i in range(n)]
    return ids, [(ids[a], ids[b]) for a, b in edges]


def longest_path_positions(
    stars: Sequence[str], edges: Sequence[tuple[str, str]], pitch: float = 310, row: float = 86
) -> dict[str, Point]:
    """The naive drawing (Galaxy's): column = longest path from a source, rows in input
    order, no crossing reduction."""
    column = dict.fromkeys(stars, 0)
    for _ in stars:  # relax until stable (fine for test sizes)
        changed = False
        for a, b in edges:
            if column[b] < column[a] + 1:
                column[b] = column[a] + 1
                changed = True
        if not changed:
            break
    rows: dict[int, int] = {}
    place: dict[str, Point] = {}
    for star in stars:
        r = rows.get(column[star], 0)
        rows[column[star]] = r + 1
        place[star] = (column[star] * pitch, r * row)
    return place


def polylines(
    edges: Sequence[tuple[str, str]],
    positions: dict[str, Point],
    routes: dict[tuple[str, str], tuple[Point, ...]] | None = None,
) -> list[list[Point]]:
    routes = routes or {}
    return [[positions[a], *routes.get((a, b), ()), positions[b]] for a, b in edges]


def crossings(lines: list[list[Point]]) -> int:
    """Proper crossings between the segments of different polylines (segments that only
    share an end point do not count)."""
    segments = [(i, p, q) for i, line in enumerate(lines) for p, q in itertools.pairwise(line)]
    total = 0
    for x in range(len(segments)):
        i, p1, p2 = segments[x]
        for y in range(x + 1, len(segments)):
            j, q1, q2 = segments[y]
            if i != j and _cross(p1, p2, q1, q2):
                total += 1
    return total


def _cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    if {p1, p2} & {q1, q2}:
        return False

    def side(a: Point, b: Point, c: Point) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = side(q1, q2, p1), side(q1, q2, p2)
    d3, d4 = side(p1, p2, q1), side(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0
