"""Where each star of a constellation sits: a layered drawing that stays put while it runs.

`layered_drawing(stars, lines)` is a Sugiyama layout, left to right: a star's column is
its longest path from a source (sources are pulled next to their first downstream star),
a line longer than one column gets a bend point in every column it crosses, the order of
the stars in each column comes from barycenter sweeps plus adjacent transpositions that
keep the order with the fewest crossings seen, and the height of each star is the
weighted mean of its neighbours' heights, packed without overlaps (long lines pulled
straight). It is deterministic: the same stars and lines in the same order give the same
drawing.

`ConstellationLayout.update(stars, lines)` is what a live view calls on every snapshot:
the first call draws the whole graph; later calls keep every star that is still there
where it was (a star moves only when a new line would otherwise point backwards, and then
only to the right, as little as it must), put new stars next to their neighbours in free
room, and report which stars were added, removed and moved so the view can fade and
animate them. `reset()` forgets the drawing (a new constellation, or "tidy up").

Sizes are in scene units (`LayoutMetrics`); positions are the centres of the stars.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Point = tuple[float, float]
Edge = tuple[str, str]

THOROUGH_LIMIT = 1500
"""Up to this many vertices (stars plus bends), transpose after every ordering sweep."""

# Weights of a segment when straightening: real-real, real-bend, bend-bend (after dot).
_OMEGA = (1.0, 2.0, 8.0)


@dataclass(frozen=True, slots=True)
class LayoutMetrics:
    """Sizes of the drawing in scene units."""

    node_width: float = 220.0
    node_height: float = 64.0
    column_gap: float = 90.0
    """Horizontal room between two columns (where the lines run)."""
    row_gap: float = 22.0
    """Vertical room between two stars of a column."""
    bend_height: float = 8.0
    """The room a long line's bend point takes in a column it crosses."""

    @property
    def column_pitch(self) -> float:
        return self.node_width + self.column_gap

    def column_x(self, column: int) -> float:
        return column * self.column_pitch


@dataclass(frozen=True, slots=True)
class Placement:
    """The drawing after one update."""

    positions: dict[str, Point]
    """The centre of each star."""
    columns: dict[str, int]
    routes: dict[Edge, tuple[Point, ...]]
    """The bend points of each line (empty for a line between adjacent columns)."""
    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    moved: frozenset[str] = frozenset()
    """Stars that were there before and now sit elsewhere."""
    full: bool = True
    """True when the whole graph was drawn afresh (first update or after `reset`)."""


@dataclass(slots=True)
class _Graph:
    """Stars as ints in input order and the lines between them, cycles dropped."""

    ids: list[str] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    succ: list[list[int]] = field(default_factory=list)
    pred: list[list[int]] = field(default_factory=list)
    named: list[Edge] = field(default_factory=list)
    """The edges by star id."""
    unknown: list[Edge] = field(default_factory=list)
    """Lines left out because a star of theirs is not in the graph."""
    trimmed: bool = False
    """Lines were left out to break a cycle."""
    _order: list[int] | None = None

    @classmethod
    def of(cls, stars: Iterable[str], lines: Iterable[Edge]) -> _Graph:
        graph = cls()
        graph._add(list(dict.fromkeys(stars)), lines)
        if len(graph.topological_order()) < len(graph.ids):  # a cycle: drop what closes it
            graph.edges = _without_back_edges(len(graph.ids), graph.edges)
            graph.trimmed = True
            graph._link()
        return graph

    def extend(self, stars: list[str], lines: Iterable[Edge]) -> bool:
        """Add new stars (none of them in the graph yet) and lines after those it has,
        as if all had been given to `of`; False if that cannot be done (a line left out
        before now joins two stars, or a cycle): the graph is spoilt then, make another."""
        if self.trimmed:
            return False
        known = self.index.keys() | set(stars)
        if any(a in known and b in known and a != b for a, b in self.unknown):
            return False
        self._add(stars, lines)
        return len(self.topological_order()) == len(self.ids)

    def _add(self, stars: list[str], lines: Iterable[Edge]) -> None:
        index, ids, succ, pred = self.index, self.ids, self.succ, self.pred
        for star in stars:
            index[star] = len(ids)
            ids.append(star)
            succ.append([])
            pred.append([])
        seen = set(self.edges)
        for line in lines:
            a, b = index.get(line[0]), index.get(line[1])
            if a is None or b is None:
                self.unknown.append(line)
            elif a != b and (a, b) not in seen:
                seen.add((a, b))
                self.edges.append((a, b))
                self.named.append((ids[a], ids[b]))
                succ[a].append(b)
                pred[b].append(a)
        self._order = None

    def _link(self) -> None:
        self.succ = [[] for _ in self.ids]
        self.pred = [[] for _ in self.ids]
        for a, b in self.edges:
            self.succ[a].append(b)
            self.pred[b].append(a)
        self.named = [(self.ids[a], self.ids[b]) for a, b in self.edges]
        self._order = None

    def topological_order(self) -> list[int]:
        """Kahn's order, sources in input order first (computed once)."""
        if self._order is None:
            self._order = self._kahn()
        return self._order

    def _kahn(self) -> list[int]:
        waiting = [len(p) for p in self.pred]
        ready = deque(i for i, w in enumerate(waiting) if w == 0)
        order: list[int] = []
        while ready:
            v = ready.popleft()
            order.append(v)
            for w in self.succ[v]:
                waiting[w] -= 1
                if waiting[w] == 0:
                    ready.append(w)
        return order


def _without_back_edges(n: int, edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The edges minus those closing a cycle in a depth-first search in input order (a
    valid constellation has none; a drawing must not loop forever on a bad one)."""
    out: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        out[a].append(b)
    state = [0] * n  # 0 new, 1 on the stack, 2 done
    back: set[tuple[int, int]] = set()
    for root in range(n):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, 0)]
        while stack:
            v, i = stack[-1]
            if i < len(out[v]):
                stack[-1] = (v, i + 1)
                w = out[v][i]
                if state[w] == 1:
                    back.add((v, w))
                elif state[w] == 0:
                    state[w] = 1
                    stack.append((w, 0))
            else:
                state[v] = 2
                stack.pop()
    return [e for e in edges if e not in back] if back else edges


# ------------------------------------------------------------------ the full drawing


@dataclass(frozen=True, slots=True)
class Drawing:
    """A whole layered drawing: columns, heights and bend points."""

    columns: dict[str, int]
    heights: dict[str, float]
    bends: dict[Edge, tuple[float, ...]]
    """The height of each bend of a line, one per column strictly between its ends."""
    crossings: int

    def positions(self, metrics: LayoutMetrics) -> dict[str, Point]:
        return {s: (metrics.column_x(c), self.heights[s]) for s, c in self.columns.items()}


def layered_drawing(
    stars: Sequence[str],
    lines: Iterable[Edge],
    metrics: LayoutMetrics | None = None,
    *,
    max_sweeps: int = 24,
    patience: int = 4,
) -> Drawing:
    """A Sugiyama drawing of the graph. `max_sweeps` bounds the ordering sweeps; the
    search stops earlier after `patience` sweeps without fewer crossings."""
    metrics = metrics or LayoutMetrics()
    graph = _Graph.of(stars, lines)
    n = len(graph.ids)
    column = _columns(graph)
    proper = _ProperGraph(graph, column)
    orderer = _Orderer(proper)
    # Transposing after every sweep pays off on the graphs a person reads at once; on
    # bigger ones it costs four times the rest for a few percent fewer crossings.
    crossings = orderer.run(max_sweeps, patience, thorough=proper.count <= THOROUGH_LIMIT)
    y = _heights(proper, orderer.layers, metrics)
    top = min(y) if y else 0.0
    heights = {graph.ids[v]: y[v] - top for v in range(n)}
    bends: dict[Edge, tuple[float, ...]] = {}
    for (a, b), chain in proper.chains.items():
        bends[(graph.ids[a], graph.ids[b])] = tuple(y[d] - top for d in chain)
    return Drawing({graph.ids[v]: column[v] for v in range(n)}, heights, bends, crossings)


def _columns(graph: _Graph) -> list[int]:
    """Longest path from a source; a source then moves right next to its nearest
    downstream star (fewer long lines, as dot's ranking would place it)."""
    column = [0] * len(graph.ids)
    for v in graph.topological_order():
        for w in graph.succ[v]:
            column[w] = max(column[w], column[v] + 1)
    for v in range(len(graph.ids)):
        if not graph.pred[v] and graph.succ[v]:
            column[v] = min(column[w] for w in graph.succ[v]) - 1
    return column


class _ProperGraph:
    """The graph with a bend vertex in every column a long line crosses, so that every
    edge joins adjacent columns. Real vertices are 0..n-1, bends follow."""

    def __init__(self, graph: _Graph, column: list[int]) -> None:
        n = len(graph.ids)
        self.n = n
        self.layer_of: list[int] = list(column)
        self.up: list[list[int]] = [[] for _ in range(n)]
        self.down: list[list[int]] = [[] for _ in range(n)]
        self.chains: dict[tuple[int, int], list[int]] = {}
        for a, b in graph.edges:
            chain: list[int] = []
            previous = a
            for layer in range(column[a] + 1, column[b]):
                d = len(self.layer_of)
                self.layer_of.append(layer)
                self.up.append([previous])
                self.down.append([])
                self.down[previous].append(d)
                chain.append(d)
                previous = d
            self.down[previous].append(b)
            self.up[b].append(previous)
            if chain:
                self.chains[(a, b)] = chain
        self.count = len(self.layer_of)
        self.depth = max(self.layer_of, default=-1) + 1

    def is_bend(self, v: int) -> bool:
        return v >= self.n


class _Orderer:
    """The order of the vertices in each column: barycenter sweeps, down then up, each
    followed by adjacent transpositions; the order with the fewest crossings wins."""

    def __init__(self, graph: _ProperGraph) -> None:
        self.g = graph
        self.layers: list[list[int]] = self._initial_order()
        self.pos = [0] * graph.count
        self._renumber()

    def _initial_order(self) -> list[list[int]]:
        """Depth-first from the vertices in (column, input) order: a start that keeps
        each subtree together."""
        g = self.g
        layers: list[list[int]] = [[] for _ in range(g.depth)]
        seen = [False] * g.count
        starts = sorted(range(g.count), key=lambda v: (g.layer_of[v], v))
        for start in starts:
            if seen[start]:
                continue
            stack = [start]
            while stack:
                v = stack.pop()
                if seen[v]:
                    continue
                seen[v] = True
                layers[g.layer_of[v]].append(v)
                stack.extend(reversed(g.down[v]))
        return layers

    def _renumber(self, layers: Iterable[list[int]] | None = None) -> None:
        for layer in self.layers if layers is None else layers:
            for i, v in enumerate(layer):
                self.pos[v] = i

    def run(self, max_sweeps: int, patience: int, *, thorough: bool) -> int:
        """Sweep until `patience` sweeps bring no fewer crossings; `thorough` transposes
        after every sweep (better, slower), else only the best order at the end."""
        best = self.crossings()
        best_layers = [list(layer) for layer in self.layers]
        idle = 0
        for sweep in range(max_sweeps):
            if best == 0 or idle >= patience:
                break
            self._sweep(downward=sweep % 2 == 0)
            if thorough:
                self._transpose()
            now = self.crossings()
            if now < best:
                best, idle = now, 0
                best_layers = [list(layer) for layer in self.layers]
            else:
                idle += 1
        self.layers = best_layers
        self._renumber()
        if best:
            self._transpose(rounds=8)
            best = self.crossings()
        return best

    def _sweep(self, downward: bool) -> None:
        g = self.g
        span = range(1, g.depth) if downward else range(g.depth - 2, -1, -1)
        neighbours = g.up if downward else g.down
        pos = self.pos
        for k in span:
            layer = self.layers[k]
            sortable: list[tuple[float, int, int]] = []
            fixed: list[tuple[int, int]] = []
            for i, v in enumerate(layer):
                near = neighbours[v]
                if near:
                    sortable.append((sum(pos[u] for u in near) / len(near), i, v))
                else:
                    fixed.append((i, v))
            if not sortable:
                continue
            sortable.sort()
            # Vertices without neighbours on that side keep their index (as dagre does).
            merged: list[int] = []
            s = 0
            for i, v in fixed:
                while len(merged) < i and s < len(sortable):
                    merged.append(sortable[s][2])
                    s += 1
                merged.append(v)
            merged.extend(entry[2] for entry in sortable[s:])
            self.layers[k] = merged
            for i, v in enumerate(merged):
                pos[v] = i

    def _transpose(self, rounds: int = 4) -> None:
        """Swap neighbours in a column while that removes crossings; a column is looked
        at again only when it or a column next to it changed."""
        g, pos = self.g, self.pos
        todo = set(range(len(self.layers)))
        for _ in range(rounds):
            changed: set[int] = set()
            for k in sorted(todo):
                layer = self.layers[k]
                if len(layer) < 2:
                    continue
                ups = [sorted(pos[u] for u in g.up[v]) for v in layer]
                downs = [sorted(pos[u] for u in g.down[v]) for v in layer]
                for i in range(len(layer) - 1):
                    kept_up, swapped_up = _pair_crossings(ups[i], ups[i + 1])
                    kept_down, swapped_down = _pair_crossings(downs[i], downs[i + 1])
                    if swapped_up + swapped_down < kept_up + kept_down:
                        v, w = layer[i], layer[i + 1]
                        layer[i], layer[i + 1] = w, v
                        pos[v], pos[w] = i + 1, i
                        ups[i], ups[i + 1] = ups[i + 1], ups[i]
                        downs[i], downs[i + 1] = downs[i + 1], downs[i]
                        changed.add(k)
            if not changed:
                return
            todo = {j for k in changed for j in (k - 1, k, k + 1) if 0 <= j < len(self.layers)}

    def crossings(self) -> int:
        """Crossings between every pair of adjacent columns (Barth-Mutzel, with a
        Fenwick tree: O(E log V))."""
        g, pos = self.g, self.pos
        total = 0
        for k in range(g.depth - 1):
            size = len(self.layers[k + 1])
            tree = [0] * (size + 1)
            seen = 0
            for v in self.layers[k]:
                for p in sorted(pos[w] for w in g.down[v]):
                    # count earlier edges ending strictly right of p
                    i, not_right = p + 1, 0
                    while i > 0:
                        not_right += tree[i]
                        i -= i & -i
                    total += seen - not_right
                    i = p + 1
                    while i <= size:
                        tree[i] += 1
                        i += i & -i
                    seen += 1
        return total


def _pair_crossings(left: list[int], right: list[int]) -> tuple[int, int]:
    """Crossings between the edges of two neighbouring vertices, given the sorted
    positions of their neighbours on one side: (as they are, swapped)."""
    if not left or not right:
        return 0, 0
    if len(left) == 1 and len(right) == 1:
        a, b = left[0], right[0]
        return (1, 0) if a > b else ((0, 1) if a < b else (0, 0))
    kept = sum(bisect.bisect_left(right, a) for a in left)
    swapped = sum(len(right) - bisect.bisect_right(right, a) for a in left)
    return kept, swapped


def _heights(graph: _ProperGraph, layers: list[list[int]], metrics: LayoutMetrics) -> list[float]:
    """A height per vertex: each the weighted mean of its neighbours' heights, columns
    packed in their order without overlaps; sweeps down, up, then both ways."""
    size = [
        metrics.bend_height if graph.is_bend(v) else metrics.node_height for v in range(graph.count)
    ]

    def gap(a: int, b: int) -> float:
        room = (
            metrics.row_gap if not (graph.is_bend(a) or graph.is_bend(b)) else metrics.row_gap / 2
        )
        return (size[a] + size[b]) / 2 + room

    separations = [[gap(a, b) for a, b in itertools.pairwise(layer)] for layer in layers]
    y = [0.0] * graph.count
    for layer, seps in zip(layers, separations, strict=True):
        at = 0.0
        for i, v in enumerate(layer):
            y[v] = at
            if i < len(seps):
                at += seps[i]

    def omega(a: int, b: int) -> float:
        return _OMEGA[graph.is_bend(a) + graph.is_bend(b)]

    depth = len(layers)
    passes: list[tuple[range, bool, bool]] = [
        (range(1, depth), True, False),
        (range(depth - 2, -1, -1), False, True),
    ] * 3 + [(range(depth), True, True)] * 2
    for span, use_up, use_down in passes:
        for k in span:
            layer = layers[k]
            desired: list[float] = []
            weights: list[float] = []
            for v in layer:
                total = weight = 0.0
                if use_up:
                    for u in graph.up[v]:
                        w = omega(u, v)
                        total += w * y[u]
                        weight += w
                if use_down:
                    for u in graph.down[v]:
                        w = omega(u, v)
                        total += w * y[u]
                        weight += w
                if weight:
                    desired.append(total / weight)
                    weights.append(weight)
                else:  # nothing pulls it: it holds its place, gently
                    desired.append(y[v])
                    weights.append(0.25)
            for v, at in zip(layer, _pack(desired, weights, separations[k]), strict=True):
                y[v] = at
    return y


def _pack(desired: list[float], weights: list[float], separations: list[float]) -> list[float]:
    """The heights closest to `desired` (weighted least squares) that keep the order and
    at least `separations[i]` between entries i and i+1: pool-adjacent-violators on
    heights shifted by the cumulative separations."""
    offsets = [0.0]
    for s in separations:
        offsets.append(offsets[-1] + s)
    # blocks of (weighted sum, weight, count), each block's value the weighted mean
    sums: list[float] = []
    masses: list[float] = []
    counts: list[int] = []
    for d, w, o in zip(desired, weights, offsets, strict=True):
        sums.append(w * (d - o))
        masses.append(w)
        counts.append(1)
        while len(sums) > 1 and sums[-2] / masses[-2] > sums[-1] / masses[-1]:
            s, m, c = sums.pop(), masses.pop(), counts.pop()
            sums[-1] += s
            masses[-1] += m
            counts[-1] += c
    out: list[float] = []
    for s, m, c in zip(sums, masses, counts, strict=True):
        value = s / m
        for _ in range(c):
            out.append(value + offsets[len(out)])
    return out


# ------------------------------------------------------------------ staying put


class ConstellationLayout:
    """A layered drawing that keeps its places across updates (see the module docstring).

    An update after the first costs about what changed, not the size of the graph: the
    drawing, the room taken in each column and the points of every line are kept between
    updates and only the stars and lines that are new, gone or pushed are placed again
    (a snapshot with the same stars and lines costs nothing). Not thread-safe; one per
    view.
    """

    def __init__(self, metrics: LayoutMetrics | None = None) -> None:
        self.metrics = metrics or LayoutMetrics()
        self._columns: dict[str, int] = {}
        self._heights: dict[str, float] = {}
        self._bends: dict[Edge, tuple[float, ...]] = {}
        self._positions: dict[str, Point] = {}
        self._routes: dict[Edge, tuple[Point, ...]] = {}
        self._edges: set[Edge] = set()
        """The lines of the drawing (lines to unknown stars, repeats and loops left out)."""
        self._rooms = _Rooms(self.metrics)
        """The room every star and bend of the drawing takes."""
        self._given: tuple[list[str], list[Edge]] = ([], [])
        """The stars and lines of the last update, as given."""
        self._graph: _Graph | None = None
        """The graph of the last update (grown when an edit appends stars and lines)."""
        self.last_crossings: int | None = None
        """Crossings of the last full drawing (None after an incremental update)."""

    def reset(self) -> None:
        """Forget every place: the next update draws the whole graph afresh."""
        self._columns = {}
        self._heights = {}
        self._bends = {}
        self._positions = {}
        self._routes = {}
        self._edges = set()
        self._rooms = _Rooms(self.metrics)
        self._given = ([], [])
        self._graph = None

    @property
    def placement(self) -> Placement:
        """The current drawing, without change sets."""
        return self._placement(frozenset(), frozenset(), frozenset(), full=False)

    def update(self, stars: Sequence[str], lines: Iterable[Edge]) -> Placement:
        lines = list(lines)
        ids = list(dict.fromkeys(stars))
        before = self._columns
        if not any(star in before for star in ids):
            return self._draw(ids, lines)
        self.last_crossings = None
        if (ids, lines) == self._given:  # a fresh snapshot of the same graph
            return self.placement
        given, self._given = self._given, (ids, lines)
        return self._extend(self._grown(given, ids, lines))

    def _draw(self, ids: list[str], lines: list[Edge]) -> Placement:
        removed = frozenset(self._columns)
        self.reset()
        drawing = layered_drawing(ids, lines, self.metrics)
        self._columns = dict(drawing.columns)
        self._heights = dict(drawing.heights)
        self._bends = dict(drawing.bends)
        self._graph = _Graph.of(ids, lines)
        self._edges = set(self._graph.named)
        self.last_crossings = drawing.crossings
        self._given = (ids, lines)
        m = self.metrics
        for star, column in self._columns.items():
            self._rooms.take(column, self._heights[star], m.node_height)
            self._positions[star] = (column * m.column_pitch, self._heights[star])
        for edge, bends in self._bends.items():
            self._route(edge, bends)
        return self._placement(frozenset(ids), removed, frozenset(), full=True)

    def _placement(
        self, added: frozenset[str], removed: frozenset[str], moved: frozenset[str], *, full: bool
    ) -> Placement:
        positions, routes = dict(self._positions), dict(self._routes)
        return Placement(positions, dict(self._columns), routes, added, removed, moved, full)

    def _route(self, edge: Edge, bends: tuple[float, ...]) -> None:
        """Take the room of a line's bends and note its points."""
        first = self._columns[edge[0]] + 1
        for i, y in enumerate(bends):
            self._rooms.take(first + i, y, self.metrics.bend_height)
        self._routes[edge] = self._points(edge, bends)

    def _points(self, edge: Edge, bends: tuple[float, ...]) -> tuple[Point, ...]:
        first, pitch = self._columns[edge[0]] + 1, self.metrics.column_pitch
        return tuple(((first + i) * pitch, y) for i, y in enumerate(bends))

    def _unroute(self, edge: Edge, first: int) -> None:
        """Give back the room of a line's bends (`first`: the column of its first bend)."""
        for i, y in enumerate(self._bends.pop(edge)):
            self._rooms.give_back(first + i, y, self.metrics.bend_height)
        self._routes.pop(edge, None)

    def _grown(
        self, given: tuple[list[str], list[Edge]], ids: list[str], lines: list[Edge]
    ) -> _Graph:
        """The graph of `ids` and `lines`: the last one grown when they only add to what
        was `given` last time (an edit that adds stars), else made afresh."""
        (old_ids, old_lines), graph = given, self._graph
        self._graph = None
        more_ids, more_lines = ids[len(old_ids) :], lines[len(old_lines) :]
        grows = ids[: len(old_ids)] == old_ids and lines[: len(old_lines)] == old_lines
        if graph is not None and grows and graph.extend(more_ids, more_lines):
            return graph
        return _Graph.of(ids, lines)

    def _extend(self, graph: _Graph) -> Placement:
        """Keep every star where it was unless a line now demands a later column; place
        what is new in free room. Only what changed is placed again: the stars that stay,
        and the lines between them, keep the room they had."""
        m = self.metrics
        self._graph = graph
        names, index = graph.ids, graph.index
        edges = graph.named
        wanted = set(edges)
        old_columns = self._columns
        # Columns: kept stars keep theirs unless a line now demands a later one. Only a
        # new star, the end of a new line, or a star downstream of one that moved can
        # change column; the others are not looked at.
        look = [star not in old_columns for star in names]
        for _, target in wanted - self._edges:
            look[index[target]] = True
        column: dict[str, int] = {}
        moved: set[str] = set()
        placing: list[str] = []  # moved and new stars, in topological order
        for v in graph.topological_order():
            star = names[v]
            old = old_columns.get(star)
            if old is not None and not look[v]:
                column[star] = old
                continue
            lowest = max((column[names[u]] + 1 for u in graph.pred[v]), default=0)
            if old is not None:
                column[star] = max(old, lowest)
            elif graph.pred[v]:
                column[star] = lowest
            else:  # a new source: just before its nearest known downstream star
                later = [old_columns[names[w]] for w in graph.succ[v] if names[w] in old_columns]
                column[star] = max(0, min(later) - 1) if later else 0
            if column[star] != old:
                if old is not None:
                    moved.add(star)
                placing.append(star)
                for w in graph.succ[v]:
                    look[w] = True
        # Give back the room of the stars that are gone or move, and of the lines not
        # kept as they were drawn (a line keeps its bends while both its stars stay).
        removed = frozenset(old_columns.keys() - index.keys())
        gone = removed | moved
        dropped = self._bends.keys() - wanted
        if gone:
            dropped |= {e for e in self._bends if e[0] in gone or e[1] in gone}
        for edge in dropped:
            self._unroute(edge, old_columns[edge[0]] + 1)
        heights = self._heights
        for star in gone:
            self._rooms.give_back(old_columns[star], heights[star], m.node_height)
            del self._positions[star]
        for star in removed:
            del heights[star]
        # Pushed right by a new line: the same height if there is room.
        for star in placing:
            if star in moved:
                heights[star] = self._rooms.nearest(column[star], heights[star], m.node_height)
        # New stars next to their neighbours (in the order of the lines).
        added = [star for star in placing if star not in old_columns]
        if added:
            fresh = set(added)
            neighbours: dict[str, list[str]] = {star: [] for star in added}
            for a, b in edges:
                if a in fresh:
                    neighbours[a].append(b)
                if b in fresh:
                    neighbours[b].append(a)
            for star in added:
                near = [heights[s] for s in neighbours[star] if s in heights]
                at = (
                    sum(near) / len(near)
                    if near
                    else self._rooms.below(column[star], m.node_height)
                )
                heights[star] = self._rooms.nearest(column[star], at, m.node_height)
        for star in placing:
            self._positions[star] = (column[star] * m.column_pitch, heights[star])
        self._columns, self._heights = column, heights
        # Lines that need bends and have none: new ones, and those of stars that moved.
        routing = wanted - self._edges
        if moved:
            routing |= {e for e in edges if e[0] in moved or e[1] in moved}
        for a, b in [e for e in edges if e in routing] if routing else ():
            if column[b] - column[a] > 1:
                ya, yb, span = heights[a], heights[b], column[b] - column[a]
                route = tuple(
                    self._rooms.nearest(column[a] + i, ya + (yb - ya) * i / span, m.bend_height)
                    for i in range(1, span)
                )
                self._bends[(a, b)] = route
                self._routes[(a, b)] = self._points((a, b), route)
        self._edges = wanted
        return self._placement(frozenset(added), removed, frozenset(moved), full=False)


class _Rooms:
    """What is taken in each column: sorted (top, bottom) spans of stars and bends."""

    def __init__(self, metrics: LayoutMetrics) -> None:
        self.metrics = metrics
        self._spans: dict[int, list[tuple[float, float]]] = {}
        self._unsorted: set[int] = set()

    def take(self, column: int, y: float, height: float) -> None:
        """Mark a span taken (sorted when the column is next asked about)."""
        self._spans.setdefault(column, []).append((y - height / 2, y + height / 2))
        self._unsorted.add(column)

    def give_back(self, column: int, y: float, height: float) -> None:
        """Free a span `take` marked (the same column, height and size)."""
        spans = self._column(column)
        span = (y - height / 2, y + height / 2)
        i = bisect.bisect_left(spans, span)
        if i < len(spans) and spans[i] == span:
            del spans[i]

    def _column(self, column: int) -> list[tuple[float, float]]:
        spans = self._spans.get(column, [])
        if column in self._unsorted:
            spans.sort()
            self._unsorted.discard(column)
        return spans

    def below(self, column: int, height: float) -> float:
        """A height under everything in the column (0 in an empty one)."""
        spans = self._column(column)
        if not spans:
            return 0.0
        return max(bottom for _, bottom in spans) + self.metrics.row_gap + height / 2

    def nearest(self, column: int, wanted: float, height: float) -> float:
        """Take the free height nearest to `wanted` for something `height` tall."""
        gap = (
            self.metrics.row_gap if height >= self.metrics.node_height else self.metrics.row_gap / 2
        )
        half = height / 2 + gap
        blocked: list[list[float]] = []  # centres that would overlap, merged
        for top, bottom in self._column(column):
            low, high = top - half, bottom + half
            if blocked and low < blocked[-1][1]:
                blocked[-1][1] = max(blocked[-1][1], high)
            else:
                blocked.append([low, high])
        at = wanted
        for low, high in blocked:
            if low < wanted < high:
                at = low if wanted - low <= high - wanted else high
                break
        self.take(column, at, height)
        return at
