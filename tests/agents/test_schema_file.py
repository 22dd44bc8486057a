"""The JSON schema shipped for editors and the planner matches the model."""

from __future__ import annotations

import json
from pathlib import Path

from agents.constellation import PlanSpec, constellation_json_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "resources" / "schema" / "plan.schema.json"


def test_shipped_schema_is_current() -> None:
    shipped = json.loads(SCHEMA_FILE.read_text())
    assert shipped == constellation_json_schema(), (
        "resources/schema/plan.schema.json is stale; regenerate it with "
        "`python -m agents.constellation > resources/schema/plan.schema.json`"
    )


def test_schema_describes_plans() -> None:
    schema = constellation_json_schema()
    assert schema["required"] == ["name", "stars"]
    star = schema["$defs"]["StarSpec"]["properties"]
    for field in ("id", "tool", "args", "instruction", "on", "after", "retries", "timeout"):
        assert field in star
    line = schema["$defs"]["Line"]["properties"]
    assert {"from", "to", "kind", "when"} <= set(line)
    assert set(schema["$defs"]["LineKind"]["enum"]) == {"success", "completion", "condition"}
    # A plan in the JSON the schema describes validates into the model.
    plan = {"name": "x", "stars": [{"id": "a", "tool": "shell.run", "args": {"cmd": "true"}}]}
    assert PlanSpec.model_validate(plan).stars[0].id == "a"
