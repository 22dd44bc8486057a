"""Device agents, their tools and policies, and the orchestrator's device registry."""
