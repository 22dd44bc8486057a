"""Structural checks shared by plan loading and edit batches.

The graph rules: unique star ids, one line per pair of stars, every line's ends
exist, no cycles, every `${star.output...}` reference names an upstream star (and in a
shell command sits where it can be inserted as data), and (when a tool catalogue is
given) every tool is known.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import networkx as nx

from agents.constellation.errors import (
    BadReference,
    CycleDetected,
    DanglingLine,
    DuplicateLine,
    Location,
    UnknownStar,
    UnknownTool,
)
from agents.constellation.model import Line, StarSpec
from agents.constellation.references import (
    REFERENCE_PATTERN,
    ReferenceSyntaxError,
    iter_references,
    parse_reference,
)
from agents.constellation.shell_words import SHELL_ARGS, UnsafeShellReference, reference_contexts

StarLocator = Callable[[str], Location]
LineLocator = Callable[[Line], Location]


def _no_location(_: object) -> Location:
    return ()


def dependency_graph(star_ids: Iterable[str], lines: Iterable[Line]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(star_ids)
    graph.add_edges_from(line.key for line in lines)
    return graph


def check_structure(
    stars: Mapping[str, StarSpec],
    lines: Sequence[Line],
    *,
    known_tools: Collection[str] | None = None,
    locate_star: StarLocator = _no_location,
    locate_line: LineLocator = _no_location,
    dangling_error: type[UnknownStar] | type[DanglingLine] = UnknownStar,
) -> nx.DiGraph:
    """Raise the first `ConstellationError` found; return the dependency graph if none."""
    seen: set[tuple[str, str]] = set()
    for line in lines:
        for end in (line.source, line.target):
            if end not in stars:
                raise dangling_error(
                    f"line {line.label()} names star {end!r}, which does not exist; "
                    "add the star or remove the line",
                    item=end,
                    location=locate_line(line),
                )
        if line.key in seen:
            raise DuplicateLine(
                f"two lines join {line.source!r} to {line.target!r}; keep one",
                item=line.label(),
                location=locate_line(line),
            )
        seen.add(line.key)

    graph = dependency_graph(stars, lines)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([str(edge[0]) for edge in cycle] + [str(cycle[0][0])])
        closing = next(
            (line for line in reversed(lines) if line.key in {tuple(e[:2]) for e in cycle}),
            None,
        )
        raise CycleDetected(
            f"dependencies form a cycle {path}; remove one of these lines",
            item=path,
            location=locate_line(closing) if closing else (),
        )

    if known_tools is not None:
        for star in stars.values():
            tool = star.effective_tool
            if tool not in known_tools:
                raise UnknownTool(
                    f"star {star.id!r} uses unknown tool {tool!r}; "
                    f"known tools: {', '.join(sorted(known_tools))}",
                    item=tool,
                    location=(*locate_star(star.id), "tool"),
                )

    check_references(stars, graph, locate_star=locate_star)
    return graph


def _reference_sites(star: StarSpec) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(where in the star, ${...} text) of every reference the star's tool will get: in
    `args`, and in `instruction` (agent.do's goal) where it has one."""
    if star.instruction is not None:
        yield from iter_references(star.instruction, ("instruction",))
    yield from iter_references(star.args, ("args",))


def check_references(
    stars: Mapping[str, StarSpec],
    graph: nx.DiGraph,
    *,
    locate_star: StarLocator = _no_location,
) -> None:
    """Every reference must be well formed and name a star upstream of the one using it."""
    for star in stars.values():
        upstream: set[str] | None = None
        for arg_location, text in _reference_sites(star):
            location = (*locate_star(star.id), *arg_location)
            try:
                reference = parse_reference(text)
            except ReferenceSyntaxError as exc:
                raise BadReference(str(exc), item=text, location=location) from None
            if reference.star not in stars:
                raise BadReference(
                    f"star {star.id!r} refers to {text}, but there is no star {reference.star!r}",
                    item=text,
                    location=location,
                )
            if reference.star == star.id:
                raise BadReference(
                    f"star {star.id!r} refers to {text}, its own output, which does not exist "
                    "while it runs; refer only to stars it runs after",
                    item=text,
                    location=location,
                )
            if upstream is None:
                upstream = nx.ancestors(graph, star.id)
            if reference.star not in upstream:
                raise BadReference(
                    f"star {star.id!r} refers to {text}, but {reference.star!r} is not "
                    f"upstream of it; add a line from {reference.star!r} (e.g. "
                    f"after: [{reference.star}])",
                    item=text,
                    location=location,
                )
        _check_shell_references(star, locate_star)


def _check_shell_references(star: StarSpec, locate_star: StarLocator) -> None:
    """References in a shell command must sit where they can be inserted as quoted words."""
    for name in SHELL_ARGS.get(star.effective_tool, ()):
        command = star.effective_args.get(name)
        if not isinstance(command, str) or "${" not in command:
            continue
        try:
            reference_contexts(command, REFERENCE_PATTERN)
        except UnsafeShellReference as exc:
            raise BadReference(
                f"star {star.id!r}: {exc}",
                item=exc.reference,
                location=(*locate_star(star.id), "args", name),
            ) from None
