"""The planner: natural-language requests become constellations, and plans evolve.

Modules: `context` (what the planner may use: devices and tool schemas), `schema` (the
generation schema that makes plans well-formed by construction), `prompt`, `planner`
(creation and editing with bounded repair), `summary` (bounded result summaries),
`review` (when editing runs, attached to an orchestrator), `evaluation` (scoring plans
against the bundled evaluation set).
"""
