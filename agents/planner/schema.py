"""Generation schemas: JSON schemas under which a model's plan is well-formed by construction.

llama.cpp turns these into grammars (`agents.models.grammar`), so a generated plan always
parses, and by construction:

- star ids are `s1`, `s2`, ... in order, and star k may only depend on stars before it
  (no cycles, no dangling lines);
- each star's tool is one a connected device offers, and its `on` names a device that
  offers that tool (or `any`);
- each star's `args` has the tool's required arguments, as bounded strings, numbers,
  booleans or lists;
- every string and list is bounded, so a plan cannot run past the token budget unseen.

What a grammar cannot say (argument formats, references to upstream outputs) is checked
after generation by `agents.planner.validate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agents.planner.context import ANY_DEVICE, PlanningContext, ToolView

MAX_STARS = 8
MAX_NEW_STARS = 2
TITLE_CHARS = 48
RATIONALE_CHARS = 160
ARG_CHARS = 160
LONG_ARG_CHARS = 320
LONG_ARGS = frozenset({"code", "content", "cmd"})
LIST_ITEMS = 8


def star_id(index: int, prefix: str = "s") -> str:
    """The id of the `index`-th (0-based) generated star: s1, s2, ..."""
    return f"{prefix}{index + 1}"


def plan_schema(context: PlanningContext, *, max_stars: int = MAX_STARS) -> dict[str, Any]:
    """The schema of a new plan: a rationale and 1..max_stars stars."""
    if not context.tools:
        raise ValueError("no connected device offers a tool the planner knows")
    ids = [star_id(i) for i in range(max_stars)]
    defs = shared_defs(context)
    for k in range(max_stars):
        defs[ids[k]] = _star_schema(context, ids[k], upstream=ids[:k])
    return {
        "type": "object",
        "properties": {
            "rationale": {"$ref": "#/$defs/why"},
            "stars": _star_list(ids, minimum=1),
        },
        "required": ["rationale", "stars"],
        "additionalProperties": False,
        "$defs": defs,
    }


def edit_schema(
    context: PlanningContext,
    *,
    existing: Sequence[str],
    removable: Sequence[str],
    id_prefix: str,
    max_new: int = MAX_NEW_STARS,
) -> dict[str, Any]:
    """The schema of a decision about a running plan: continue, finish, fail, or edit.

    `{"decision": {"action": ..., "rationale": ...}}`: the action comes first, and only
    an edit has more (`add`, and `remove` when some star has not started), so the common
    answers are short. New stars get ids `<id_prefix>1..` and may depend on any existing
    star and on earlier new ones; only `removable` (not yet started) stars may be removed.
    """
    new_ids = [star_id(i, id_prefix) for i in range(max_new)]
    defs = shared_defs(context)
    for k in range(max_new):
        defs[new_ids[k]] = _star_schema(context, new_ids[k], upstream=[*existing, *new_ids[:k]])
    alternatives: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"action": {"const": action}, "rationale": {"$ref": "#/$defs/why"}},
            "required": ["action", "rationale"],
            "additionalProperties": False,
        }
        for action in ("continue", "finish", "fail")
    ]
    edit: dict[str, Any] = {
        "action": {"const": "edit"},
        "rationale": {"$ref": "#/$defs/why"},
        "add": _star_list(new_ids, minimum=0),
    }
    if removable:
        edit["remove"] = {
            "type": "array",
            "items": {"enum": list(removable)},
            "maxItems": len(removable),
        }
    alternatives.append(
        {
            "type": "object",
            "properties": edit,
            "required": list(edit),
            "additionalProperties": False,
        }
    )
    return {
        "type": "object",
        "properties": {"decision": {"anyOf": alternatives}},
        "required": ["decision"],
        "additionalProperties": False,
        "$defs": defs,
    }


def _star_list(ids: Sequence[str], *, minimum: int) -> dict[str, Any]:
    # One fixed-length variant per plan size keeps ids in order: s1, s2, ...
    variants: list[dict[str, Any]] = [
        {
            "type": "array",
            "prefixItems": [{"$ref": f"#/$defs/{i}"} for i in ids[:n]],
            "minItems": n,
            "maxItems": n,
        }
        for n in range(max(minimum, 1), len(ids) + 1)
    ]
    if minimum == 0:
        variants.insert(0, {"type": "array", "maxItems": 0})
    return {"anyOf": variants}


def shared_defs(context: PlanningContext) -> dict[str, Any]:
    """Definitions every star refers to, so the grammar holds each rule once."""
    defs: dict[str, Any] = {
        "why": _text(RATIONALE_CHARS),
        "title": _text(TITLE_CHARS),
        "arg": _text(ARG_CHARS),
        "long-arg": _text(LONG_ARG_CHARS),
    }
    for tool in context.tools.values():
        defs[_args_def(tool.name)] = args_schema(tool)
    return defs


def _args_def(tool: str) -> str:
    return "args-" + tool.replace(".", "-")


def _star_schema(
    context: PlanningContext, this_id: str, *, upstream: Sequence[str]
) -> dict[str, Any]:
    """One star: an alternative per tool, so `on` and `args` follow the tool chosen."""
    alternatives = []
    for tool in context.tools.values():
        devices = context.devices_with(tool.name)
        if not devices:
            continue
        properties: dict[str, Any] = {
            "id": {"const": this_id},
            "title": {"$ref": "#/$defs/title"},
            "tool": {"const": tool.name},
            "on": {"enum": [*devices, ANY_DEVICE]},
            "args": {"$ref": f"#/$defs/{_args_def(tool.name)}"},
        }
        required = ["id", "title", "tool", "on", "args"]
        if upstream:
            properties["after"] = {
                "type": "array",
                "items": {"enum": list(upstream)},
                "maxItems": min(len(upstream), LIST_ITEMS),
            }
            required.append("after")
        alternatives.append(
            {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
        )
    return {"anyOf": alternatives}


def args_schema(tool: ToolView) -> dict[str, Any]:
    """The tool's arguments a plan may set, as bounded, grammar-enforceable values.

    Required arguments must be given; optional text and list arguments (a folder, a
    pattern) may be. Optional numbers, flags and objects (limits, switches, environment)
    keep their defaults, which keeps small models from inventing them. Formats the grammar
    cannot enforce (patterns, numeric ranges) are checked against the tool's own schema
    after generation.
    """
    properties = {name: _bounded(name, tool.properties.get(name, {})) for name in tool.required}
    for name, schema in tool.properties.items():
        if name not in properties and _json_type(schema) in ("string", "array"):
            properties[name] = _bounded(name, schema)
    return {
        "type": "object",
        "properties": properties,
        "required": list(tool.required),
        "additionalProperties": False,
    }


def _bounded(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    kind = _json_type(schema)
    if kind in ("integer", "number", "boolean"):
        return {"type": kind}
    if kind == "array":
        items = schema.get("items", {})
        item = _bounded(name, items) if isinstance(items, Mapping) else {"$ref": "#/$defs/arg"}
        return {"type": "array", "items": item, "maxItems": LIST_ITEMS}
    return {"$ref": "#/$defs/long-arg" if name in LONG_ARGS else "#/$defs/arg"}


def _json_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    for option in schema.get("anyOf", []):
        if isinstance(option, Mapping) and option.get("type") not in (None, "null"):
            return str(option["type"])
    return "string"


def _text(limit: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limit}
