"""The unit of work that crosses from orchestrator to device and back.

These are the bodies of AIP's `task.assign`, `task.progress` and `task.result`
messages; the in-process dispatcher uses the very same types.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

TaskIdPart = Annotated[str, Field(min_length=1, max_length=64)]
"""A constellation or star id as tasks carry it (the limits `TaskRef` has on the wire)."""


class TaskOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TaskAssignment(BaseModel):
    """Run `tool` with `args` (references already resolved) as attempt `attempt` of a star."""

    model_config = ConfigDict(extra="forbid")

    constellation_id: TaskIdPart
    star_id: TaskIdPart
    attempt: int = Field(ge=1)
    device: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = None

    @property
    def task_id(self) -> str:
        return f"{self.constellation_id}/{self.star_id}"

    @property
    def key(self) -> tuple[str, str, int]:
        """(constellation, star, attempt): what identifies one attempt of a star."""
        return (self.constellation_id, self.star_id, self.attempt)


class TaskProgress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    constellation_id: TaskIdPart
    star_id: TaskIdPart
    attempt: int = Field(ge=1)
    message: str = Field(max_length=16_384)
    stream: str | None = None  # "stdout", "stderr" or None for a step note

    @property
    def key(self) -> tuple[str, str, int]:
        """(constellation, star, attempt): what identifies one attempt of a star."""
        return (self.constellation_id, self.star_id, self.attempt)


class TaskResult(BaseModel):
    """The outcome of one attempt. `output` is the tool's result model as JSON data."""

    model_config = ConfigDict(extra="forbid")

    constellation_id: TaskIdPart
    star_id: TaskIdPart
    attempt: int = Field(ge=1)
    status: TaskOutcome
    output: Any = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """(constellation, star, attempt): what identifies one attempt of a star."""
        return (self.constellation_id, self.star_id, self.attempt)

    @classmethod
    def failure(cls, assignment: TaskAssignment, error: str, output: Any = None) -> TaskResult:
        return cls(
            constellation_id=assignment.constellation_id,
            star_id=assignment.star_id,
            attempt=assignment.attempt,
            status=TaskOutcome.FAILED,
            output=output,
            error=error,
        )

    @classmethod
    def success(cls, assignment: TaskAssignment, output: Any) -> TaskResult:
        return cls(
            constellation_id=assignment.constellation_id,
            star_id=assignment.star_id,
            attempt=assignment.attempt,
            status=TaskOutcome.SUCCEEDED,
            output=output,
        )
