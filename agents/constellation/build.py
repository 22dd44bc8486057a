"""Turn a validated `PlanSpec` into a live `Constellation`."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from agents.constellation.errors import DuplicateStarId, Location
from agents.constellation.model import Constellation, Line, PlanSpec, Star, lines_of
from agents.constellation.validation import check_structure


def new_constellation_id() -> str:
    return uuid.uuid4().hex[:12]


def build_constellation(
    spec: PlanSpec,
    *,
    known_tools: Collection[str] | None = None,
    constellation_id: str | None = None,
) -> Constellation:
    """Check the plan's graph rules and return a fresh constellation (version 1, all pending).

    Raises a `ConstellationError` whose `location` points into the plan.
    """
    index_of: dict[str, int] = {}
    for index, star in enumerate(spec.stars):
        if star.id in index_of:
            raise DuplicateStarId(
                f"star id {star.id!r} is used twice (stars #{index_of[star.id]} and "
                f"#{index}); give each star its own id",
                item=star.id,
                location=("stars", index, "id"),
            )
        index_of[star.id] = index

    explicit_index = {line.key: i for i, line in enumerate(spec.lines)}

    def locate_star(star_id: str) -> Location:
        return ("stars", index_of[star_id]) if star_id in index_of else ()

    def locate_line(line: Line) -> Location:
        if line.key in explicit_index:
            return ("lines", explicit_index[line.key])
        star_index = index_of.get(line.target)
        if star_index is None:
            return ()
        after = spec.stars[star_index].after
        return ("stars", star_index, "after", after.index(line.source))

    lines = lines_of(spec)
    stars_by_id = {star.id: star for star in spec.stars}
    check_structure(
        stars_by_id,
        lines,
        known_tools=known_tools,
        locate_star=locate_star,
        locate_line=locate_line,
    )
    stars = {
        star.id: Star.model_validate({**star.model_dump(by_alias=True), "after": []})
        for star in spec.stars
    }
    return Constellation(
        id=constellation_id or new_constellation_id(),
        name=spec.name,
        description=spec.description,
        rationale=spec.rationale,
        stars=stars,
        lines=lines,
    )
