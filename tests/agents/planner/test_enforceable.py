"""`unenforceable`: which argument schemas the planner's grammar can give."""

from __future__ import annotations

from typing import Any

import pytest

from agents.planner.context import PlanningContext
from agents.planner.enforceable import unenforceable
from devices.registry import DeviceInfo
from devices.tools import default_tools


def tool(required: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": required, "required": list(required), **more}


@pytest.mark.parametrize(
    "schema",
    [
        tool({"timezone": {"type": "string"}}),
        tool({"count": {"type": "integer"}, "on": {"type": "boolean"}}),
        tool({"since": {"anyOf": [{"type": "string"}, {"type": "null"}]}}),
        tool({"files": {"type": "array", "items": {"type": "string"}}}),
        tool({"x": {"type": ["number", "null"]}}),
        tool({}, properties={"env": {"type": "object"}}),  # optional objects keep defaults
        {"properties": {"a": {"type": "string"}}, "required": ["a"]},  # type left out
        *default_tools().schemas().values(),
    ],
)
def test_schemas_the_grammar_can_give(schema: dict[str, Any]) -> None:
    assert unenforceable(schema) is None


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (tool({"settings": {"type": "object"}}), "required argument 'settings' is an object"),
        (tool({"cfg": {"$ref": "#/$defs/Cfg"}}), "only by a reference ($ref)"),
        (
            tool({"rows": {"type": "array", "items": {"type": "object"}}}),
            "a list of objects or lists",
        ),
        (tool({"c": {"anyOf": [{"$ref": "#/$defs/C"}, {"type": "null"}]}}), "is an object"),
        ({"type": "array"}, "of type 'array', not an object"),
        ({"type": "object", "required": ["ghost"]}, "'ghost' has no schema in properties"),
        ("not a schema", "not a JSON object"),
    ],
)
def test_schemas_the_grammar_cannot_give_say_why(schema: Any, why: str) -> None:
    problem = unenforceable(schema)
    assert problem is not None
    assert why in problem


def test_the_planning_context_leaves_such_tools_out_with_the_reason() -> None:
    device = DeviceInfo(name="box", tools=frozenset({"mcp.db.query", "mcp.db.put"}))
    schemas = {
        "mcp.db.query": tool({"sql": {"type": "string"}}),
        "mcp.db.put": tool({"row": {"type": "object"}}),
    }
    context = PlanningContext.from_devices([device], schemas)
    assert list(context.tools) == ["mcp.db.query"]
    assert context.refused == {
        "mcp.db.put": "required argument 'row' is an object, which the grammar cannot give"
    }
