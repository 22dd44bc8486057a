"""Atomic edit batches: add, remove and update stars and lines, all or nothing.

`apply_batch` is pure: it never mutates the constellation it is given. It returns a
new constellation (version + 1) and the inverse batch that undoes it, or raises a
`ConstellationError` naming the offending edit, in which case nothing changed.
`ConstellationEditor` keeps the undo stack.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.constellation.errors import (
    BadReference,
    ConstellationError,
    DanglingLine,
    DuplicateLine,
    DuplicateStarId,
    Location,
    NothingToUndo,
    StarNotEditable,
    UnknownStar,
)
from agents.constellation.lines import settled
from agents.constellation.model import (
    Constellation,
    DeviceSelector,
    Line,
    Star,
    StarSpec,
    StarStatus,
)
from agents.constellation.references import parse_reference
from agents.constellation.validation import check_structure, dependency_graph


class UnknownLine(ConstellationError):
    """An edit removes a line that does not exist."""


class InvalidChange(ConstellationError):
    """An update would make a star invalid (e.g. both a tool and an instruction)."""


class AddStar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["add_star"] = "add_star"
    star: StarSpec


class RemoveStar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["remove_star"] = "remove_star"
    id: str


class StarChanges(BaseModel):
    """The fields an update may set; fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None
    instruction: str | None = None
    on: DeviceSelector | None = None
    priority: int | None = None
    retries: int | None = None
    timeout: float | None = None
    estimate: float | None = None
    allow_failure: bool | None = None


class UpdateStar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["update_star"] = "update_star"
    id: str
    changes: StarChanges


class AddLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["add_line"] = "add_line"
    line: Line


class RemoveLine(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    op: Literal["remove_line"] = "remove_line"
    source: str = Field(alias="from")
    target: str = Field(alias="to")


Edit = Annotated[
    AddStar | RemoveStar | UpdateStar | AddLine | RemoveLine, Field(discriminator="op")
]


class EditBatch(BaseModel):
    """Edits applied together or not at all; `rationale` says why (kept for explainability)."""

    model_config = ConfigDict(extra="forbid")
    edits: list[Edit] = Field(min_length=1)
    rationale: str = ""


@dataclass(slots=True)
class _Working:
    """The batch's scratch state: shallow copies, so the input constellation stays untouched."""

    stars: dict[str, Star]
    lines: dict[tuple[str, str], Line]
    star_origin: dict[str, int] = field(default_factory=dict)
    line_origin: dict[tuple[str, str], int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    removed_lines: dict[tuple[str, str], int] = field(default_factory=dict)
    inverse: list[list[Edit]] = field(default_factory=list)


def apply_batch(
    constellation: Constellation,
    batch: EditBatch,
    *,
    known_tools: Collection[str] | None = None,
) -> tuple[Constellation, EditBatch]:
    """Validate and apply `batch`; return (new constellation, inverse batch).

    Raises `ConstellationError` (with `edit_index` set) and changes nothing when any
    edit is invalid or the result would break a graph invariant.
    """
    work = _Working(
        stars=dict(constellation.stars), lines={ln.key: ln for ln in constellation.lines}
    )
    for index, edit in enumerate(batch.edits):
        try:
            work.inverse.append(_apply_one(work, edit, index))
        except ConstellationError as exc:
            raise exc.at_edit(index) from None

    _check_ends(work)

    def locate_star(star_id: str) -> Location:
        index = work.star_origin.get(star_id)
        return ("edits", index) if index is not None else ("stars", star_id)

    def locate_line(line: Line) -> Location:
        index = work.line_origin.get(line.key)
        return ("edits", index) if index is not None else ("lines", line.label())

    lines = list(work.lines.values())
    try:
        check_structure(
            work.stars,
            lines,
            known_tools=known_tools,
            locate_star=locate_star,
            locate_line=locate_line,
        )
    except ConstellationError as exc:
        if exc.location[:1] == ("edits",) and isinstance(exc.location[1], int):
            exc.edit_index = exc.location[1]
        elif isinstance(exc, BadReference) and exc.location[:1] == ("stars",):
            # A star the batch did not touch lost the upstream it refers to.
            exc.edit_index = _cut_reference(constellation, work, str(exc.location[1]), exc.item)
        raise

    updated = constellation.model_copy(
        update={"stars": work.stars, "lines": lines, "version": constellation.version + 1}
    )
    inverse_edits = [edit for group in reversed(work.inverse) for edit in group]
    return updated, EditBatch(edits=inverse_edits, rationale=f"undo: {batch.rationale}".strip())


def _editable(work: _Working, star_id: str, action: str) -> Star:
    star = work.stars.get(star_id)
    if star is None:
        raise UnknownStar(f"cannot {action} star {star_id!r}: no such star", item=star_id)
    if star.status.started:
        raise StarNotEditable(
            f"cannot {action} star {star_id!r}: it is {star.status}; only stars that have "
            "not started may change",
            item=star_id,
        )
    return star


def _apply_one(work: _Working, edit: Edit, index: int) -> list[Edit]:
    if isinstance(edit, AddStar):
        spec = edit.star
        if spec.id in work.stars:
            raise DuplicateStarId(
                f"cannot add star {spec.id!r}: a star with that id exists", item=spec.id
            )
        work.stars[spec.id] = Star.model_validate({**spec.model_dump(by_alias=True), "after": []})
        work.star_origin[spec.id] = index
        work.removed.pop(spec.id, None)
        inverse: list[Edit] = []
        for upstream in spec.after:
            line = Line(source=upstream, target=spec.id)
            _add_line(work, line, index)
            inverse.append(RemoveLine(source=upstream, target=spec.id))
        return [*inverse, RemoveStar(id=spec.id)]

    if isinstance(edit, RemoveStar):
        star = _editable(work, edit.id, "remove")
        del work.stars[edit.id]
        work.removed[edit.id] = index
        return [AddStar(star=star.spec())]

    if isinstance(edit, UpdateStar):
        star = _editable(work, edit.id, "update")
        changes = edit.changes.model_dump(exclude_unset=True, by_alias=True)
        current = star.spec().model_dump(by_alias=True)
        try:
            spec = StarSpec.model_validate({**current, **changes})
        except ValidationError as exc:
            raise InvalidChange(
                f"update of star {edit.id!r} is invalid: {_first_error(exc)}", item=edit.id
            ) from None
        runtime = {key: getattr(spec, key) for key in changes}
        work.stars[edit.id] = star.model_copy(update=runtime)
        work.star_origin.setdefault(edit.id, index)
        previous = {key: current[key] for key in changes}
        return [UpdateStar(id=edit.id, changes=StarChanges.model_validate(previous))]

    if isinstance(edit, AddLine):
        _add_line(work, edit.line, index)
        return [RemoveLine(source=edit.line.source, target=edit.line.target)]

    # RemoveLine
    key = (edit.source, edit.target)
    removed_line = work.lines.get(key)
    if removed_line is None:
        raise UnknownLine(
            f"cannot remove line {edit.source}->{edit.target}: no such line",
            item=f"{edit.source}->{edit.target}",
        )
    target = work.stars.get(edit.target)
    if (
        target is not None
        and target.status is not StarStatus.PENDING
        and not (
            target.status is StarStatus.READY and settled(removed_line, work.stars.get(edit.source))
        )
    ):
        raise StarNotEditable(
            f"cannot remove line {removed_line.label()}: star {edit.target!r} is {target.status}",
            item=edit.target,
        )
    del work.lines[key]
    work.line_origin.pop(key, None)
    work.removed_lines[key] = index
    return [AddLine(line=removed_line)]


def _add_line(work: _Working, line: Line, index: int) -> None:
    if line.key in work.lines:
        raise DuplicateLine(
            f"cannot add line {line.label()}: {line.source!r} and {line.target!r} are "
            "already joined",
            item=line.label(),
        )
    target = work.stars.get(line.target)
    if (
        target is not None
        and target.status is not StarStatus.PENDING
        and not (target.status is StarStatus.READY and settled(line, work.stars.get(line.source)))
    ):
        raise StarNotEditable(
            f"cannot add line {line.label()}: star {line.target!r} is {target.status} and can "
            "no longer gain dependencies",
            item=line.target,
        )
    work.lines[line.key] = line
    work.line_origin[line.key] = index


def _check_ends(work: _Working) -> None:
    for line in work.lines.values():
        for end in (line.source, line.target):
            if end in work.stars:
                continue
            if end in work.removed:
                raise DanglingLine(
                    f"removing star {end!r} leaves line {line.label()} dangling; remove the "
                    "line in the same batch",
                    item=line.label(),
                    location=("edits", work.removed[end]),
                    edit_index=work.removed[end],
                )
            index = work.line_origin.get(line.key)
            raise UnknownStar(
                f"line {line.label()} names star {end!r}, which does not exist",
                item=end,
                location=("edits", index) if index is not None else (),
                edit_index=index,
            )


def _cut_reference(before: Constellation, work: _Working, star_id: str, text: str) -> int | None:
    """The edit that cut `star_id` off the star its reference `text` names: the last edit
    removing that star, or a line on a path from it to `star_id` (before the batch)."""
    upstream = parse_reference(text).star
    if upstream in work.removed:
        return work.removed[upstream]
    graph = dependency_graph(before.stars, before.lines)
    if upstream not in graph or star_id not in graph:
        return None
    below = nx.descendants(graph, upstream) | {upstream}
    above = nx.ancestors(graph, star_id) | {star_id}
    cuts = [
        index
        for key, index in work.removed_lines.items()
        if key not in work.lines and key[0] in below and key[1] in above
    ]
    return max(cuts, default=None)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


class ConstellationEditor:
    """Applies batches to one constellation and keeps the inverses for undo."""

    def __init__(
        self, constellation: Constellation, *, known_tools: Collection[str] | None = None
    ) -> None:
        self.constellation = constellation
        self.known_tools = known_tools
        self._undo: list[EditBatch] = []

    def apply(self, batch: EditBatch) -> Constellation:
        updated, inverse = apply_batch(self.constellation, batch, known_tools=self.known_tools)
        self.constellation = updated
        self._undo.append(inverse)
        return updated

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> tuple[Constellation, EditBatch]:
        """Undo the last applied batch (as a new version). Fails if its stars have started."""
        if not self._undo:
            raise NothingToUndo("there is no edit batch to undo", item="undo")
        inverse = self._undo[-1]
        updated, _ = apply_batch(self.constellation, inverse, known_tools=self.known_tools)
        self._undo.pop()
        self.constellation = updated
        return updated, inverse
