"""Plan files: YAML constellations written by hand, loaded with errors that point at a line.

    constellation = load_plan(Path("plans/report.yaml"), known_tools={"shell.run", "fs.write"})

Every problem -- YAML syntax, a wrong field, a graph rule -- is raised as one
`PlanFileError` whose ``str`` is a single line in the usual compiler style::

    plans/x.yaml:12:5: star 'b' uses unknown tool 'shel.run'; known tools: fs.read, shell.run

The YAML dialect is the JSON-like core of YAML: only ``true``/``false`` are booleans
(so the key ``on:`` stays the string ``"on"``, and ``yes``/``no``/``off`` stay strings),
integers are decimal, ``0o17`` or ``0x1f`` (``010`` and ``12:30`` stay strings), dates stay
strings, duplicate keys are refused, and so are binary, set and other non-JSON types.
Files are limited to `MAX_PLAN_BYTES`, a plan to `MAX_PLAN_NODES` values (as written,
and once anchors/aliases are expanded: no "billion laughs"), and reading one to `budget`
seconds when a caller gives one (a server parsing plans for others does).
"""

from __future__ import annotations

import difflib
import re
import time
import types
import typing
from collections.abc import Collection, Hashable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agents.constellation.build import build_constellation
from agents.constellation.errors import ConstellationError, Location, UnknownStar, UnknownTool
from agents.constellation.model import Constellation, PlanSpec

MAX_PLAN_BYTES = 1024 * 1024
"""A plan file larger than this is refused before parsing."""

MAX_PLAN_NODES = 100_000
"""The most YAML values a plan may hold once every alias is expanded."""

MAX_PLAN_DEPTH = 64
"""The deepest a plan's values may nest; checked as the YAML is read, before reading it
could recurse deep enough to exhaust the stack (fatal in a worker thread)."""

_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_PREVIEW = 40


class PlanFileError(Exception):
    """A plan file that cannot be loaded, with where (`source`, `line`, `column`) and why.

    `line` and `column` are 1-based and None when unknown (an unreadable file);
    `location` is the path inside the plan (``("stars", 2, "after", 0)``) when known;
    `cause` is the underlying YAML error, `ValidationError` or `ConstellationError`.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        line: int | None = None,
        column: int | None = None,
        location: Location = (),
        cause: BaseException | None = None,
    ) -> None:
        message = " ".join(message.split())  # always one line
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.location = location
        self.cause = cause

    @property
    def position(self) -> str:
        """``source:line:column`` (or as much of it as is known)."""
        parts = [self.source]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        return f"{self.position}: {self.message}"


# --------------------------------------------------------------------------- YAML dialect


class _LocatedYAMLError(yaml.MarkedYAMLError):
    """A problem found while constructing values; its message needs no 'invalid YAML' prefix."""


class _OverBudget(Exception):
    """Reading the plan took longer than its budget."""


class PlanLoader(yaml.SafeLoader):
    """`SafeLoader` without YAML 1.1 surprises: see the module docstring. Values nested
    deeper than `MAX_PLAN_DEPTH` are refused as they are read; with a `deadline`
    (`time.monotonic()`), composing a node after it raises `_OverBudget`."""

    deadline: float | None = None
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _OverBudget
        if self._depth >= MAX_PLAN_DEPTH:
            raise _LocatedYAMLError(
                problem=f"plan is nested too deeply (more than {MAX_PLAN_DEPTH} levels)",
                problem_mark=self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first_seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first_seen.get(key)
            except TypeError:
                continue  # an unhashable key; the base class reports it
            if earlier is not None:
                raise _LocatedYAMLError(
                    problem=f"duplicate key {key!r} (first given at line "
                    f"{earlier.start_mark.line + 1}); keep one",
                    problem_mark=key_node.start_mark,
                )
            first_seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def _refuse(self, node: yaml.Node) -> Any:
        kind = node.tag.rsplit(":", 1)[-1]
        raise _LocatedYAMLError(
            problem=f"YAML type !!{kind} is not supported in plans; use plain strings, "
            "numbers, lists and mappings",
            problem_mark=node.start_mark,
        )


PlanLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in (_BOOL_TAG, _INT_TAG, _TIMESTAMP_TAG)
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
PlanLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# Decimal (no leading zero), 0o octal and 0x hex, as in YAML 1.2. `010`, `0644` and `12:30`
# stay strings instead of becoming 8, 420 and 750.
PlanLoader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0o[0-7_]+|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
for _kind in ("binary", "set", "omap", "pairs", "timestamp"):
    PlanLoader.add_constructor(f"tag:yaml.org,2002:{_kind}", PlanLoader._refuse)


class PlanDumper(yaml.SafeDumper):
    """Writes YAML that `PlanLoader` reads back unchanged, with `on:` unquoted."""


PlanDumper.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in PlanLoader.yaml_implicit_resolvers.items()
}


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


PlanDumper.add_representer(str, _represent_str)


# --------------------------------------------------------------------------- public API


def load_plan(path: Path, *, known_tools: Collection[str] | None = None) -> Constellation:
    """Read, validate and build the plan at `path`; raises `PlanFileError`."""
    source, text = _read(path)
    spec, root = _parse(text, source)
    return _build_checked(spec, root, source, known_tools)


def parse_plan(
    text: str,
    *,
    source: str = "<plan>",
    known_tools: Collection[str] | None = None,
    budget: float | None = None,
) -> Constellation:
    """Validate and build a plan given as YAML text; raises `PlanFileError`, also when
    reading the YAML takes longer than `budget` seconds."""
    spec, root = _parse(text, source, budget)
    return _build_checked(spec, root, source, known_tools)


def load_plan_spec(path: Path) -> PlanSpec:
    """Read a plan file into a `PlanSpec` (field checks only, no graph checks)."""
    source, text = _read(path)
    return _parse(text, source)[0]


def parse_plan_spec(text: str, *, source: str = "<plan>") -> PlanSpec:
    """Parse YAML text into a `PlanSpec` (field checks only, no graph checks)."""
    return _parse(text, source)[0]


def plan_to_yaml(spec: PlanSpec) -> str:
    """Write a plan as YAML that `parse_plan_spec` reads back to an equal `PlanSpec`."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for star in data["stars"]:
        selector = star.get("on")
        if isinstance(selector, dict) and list(selector) == ["name"]:
            star["on"] = selector["name"]  # the `on: laptop` shorthand
    return yaml.dump(
        data, Dumper=PlanDumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )


# --------------------------------------------------------------------------- reading


def _read(path: Path) -> tuple[str, str]:
    source = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanFileError(
            f"cannot read plan file: {exc.strerror or exc}", source=source, cause=exc
        ) from exc
    _check_size(len(raw), source)
    try:
        return source, raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise PlanFileError(
            "plan file is not UTF-8 text", source=source, line=line, column=column, cause=exc
        ) from exc


def _check_size(size: int, source: str) -> None:
    if size > MAX_PLAN_BYTES:
        raise PlanFileError(
            f"plan file is larger than {MAX_PLAN_BYTES // 1024} KiB; split it or move "
            "large data into files the stars read",
            source=source,
        )


def _parse(text: str, source: str, budget: float | None = None) -> tuple[PlanSpec, yaml.Node]:
    _check_size(len(text.encode("utf-8", errors="surrogatepass")), source)
    try:
        data, root = _load_yaml(text, source, budget)
        if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
            what = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            raise _error_at(
                root,
                f"a plan must be a mapping with 'name' and 'stars', not {what}",
                source=source,
            )
        try:
            return PlanSpec.model_validate(data), root
        except ValidationError as exc:
            raise _validation_error(exc, data, root, source) from exc
    except RecursionError as exc:
        raise PlanFileError(
            "plan is nested too deeply", source=source, line=1, column=1, cause=exc
        ) from None


def _load_yaml(text: str, source: str, budget: float | None = None) -> tuple[Any, yaml.Node]:
    try:
        loader = PlanLoader(text)  # checks that every character is printable
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or " ")
        raise PlanFileError(
            f"invalid YAML: control character U+{code:04X} is not allowed here; write it "
            "as an escape in a double-quoted string",
            source=source,
            line=before.count("\n") + 1,
            column=len(before) - (before.rfind("\n") + 1) + 1,
            cause=exc,
        ) from exc
    if budget is not None:
        loader.deadline = time.monotonic() + budget
    try:
        root = loader.get_single_node()
        if root is None:
            raise PlanFileError(
                "plan file is empty; it needs 'name' and 'stars'", source=source, line=1, column=1
            )
        _check_node_budget(root, source)
        return loader.construct_document(root), root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if isinstance(exc, _LocatedYAMLError):
            message = exc.problem or "invalid YAML"
        else:
            message = f"invalid YAML: {_yaml_problem(exc, mark)}"
        raise PlanFileError(
            message,
            source=source,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
            cause=exc,
        ) from exc
    except yaml.YAMLError as exc:
        raise PlanFileError(f"invalid YAML: {exc}", source=source, cause=exc) from exc
    except _OverBudget:
        mark = loader.get_mark()
        raise PlanFileError(
            f"reading the plan took longer than {budget:g}s (stopped at line "
            f"{mark.line + 1}); split it into smaller plans",
            source=source,
        ) from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError, mark: yaml.Mark | None) -> str:
    problem, context = exc.problem, exc.context
    if not problem or not context:
        return problem or context or "syntax error"
    if exc.context_mark is not None and exc.context_mark is not mark:
        context += f" at line {exc.context_mark.line + 1}"
    if problem.startswith("but "):  # "expected a single document ..., but found another"
        return f"{context}, {problem}"
    return f"{problem} ({context})"


def _check_node_budget(root: yaml.Node, source: str) -> None:
    """Refuse plans of more than `MAX_PLAN_NODES` values as written, recursive aliases,
    and plans that aliases blow up beyond `MAX_PLAN_NODES` (each said as what it is)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _error_at(node, "an alias refers to the value that contains it", source=source)
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_PLAN_NODES:  # not so as written (checked below): aliases did it
            raise _error_at(
                node,
                f"anchors and aliases expand the plan to more than {MAX_PLAN_NODES} values; "
                "write out what you need instead of repeating it through aliases",
                source=source,
            )
        sizes[key] = total
        return total

    if _distinct_nodes(root, MAX_PLAN_NODES + 1) > MAX_PLAN_NODES:  # big as written
        raise _error_at(
            root,
            f"plan has more than {MAX_PLAN_NODES} values; split it into smaller plans or "
            "move large data into files the stars read",
            source=source,
        )
    size(root)


def _distinct_nodes(root: yaml.Node, stop: int) -> int:
    """How many distinct nodes the tree holds (an alias counts once), up to `stop`."""
    seen: set[int] = set()
    pending = [root]
    while pending and len(seen) < stop:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                pending.extend((key, value))
    return len(seen)


# --------------------------------------------------------------------------- locating


def _error_at(
    node: yaml.Node,
    message: str,
    *,
    source: str,
    location: Location = (),
    cause: BaseException | None = None,
) -> PlanFileError:
    mark = node.start_mark
    return PlanFileError(
        message,
        source=source,
        line=mark.line + 1,
        column=mark.column + 1,
        location=location,
        cause=cause,
    )


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key node, value node) under `node` for one path part, or None."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return key_node, value_node
    elif (
        isinstance(node, yaml.SequenceNode)
        and isinstance(part, int)
        and -len(node.value) <= part < len(node.value)
    ):
        return node.value[part], node.value[part]
    return None


def _resolve(root: yaml.Node, loc: Sequence[str | int]) -> tuple[yaml.Node, yaml.Node, Location]:
    """Walk `loc` through the YAML tree as far as it goes.

    Returns (value node, key node, the parts that matched). Parts that match nothing
    -- pydantic's union member tags such as ``"All"`` or a field the plan lacks --
    are skipped, so the error points at the closest node that exists.
    """
    node = key = root
    matched: list[str | int] = []
    for part in loc:
        if part == "[key]":
            node = key
            continue
        found = _child(node, part)
        if found is not None:
            key, node = found
            matched.append(part)
    return node, key, tuple(matched)


# --------------------------------------------------------------------------- describing


def _describe(data: Any, path: Location) -> tuple[str, str]:
    """Split a plan path into a subject ("star 'b'", "line a->b") and a field ("on.labels")."""
    subject = ""
    rest = list(path)
    if len(rest) >= 2 and rest[0] in ("stars", "lines") and isinstance(rest[1], int):
        items = data.get(rest[0]) if isinstance(data, dict) else None
        item = items[rest[1]] if isinstance(items, list) and rest[1] < len(items) else None
        if rest[0] == "stars":
            star_id = item.get("id") if isinstance(item, dict) else None
            subject = f"star {star_id!r}" if isinstance(star_id, str) else f"stars[{rest[1]}]"
        else:
            ends = (item.get("from"), item.get("to")) if isinstance(item, dict) else (None, None)
            subject = (
                f"line {ends[0]}->{ends[1]}"
                if all(isinstance(end, str) for end in ends)
                else f"lines[{rest[1]}]"
            )
        rest = rest[2:]
    field = ""
    for part in rest:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else part)
    return subject, field


def _model_at(path: Location) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `path`, when there is just one."""
    current: Any = PlanSpec
    for part in path:
        current = _unwrap(current)
        if isinstance(part, int):
            continue  # `current` already names the element type
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (f for name, f in current.model_fields.items() if part in (name, f.alias)), None
        )
        if field is None:
            return None
        current = field.annotation
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Strip Optional, list[...] and tuple[...] down to the one model inside, if any."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(members[0]) if len(members) == 1 else None
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return _unwrap(args[0]) if len(args) == 1 else None
    return annotation


def _allowed_fields(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_PREVIEW else text[: _VALUE_PREVIEW - 3] + "..."


def _error_message(error: ErrorDetails, data: Any, matched: Location) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "missing":
        subject, field = _describe(data, matched)
        name = loc[-1]
        text = f"missing required field {name!r}"
        if field:
            text += f" in {field!r}"
    elif kind == "extra_forbidden":
        subject, field = _describe(data, matched[:-1])
        name = matched[-1] if matched else loc[-1]
        text = f"unknown field {name!r}"
        if field:
            text += f" in {field!r}"
        model = _model_at(matched[:-1])
        if model is not None:
            allowed = _allowed_fields(model)
            close = difflib.get_close_matches(str(name), allowed, n=1)
            if close:
                text += f"; did you mean {close[0]!r}?"
            text += f" (allowed: {', '.join(allowed)})"
    else:
        subject, field = _describe(data, matched)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            message = "expected a mapping"
            if matched and matched[-1] == "on":
                message = "expected a device name or a mapping such as {labels: [linux]}"
        if kind in ("list_type", "tuple_type"):
            message = "expected a list"
        text = f"{field}: {message}" if field else message
        if kind not in ("value_error", "assertion_error") and not isinstance(
            error["input"], dict | list
        ):
            text += f" (got {_preview(error['input'])})"
    return f"{subject}: {text}" if subject else text


# --------------------------------------------------------------------------- mapping errors

_WEAK_ERRORS = frozenset({"missing", "extra_forbidden"})


def _validation_error(
    exc: ValidationError, data: Any, root: yaml.Node, source: str
) -> PlanFileError:
    """The most useful error of a `ValidationError`, located in the YAML.

    A union (the `when:` predicate) reports one error per member it tried. Errors of one
    union are grouped, and the member that got furthest into the plan wins; among the
    remaining problems the first in the file is reported, with a count of the others.
    """
    groups: dict[Location, tuple[tuple[int, int], ErrorDetails, yaml.Node, Location]] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        node, key, matched = _resolve(root, loc)
        union_at = _union_site(root, error)
        group = union_at if union_at is not None else loc
        strength = (len(matched), 0 if error["type"] in _WEAK_ERRORS else 1)
        target = key if error["type"] == "extra_forbidden" else node
        best = groups.get(group)
        if best is None or strength > best[0]:
            groups[group] = (strength, error, target, matched)
    candidates = sorted(
        groups.values(), key=lambda g: (g[2].start_mark.line, g[2].start_mark.column)
    )
    _, error, node, matched = candidates[0]
    message = _error_message(error, data, matched)
    if len(candidates) > 1:
        others = len(candidates) - 1
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    return _error_at(node, message, source=source, location=matched, cause=exc)


def _union_site(root: yaml.Node, error: ErrorDetails) -> Location | None:
    """The path to the union an error comes from, or None for an error outside unions.

    Pydantic names the union member it tried (``"All"``, ``"function-after[...]"``) in
    the error's loc; such a part matches nothing in the YAML. A `missing` error's last
    part is the absent field itself, not a member tag.
    """
    loc = tuple(error["loc"])
    node = root
    for index, part in enumerate(loc):
        if part == "[key]":
            continue
        found = _child(node, part)
        if found is None:
            if index == len(loc) - 1 and error["type"] == "missing":
                return None
            return loc[:index]
        node = found[1]
    return None


def _constellation_error(
    exc: ConstellationError, spec: PlanSpec, root: yaml.Node, source: str
) -> PlanFileError:
    location: Location = exc.location
    if isinstance(exc, UnknownTool) and exc.item == "agent.do" and location[-1:] == ("tool",):
        location = (*location[:-1], "instruction")  # an instruction star has no `tool:`
    if isinstance(exc, UnknownStar) and len(location) == 2 and location[0] == "lines":
        index = location[1]
        if isinstance(index, int) and index < len(spec.lines):
            line = spec.lines[index]
            location = (*location, "from" if line.source == exc.item else "to")
    node, _, matched = _resolve(root, location)
    return _error_at(node, exc.message, source=source, location=matched, cause=exc)


def _build_checked(
    spec: PlanSpec, root: yaml.Node, source: str, known_tools: Collection[str] | None
) -> Constellation:
    try:
        return build_constellation(spec, known_tools=known_tools)
    except ConstellationError as exc:
        raise _constellation_error(exc, spec, root, source) from exc
