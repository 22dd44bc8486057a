"""`python -m agents.constellation` prints the plan JSON schema (resources/schema/plan.schema.json)."""

import json

from agents.constellation.model import constellation_json_schema

print(json.dumps(constellation_json_schema(), indent=2, sort_keys=True))
