"""Bounded result summaries: what the planner may learn of a star's result.

Raw device output never enters the planner's context (DESIGN.md): a star's output can
carry text a device read from anywhere, including instructions aimed at the model. A
`ResultSummary` keeps only facts of fixed shape: the status, the exit code, numbers and
booleans, and for each text field its size (characters and lines), never its content.
Field names must look like identifiers, and the summary is bounded in size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.constellation import Star

MAX_FIELDS = 12
FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
EXIT_CODE_FIELDS = ("returncode", "exit_code")
"""Where a result carries a process's exit code: `returncode` (shell.run, python.run),
or `exit_code` (what another device's tool may call it); the first that is an int wins."""

ErrorKind = Literal["timed out", "device lost", "cancelled", "no capable device", "failed"]


class TextFacts(BaseModel):
    """A text value reduced to its size."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    chars: int = Field(ge=0)
    lines: int = Field(ge=0)


FieldFact = int | float | bool | None | TextFacts | Literal["object", "list"]


class ResultSummary(BaseModel):
    """One star's outcome as the planner sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: str = Field(max_length=16)
    attempts: int = Field(ge=0)
    error: ErrorKind | None = None
    exit_code: int | None = None
    fields: dict[str, FieldFact] = Field(default_factory=dict, max_length=MAX_FIELDS)


def summarise(star: Star) -> ResultSummary:
    """The bounded summary of a star's current state and result."""
    output = star.output
    exit_code = None
    fields: dict[str, FieldFact] = {}
    if isinstance(output, Mapping):
        for name in EXIT_CODE_FIELDS:
            code = output.get(name)
            if isinstance(code, int) and not isinstance(code, bool):
                exit_code = code
                break
        for key, value in output.items():
            if len(fields) >= MAX_FIELDS:
                break
            if isinstance(key, str) and FIELD_NAME.match(key) and key not in EXIT_CODE_FIELDS:
                fields[key] = _fact(value)
    elif output is not None:
        fields["output"] = _fact(output)
    return ResultSummary(
        status=star.status.value,
        attempts=len(star.attempts),
        error=error_kind(star.error) if star.error else None,
        exit_code=exit_code,
        fields=fields,
    )


def error_kind(error: str) -> ErrorKind:
    """A fixed category for an error message (the message itself may quote device text)."""
    lowered = error.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    if "lost" in lowered or "disconnected" in lowered:
        return "device lost"
    if "cancel" in lowered:
        return "cancelled"
    if "no device" in lowered or "no connected device" in lowered:
        return "no capable device"
    return "failed"


def _fact(value: Any) -> FieldFact:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        return TextFacts(chars=len(value), lines=value.count("\n") + (1 if value else 0))
    if isinstance(value, Mapping):
        return "object"
    return "list"
