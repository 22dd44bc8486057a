"""Which tools' argument schemas the planner's grammar can give: `unenforceable`.

The generation schema (`agents.planner.schema.args_schema`) writes every required argument
as a bounded string, number, boolean or list of those, and leaves optional numbers, flags
and objects at their defaults. A tool whose schema needs more (a required object, a list
of objects, an argument only a `$ref` describes) could never be called correctly from a
generated plan, so the planner leaves it out and says why, rather than offer it and fail
every star. Tools come from devices' `hello`, including MCP servers' tools
(`mcp.<server>.<tool>`), whose schemas are whatever their servers wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["unenforceable"]

_SCALARS = frozenset({"string", "integer", "number", "boolean"})


def unenforceable(schema: Any) -> str | None:
    """Why the grammar cannot give arguments for `schema` (one line), or None if it can."""
    if not isinstance(schema, Mapping):
        return "its argument schema is not a JSON object"
    if schema.get("type", "object") != "object":
        return f"its arguments are of type {schema.get('type')!r}, not an object"
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        return "its schema's properties are not a JSON object"
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        return "its schema's required list is not a list of names"
    for name in required:
        problem = _argument_problem(properties.get(name))
        if problem is not None:
            return f"required argument {name!r} {problem}"
    return None


def _argument_problem(schema: Any) -> str | None:
    if schema is None:
        return "has no schema in properties"
    if not isinstance(schema, Mapping):
        return "has a schema that is not a JSON object"
    if "$ref" in schema:
        return "is described only by a reference ($ref), which the grammar does not follow"
    kind = _kind(schema)
    if kind is None or kind in _SCALARS:
        return None
    if kind == "array":
        items = schema.get("items", {})
        if isinstance(items, Mapping) and ("$ref" in items or _kind(items) in ("object", "array")):
            return "is a list of objects or lists, which the grammar cannot give"
        return None
    if kind == "object":
        return "is an object, which the grammar cannot give"
    return f"has type {kind!r}, which the grammar cannot give"


def _kind(schema: Mapping[str, Any]) -> str | None:
    """The schema's JSON type as `args_schema` reads it (the first non-null of `anyOf`)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        named = [k for k in kind if k != "null"]
        return str(named[0]) if named else None
    for option in schema.get("anyOf", []):
        if isinstance(option, Mapping) and option.get("type") not in (None, "null"):
            return str(option["type"])
        if isinstance(option, Mapping) and "$ref" in option:
            return "object"
    return None
