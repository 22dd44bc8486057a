"""Checks of generated plans and edits, and their conversion to constellation objects.

The grammar guarantees shape; these checks cover the rest: the plan model's own rules,
the graph rules (`build_constellation`), each star's arguments against its tool's real
schema, and that some connected device can run each star. Every problem is reported as
one line that names the star and says what is wrong, for the repair prompt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
from pydantic import ValidationError

from agents.constellation import (
    Constellation,
    ConstellationError,
    PlanSpec,
    StarSpec,
    build_constellation,
)
from agents.constellation.model import DeviceSelector
from agents.constellation.references import (
    ReferenceSyntaxError,
    iter_references,
    parse_reference,
)
from agents.orchestrator import device_mismatch
from agents.planner.context import ANY_DEVICE, PlanningContext


class InvalidOutput(ValueError):
    """A model output that cannot be used; the message says why, for the repair prompt."""


def parse_json(text: str, *, finish_reason: str | None = None) -> dict[str, Any]:
    """The output as a JSON object, or `InvalidOutput` (a cut-off output says so)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        if finish_reason == "length":
            raise InvalidOutput(
                "the output was cut off at the token limit; use fewer stars and shorter text"
            ) from None
        raise InvalidOutput(f"the output is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidOutput(f"the output must be a JSON object, not {type(data).__name__}")
    return data


def star_spec(raw: Any, context: PlanningContext, *, earlier: Sequence[str] = ()) -> StarSpec:
    """One generated star as a `StarSpec`; `on: any` means no device selector.

    A `${sK.output...}` reference to one of the `earlier` stars implies the dependency,
    so it is added to `after` when the model left it out.
    """
    if not isinstance(raw, Mapping):
        raise InvalidOutput(f"a star must be an object, not {raw!r:.60}")
    data = dict(raw)
    star = str(data.get("id", "?"))
    on = data.pop("on", ANY_DEVICE)
    if on not in (None, ANY_DEVICE):
        if not isinstance(on, str) or context.device(on) is None:
            raise InvalidOutput(
                f"star {star}: device {on!r} is not connected; use one of "
                f"{', '.join(context.device_names)} or 'any'"
            )
        data["on"] = DeviceSelector(name=on)
    try:
        spec = StarSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidOutput(f"star {star}: {_first_problem(exc)}") from None
    implied = [
        upstream
        for upstream in _referenced(spec)
        if upstream in earlier and upstream not in spec.after
    ]
    if implied:
        spec = spec.model_copy(update={"after": [*spec.after, *implied]})
    check_star(spec, context)
    return spec


def _referenced(spec: StarSpec) -> list[str]:
    """The stars a star's arguments refer to, in order of first mention."""
    found: dict[str, None] = {}
    for _, text in iter_references(spec.effective_args, ("args",)):
        try:
            found[parse_reference(text).star] = None
        except ReferenceSyntaxError:
            continue  # reported by the graph checks
    return list(found)


def check_star(spec: StarSpec, context: PlanningContext) -> None:
    """Arguments valid for the tool's schema; some connected device can run the star."""
    tool = spec.effective_tool
    view = context.tools.get(tool)
    if view is None:
        raise InvalidOutput(
            f"star {spec.id}: no connected device offers tool {tool!r}; use one of "
            f"{', '.join(context.tool_names)}"
        )
    problems = [
        error
        for error in jsonschema.Draft202012Validator(dict(view.schema)).iter_errors(
            spec.effective_args
        )
        if not _is_reference(error.instance)
    ]
    if problems:
        error = min(problems, key=lambda e: len(e.absolute_path))
        where = ".".join(str(part) for part in error.absolute_path) or "args"
        raise InvalidOutput(f"star {spec.id}: argument {where}: {error.message}")
    reasons = [
        f"{device.name} {why}"
        for device in context.devices
        if (why := device_mismatch(device, tool, spec.on)) is not None
    ]
    if len(reasons) == len(context.devices):
        raise InvalidOutput(
            f"star {spec.id}: no connected device can run it ({'; '.join(reasons)})"
        )


def plan_from_output(
    data: Mapping[str, Any], context: PlanningContext, *, name: str
) -> tuple[PlanSpec, Constellation]:
    """A generated plan as a spec and a fresh constellation, or `InvalidOutput`."""
    raw_stars = data.get("stars")
    if not isinstance(raw_stars, list) or not raw_stars:
        raise InvalidOutput("the plan needs a non-empty list 'stars'")
    stars: list[StarSpec] = []
    for raw in raw_stars:
        stars.append(star_spec(raw, context, earlier=[star.id for star in stars]))
    rationale = str(data.get("rationale") or "")
    try:
        spec = PlanSpec(name=name, rationale=rationale, stars=stars)
    except ValidationError as exc:
        raise InvalidOutput(_first_problem(exc)) from None
    try:
        constellation = build_constellation(spec, known_tools=context.tools)
    except ConstellationError as exc:
        raise InvalidOutput(str(exc)) from None
    return spec, constellation


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
