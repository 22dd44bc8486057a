"""JSON schema → llama.cpp grammar, refusing what the converter would silently ignore.

llama-cpp-python's converter (`json_schema_to_gbnf`) enforces a subset of JSON Schema and
quietly drops the rest (`uniqueItems`, `minimum`, `not`, ...): a schema using them would
constrain less than it says. `schema_to_grammar` checks the schema against the keywords the
converter enforces, converts it, and raises `SchemaNotConvertible` naming the first problem.
It never falls back to a generic JSON grammar.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from agents.models.errors import SchemaNotConvertible

ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "minLength",
        "maxLength",
        "format",
    }
)
"""Keywords the converter turns into grammar rules."""

ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated"}
)
"""Keywords that constrain nothing, so ignoring them loses nothing."""

FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4"})
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


def check_schema(schema: Any) -> None:
    """Raise `SchemaNotConvertible` if the grammar could not enforce all of `schema`."""
    for path, node in _subschemas(schema, "#"):
        if not isinstance(node, dict):
            if isinstance(node, bool) and path != "#":
                continue  # `true` / `false` subschemas (additionalProperties: false)
            raise SchemaNotConvertible(path, f"a schema must be an object, not {node!r}")
        unknown = sorted(set(node) - ENFORCED - ANNOTATIONS)
        if unknown:
            raise SchemaNotConvertible(
                path,
                f"keyword {unknown[0]!r} cannot be enforced by a llama.cpp grammar; remove it "
                "or express it with enum/pattern/minItems/maxItems",
            )
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
        for item in kinds:
            if item not in TYPES:
                raise SchemaNotConvertible(path, f"unknown type {item!r}")
        if "format" in node and node["format"] not in FORMATS:
            raise SchemaNotConvertible(path, f"format {node['format']!r} is not supported")
        if "pattern" in node and ("minLength" in node or "maxLength" in node):
            raise SchemaNotConvertible(
                path, "pattern with minLength/maxLength: the grammar keeps only the pattern"
            )
        if "format" in node and ("minLength" in node or "maxLength" in node or "pattern" in node):
            raise SchemaNotConvertible(
                path, "format together with a length or pattern: the grammar keeps only one"
            )
        if isinstance(kind, list) and len(node.keys() & {"properties", "items", "enum"}):
            raise SchemaNotConvertible(
                path, "a list of types together with properties/items/enum is not enforced"
            )
        if ("anyOf" in node or "oneOf" in node) and len(node.keys() - ANNOTATIONS) > 1:
            raise SchemaNotConvertible(
                path, "anyOf/oneOf beside other keywords: the grammar keeps only the union"
            )
        if "oneOf" in node:
            # The grammar lets any branch match; exclusivity is not enforced.
            raise SchemaNotConvertible(path, "oneOf cannot be enforced exactly; use anyOf")


def schema_to_grammar(schema: dict[str, Any], *, exclude: str = "") -> str:
    """The GBNF grammar text that constrains generation to `schema`.

    `exclude` lists characters no string may contain literally (e.g. "$" to rule out
    `${...}` references; a `\\u` escape could still spell one, so validate the output).
    """
    if any(not ch.isprintable() or ch in '\\]^-"' for ch in exclude):
        raise ValueError(f'cannot exclude {exclude!r}: only printable characters but \\ ] ^ - "')
    check_schema(schema)
    from llama_cpp.llama_grammar import json_schema_to_gbnf  # heavy: imported on use

    try:
        grammar: str = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises assertions, KeyErrors, ValueErrors
        raise SchemaNotConvertible("#", f"conversion failed: {type(exc).__name__}: {exc}") from exc
    if not grammar.strip():
        raise SchemaNotConvertible("#", "conversion produced an empty grammar")
    return _strict_json_chars(grammar, exclude)


_LOOSE_CHAR = 'char ::= [^"\\\\] |'


def _strict_json_chars(grammar: str, exclude: str) -> str:
    """The converter's string character admits raw control characters (a newline, a tab),
    which JSON forbids inside strings; allow them only escaped, as JSON does, and refuse
    the `exclude` characters."""
    strict = 'char ::= [^"\\\\' + exclude + "\\x7F\\x00-\\x1F] |"
    lines = grammar.splitlines()
    return "\n".join(
        strict + line[len(_LOOSE_CHAR) :] if line.startswith(_LOOSE_CHAR) else line
        for line in lines
    )


_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties")


def _subschemas(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, node
    if not isinstance(node, dict):
        return
    for key in _SCHEMA_MAPS:
        children = node.get(key)
        if isinstance(children, dict):
            for name, child in children.items():
                yield from _subschemas(child, f"{path}/{key}/{name}")
    for key in _SCHEMA_LISTS:
        children = node.get(key)
        if isinstance(children, list):
            for index, child in enumerate(children):
                yield from _subschemas(child, f"{path}/{key}/{index}")
    for key in _SCHEMA_VALUES:
        if key in node and not isinstance(node[key], bool):
            yield from _subschemas(node[key], f"{path}/{key}")
