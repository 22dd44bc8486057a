"""The generation schemas: well-formed by construction, and convertible to a grammar."""

from __future__ import annotations

from typing import Any

import jsonschema

from agents.models.grammar import schema_to_grammar
from agents.planner.schema import edit_schema, plan_schema
from tests.agents.planner.scripted import context, plan_json, star


def _alternatives(schema: dict[str, Any], star_id: str) -> list[dict[str, Any]]:
    alternatives: list[dict[str, Any]] = schema["$defs"][star_id]["anyOf"]
    return alternatives


def test_tools_devices_and_dependencies_are_enums_of_what_exists() -> None:
    schema = plan_schema(context(), max_stars=3)
    tools = {alt["properties"]["tool"]["const"] for alt in _alternatives(schema, "s1")}
    assert tools == {"shell.run", "python.run", "fs.read", "fs.write", "fs.list", "sys.info"}
    by_tool = {alt["properties"]["tool"]["const"]: alt for alt in _alternatives(schema, "s3")}
    assert by_tool["shell.run"]["properties"]["on"]["enum"] == ["laptop", "nas", "winbox", "any"]
    assert by_tool["fs.write"]["properties"]["on"]["enum"] == ["laptop", "nas", "any"]
    assert by_tool["fs.write"]["properties"]["after"]["items"]["enum"] == ["s1", "s2"]
    assert "after" not in _alternatives(schema, "s1")[0]["properties"]  # s1 depends on nothing


def test_the_schema_accepts_good_plans_and_refuses_bad_ones() -> None:
    validator = jsonschema.Draft202012Validator(plan_schema(context(), max_stars=3))
    import json

    good = json.loads(plan_json(star("s1"), star("s2", after=["s1"])))
    assert validator.is_valid(good)
    for bad in (
        plan_json(star("s1", after=["s2"]), star("s2")),  # depends on a later star
        plan_json(star("s2")),  # ids must start at s1
        plan_json(star("s1", tool="net.scan")),  # not a connected tool
        plan_json(star("s1", on="mainframe")),  # not a connected device
        plan_json(star("s1", tool="fs.write", on="winbox", path="a", content="b")),
        plan_json(*(star(f"s{i}") for i in range(1, 5))),  # more than max_stars
        plan_json(star("s1", cmd="x" * 1000)),  # unbounded text
    ):
        assert not validator.is_valid(json.loads(bad)), bad


def test_plan_and_edit_schemas_convert_to_grammars() -> None:
    assert "root ::=" in schema_to_grammar(plan_schema(context()))
    schema = edit_schema(context(), existing=["s1", "s2"], removable=["s2"], id_prefix="v2s")
    assert "root ::=" in schema_to_grammar(schema)
    validator = jsonschema.Draft202012Validator(schema)

    def ok(**decision: object) -> bool:
        return bool(validator.is_valid({"decision": decision}))

    assert ok(action="continue", rationale="all fine")
    assert ok(action="finish", rationale="done")
    assert ok(action="edit", rationale="r", add=[star("v2s1", after=["s1"])], remove=["s2"])
    assert not ok(action="continue", rationale="r", add=[])  # only an edit adds stars
    assert not ok(action="edit", rationale="r", add=[], remove=["s1"])  # s1 has started
    assert not ok(action="edit", rationale="r", add=[star("s3")], remove=[])  # not a new id
    assert not ok(  # at most two new stars per edit
        action="edit", rationale="r", add=[star(f"v2s{i}") for i in (1, 2, 3)], remove=[]
    )


def test_the_bundled_examples_are_in_the_generated_form() -> None:
    from agents.planner.prompt import bundled_examples

    examples = bundled_examples()
    assert len(examples) >= 2
    for example in examples:
        stars = example["plan"]["stars"]
        for index, raw in enumerate(stars):
            expected = ["id", "title", "tool", "on", "args"] + (["after"] if index else [])
            assert list(raw) == expected, raw  # `on` stays a key (YAML 1.1 reads it as true)
            assert raw["id"] == f"s{index + 1}"
            assert set(raw.get("after", [])) <= {f"s{i}" for i in range(1, index + 1)}
