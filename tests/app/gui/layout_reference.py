"""The layout's update after an edit, computed the slow way: everything placed again from
the previous placement (what `ConstellationLayout` did before it kept its rooms between
updates). The tests hold the incremental layout to give exactly these placements."""

from __future__ import annotations

from collections.abc import Sequence

from app.gui.constellation.layout import Edge, LayoutMetrics, Placement, _Graph, _Rooms


def placed_again(
    previous: Placement, stars: Sequence[str], lines: Sequence[Edge], metrics: LayoutMetrics
) -> Placement:
    m = metrics
    ids = list(dict.fromkeys(stars))
    old_columns = previous.columns
    old_heights = {s: y for s, (_, y) in previous.positions.items()}
    old_bends = {e: tuple(y for _, y in route) for e, route in previous.routes.items()}
    graph = _Graph.of(ids, lines)
    column: dict[str, int] = {}
    topological = graph.topological_order()
    for v in topological:
        star = graph.ids[v]
        lowest = max((column[graph.ids[u]] + 1 for u in graph.pred[v]), default=0)
        if star in old_columns:
            column[star] = max(old_columns[star], lowest)
        elif graph.pred[v]:
            column[star] = lowest
        else:
            later = [
                old_columns[graph.ids[w]] for w in graph.succ[v] if graph.ids[w] in old_columns
            ]
            column[star] = max(0, min(later) - 1) if later else 0
    edges = [(graph.ids[a], graph.ids[b]) for a, b in graph.edges]
    rooms = _Rooms(m)
    heights: dict[str, float] = {}
    bends: dict[Edge, tuple[float, ...]] = {}
    for star in ids:
        if star in old_columns and column[star] == old_columns[star]:
            heights[star] = old_heights[star]
            rooms.take(column[star], heights[star], m.node_height)
    for edge in edges:
        kept = old_bends.get(edge)
        if kept is not None and edge[0] in heights and edge[1] in heights:
            bends[edge] = kept
            for i, y in enumerate(kept):
                rooms.take(column[edge[0]] + 1 + i, y, m.bend_height)
    moved: set[str] = set()
    order = [graph.ids[v] for v in topological]
    for star in order:
        if star in old_columns and star not in heights:
            heights[star] = rooms.nearest(column[star], old_heights[star], m.node_height)
            moved.add(star)
    neighbours: dict[str, list[str]] = {s: [] for s in ids}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    added = [s for s in order if s not in old_columns]
    for star in added:
        near = [heights[s] for s in neighbours[star] if s in heights]
        wanted = sum(near) / len(near) if near else rooms.below(column[star], m.node_height)
        heights[star] = rooms.nearest(column[star], wanted, m.node_height)
    for a, b in edges:
        if (a, b) in bends or column[b] - column[a] <= 1:
            continue
        ya, yb, span = heights[a], heights[b], column[b] - column[a]
        bends[(a, b)] = tuple(
            rooms.nearest(column[a] + i, ya + (yb - ya) * i / span, m.bend_height)
            for i in range(1, span)
        )
    pitch = m.column_pitch
    return Placement(
        positions={s: (column[s] * pitch, heights[s]) for s in ids},
        columns={s: column[s] for s in ids},
        routes={
            e: tuple(((column[e[0]] + 1 + i) * pitch, y) for i, y in enumerate(route))
            for e, route in bends.items()
        },
        added=frozenset(added),
        removed=frozenset(set(old_columns).difference(ids)),
        moved=frozenset(moved),
        full=False,
    )
