"""The task constellation: stars (subtasks), lines (dependencies) and their runtime state.

`PlanSpec` is what a person writes in a plan file or the planner emits; `Constellation`
is the live object the orchestrator owns: the same stars and lines plus status,
attempts, results and a version that grows with every accepted edit batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agents.constellation.predicate import Predicate

STAR_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"
TOOL_NAME_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"


class StarStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def started(self) -> bool:
        """Running or finished: such a star is read-only for edits."""
        return self is StarStatus.RUNNING or self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {StarStatus.SUCCEEDED, StarStatus.FAILED, StarStatus.CANCELLED, StarStatus.SKIPPED}
)

# The only moves a star's status may make. READY -> FAILED is the fail-fast path of a
# star no connected device can run; nothing ever moves backwards.
ALLOWED_TRANSITIONS: dict[StarStatus, frozenset[StarStatus]] = {
    StarStatus.PENDING: frozenset({StarStatus.READY, StarStatus.SKIPPED, StarStatus.CANCELLED}),
    StarStatus.READY: frozenset({StarStatus.RUNNING, StarStatus.FAILED, StarStatus.CANCELLED}),
    StarStatus.RUNNING: frozenset({StarStatus.SUCCEEDED, StarStatus.FAILED, StarStatus.CANCELLED}),
    StarStatus.SUCCEEDED: frozenset(),
    StarStatus.FAILED: frozenset(),
    StarStatus.CANCELLED: frozenset(),
    StarStatus.SKIPPED: frozenset(),
}

STATUS_RANK = {
    StarStatus.PENDING: 0,
    StarStatus.READY: 1,
    StarStatus.RUNNING: 2,
    StarStatus.SUCCEEDED: 3,
    StarStatus.FAILED: 3,
    StarStatus.CANCELLED: 3,
    StarStatus.SKIPPED: 3,
}


class IllegalTransition(RuntimeError):
    """A star's status was asked to move backwards or sideways; this is a bug in the caller."""

    def __init__(self, star_id: str, current: StarStatus, target: StarStatus) -> None:
        super().__init__(f"star {star_id!r} cannot move from {current} to {target}")
        self.star_id = star_id
        self.current = current
        self.target = target


class LineKind(StrEnum):
    SUCCESS = "success"
    COMPLETION = "completion"
    CONDITION = "condition"


class AttemptStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class ConstellationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in {
            ConstellationStatus.SUCCEEDED,
            ConstellationStatus.FAILED,
            ConstellationStatus.CANCELLED,
        }


class DeviceSelector(BaseModel):
    """Which devices may run a star. Every given field must match; nothing given means any."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    labels: tuple[str, ...] = ()
    platform: str | None = None
    gpu: bool | None = None
    min_vram_mb: int | None = Field(default=None, ge=1, description="free GPU memory needed")
    names: tuple[str, ...] = Field(default=(), description="one of these devices")
    each: bool = Field(
        default=False,
        description="fan out: one star per matching device (`agents.constellation.fanout`)",
    )
    joining: bool = Field(
        default=False,
        description="with `each`: a device that joins while the constellation runs and "
        "matches gets a branch too, while what waits for the branches has not started "
        "(`agents.constellation.joining`)",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        # `on: laptop` is shorthand for `on: {name: laptop}`; `on: [a, b]` fans out over
        # devices a and b: `on: {names: [a, b], each: true}`.
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, list):
            return {"names": value, "each": True}
        return value

    @field_validator("joining")
    @classmethod
    def _joining_fans_out(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("each"):
            raise ValueError(
                "only a fan-out takes joining devices: add 'each: true' next to 'joining: true'"
            )
        return value

    @property
    def is_any(self) -> bool:
        return (
            self.name is None
            and not self.names
            and not self.labels
            and self.platform is None
            and not self.gpu
            and not self.min_vram_mb
            and not self.each
        )


class StarSpec(BaseModel):
    """One subtask as written in a plan: what to run, where, and how patiently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=STAR_ID_PATTERN)
    title: str = Field(default="", max_length=200)
    tool: str | None = Field(default=None, pattern=TOOL_NAME_PATTERN)
    args: dict[str, Any] = Field(default_factory=dict)
    instruction: str | None = Field(default=None, min_length=1, max_length=4000)
    on: DeviceSelector | None = None
    priority: int = Field(default=0, ge=-1000, le=1000)
    retries: int = Field(default=0, ge=0, le=100)
    timeout: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    estimate: float | None = Field(
        default=None, gt=0, description="Expected run time in seconds; guides scheduling order."
    )
    allow_failure: bool = Field(
        default=False, description="A failure of this star does not fail the constellation."
    )
    after: list[str] = Field(
        default_factory=list, description="Shorthand for `success` lines from these stars."
    )

    @model_validator(mode="after")
    def _tool_or_instruction(self) -> Self:
        if self.tool is None and self.instruction is None:
            raise ValueError("a star needs either 'tool' (with 'args') or 'instruction'")
        if self.tool is not None and self.instruction is not None:
            raise ValueError("a star has either 'tool' or 'instruction', not both")
        if self.instruction is not None and "goal" in self.args:
            raise ValueError(
                "an instruction is agent.do's goal: leave 'goal' out of 'args' (they may "
                "carry agent.do's other arguments, such as 'max_steps')"
            )
        return self

    @field_validator("after")
    @classmethod
    def _after_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("'after' lists a star twice")
        return value

    @property
    def effective_tool(self) -> str:
        """The tool that runs this star; an instruction is carried out by `agent.do`."""
        return self.tool if self.tool is not None else "agent.do"

    @property
    def effective_args(self) -> dict[str, Any]:
        """The arguments the tool gets; an instruction becomes `agent.do`'s `goal`, next to
        whatever else `args` gives agent.do (`max_steps`, `tools`)."""
        if self.tool is not None:
            return self.args
        return {"goal": self.instruction, **self.args}


class Line(BaseModel):
    """A dependency from an upstream star (`from`) to a downstream star (`to`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from", pattern=STAR_ID_PATTERN)
    target: str = Field(alias="to", pattern=STAR_ID_PATTERN)
    kind: LineKind = LineKind.SUCCESS
    when: Predicate | None = None

    @model_validator(mode="after")
    def _condition_has_predicate(self) -> Self:
        if self.kind is LineKind.CONDITION and self.when is None:
            raise ValueError("a 'condition' line needs a 'when' predicate")
        if self.kind is not LineKind.CONDITION and self.when is not None:
            raise ValueError(f"a '{self.kind}' line takes no 'when' predicate")
        if self.source == self.target:
            raise ValueError(f"a line cannot join star {self.source!r} to itself")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.target)

    def label(self) -> str:
        return f"{self.source}->{self.target} ({self.kind})"


class PlanSpec(BaseModel):
    """A constellation as written by hand or produced by the planner."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    rationale: str = Field(default="", description="Why the planner chose this plan.")
    stars: list[StarSpec] = Field(min_length=1)
    lines: list[Line] = Field(default_factory=list)


@dataclass(slots=True)
class Attempt:
    """One try at running a star on one device; retries are new, numbered attempts.

    A plain dataclass (pydantic validates and serialises it as a field of `Star`) so the
    scheduler can create and update attempts cheaply.
    """

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    number: Annotated[int, Field(ge=1)]
    device: str
    started_at: float
    status: AttemptStatus = AttemptStatus.RUNNING
    finished_at: float | None = None
    error: str | None = None


class Star(StarSpec):
    """A star with its runtime state."""

    status: StarStatus = StarStatus.PENDING
    attempts: list[Attempt] = Field(default_factory=list)
    output: Any = None
    error: str | None = None
    skip_reason: str | None = None

    def move_to(self, target: StarStatus) -> None:
        """Advance the status; raises `IllegalTransition` for any backwards or sideways move."""
        if target not in ALLOWED_TRANSITIONS[self.status]:
            raise IllegalTransition(self.id, self.status, target)
        # The check above is the validation; write the field directly (scheduler hot path).
        self.__dict__["status"] = target
        self.__pydantic_fields_set__.add("status")

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def spec(self) -> StarSpec:
        """The editable part of this star, without runtime state."""
        return StarSpec.model_validate(self.model_dump(include=set(StarSpec.model_fields)))


class FanOutRecord(BaseModel):
    """What a constellation keeps of its plan when one of its fan-outs takes joining
    devices (`on: {each: true, joining: true}`): the stars and lines as written, before
    expansion, and the devices each fanned-out star has branches on, so a device that
    joins later gets the branches it would have had (`agents.constellation.joining`)."""

    model_config = ConfigDict(extra="forbid")

    stars: list[StarSpec]
    lines: list[Line] = Field(default_factory=list)
    accepted: dict[str, list[str]] = Field(
        description="fanned-out star -> the devices it got a branch on when the plan was "
        "accepted (two fanned-out stars with the same devices are joined branch by branch)"
    )
    joined: dict[str, list[str]] = Field(
        default_factory=dict,
        description="fanned-out star -> the devices that joined later and got a branch",
    )

    def devices(self, star_id: str) -> list[str]:
        """Every device the fanned-out star `star_id` has a branch on."""
        return [*self.accepted.get(star_id, ()), *self.joined.get(star_id, ())]

    def taking_joining(self) -> list[str]:
        """The fanned-out stars that take joining devices."""
        return [
            star.id
            for star in self.stars
            if star.id in self.accepted and star.on is not None and star.on.joining
        ]


class Constellation(BaseModel):
    """The live DAG of one request. Edit it only through `agents.constellation.edits`."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    description: str = ""
    rationale: str = ""
    version: int = 1
    status: ConstellationStatus = ConstellationStatus.PENDING
    stars: dict[str, Star]
    lines: list[Line] = Field(default_factory=list)
    retry_of: str | None = None
    """The constellation this one runs again from where it failed (see `retry_plan`)."""
    fan_out: FanOutRecord | None = None
    """Its plan as written, when a fan-out takes devices that join while it runs."""

    def line(self, source: str, target: str) -> Line | None:
        for line in self.lines:
            if line.source == source and line.target == target:
                return line
        return None

    def incoming(self, star_id: str) -> list[Line]:
        return [line for line in self.lines if line.target == star_id]

    def outgoing(self, star_id: str) -> list[Line]:
        return [line for line in self.lines if line.source == star_id]

    def canonical_json(self) -> str:
        """A stable serialisation: equal constellations give equal bytes."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)


def lines_of(spec: PlanSpec) -> list[Line]:
    """Every line of a plan: the explicit ones plus a `success` line per `after` entry.

    An explicit line between the same two stars overrides the `after` shorthand.
    """
    explicit = {line.key for line in spec.lines}
    implied = [
        Line(source=upstream, target=star.id)
        for star in spec.stars
        for upstream in star.after
        if (upstream, star.id) not in explicit
    ]
    return implied + list(spec.lines)


def constellation_json_schema() -> dict[str, Any]:
    """The JSON schema of a plan (what the planner must emit and plan files follow)."""
    return PlanSpec.model_json_schema(by_alias=True)
