"""AIP, the Agent Interaction Protocol: message schemas and the task types both sides share."""

from protocol.tasks import TaskAssignment, TaskOutcome, TaskProgress, TaskResult

__all__ = ["TaskAssignment", "TaskOutcome", "TaskProgress", "TaskResult"]
