"""Print the plan JSON schema.

Regenerate the shipped copy with
`python -m agents.constellation > resources/schema/plan.schema.json`.
"""

import json

from agents.constellation.model import constellation_json_schema

print(json.dumps(constellation_json_schema(), indent=2, sort_keys=True))
