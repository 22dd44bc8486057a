"""Declarative predicates for `condition` lines: data, never code (no `eval`).

A predicate is JSON/YAML data evaluated over the upstream star's outcome,
``{"status": ..., "output": ..., "error": ...}``:

    {path: output.returncode, op: eq, value: 0}
    {all: [{path: status, op: eq, value: succeeded}, {path: output.count, op: gt, value: 3}]}
    {any: [...]}    {not: {...}}

A path that does not resolve, or a comparison between incompatible types, is
false (never an exception), so a condition can always be decided.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_PATTERN_LENGTH = 512
MISSING = object()


class CompareOp(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    MATCHES = "matches"
    IN = "in"
    NOT_IN = "not_in"
    EXISTS = "exists"
    MISSING = "missing"
    TRUTHY = "truthy"
    FALSY = "falsy"


class Compare(BaseModel):
    """Compare the value at ``path`` (dotted, list indices as numbers) with ``value``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(pattern=r"^(status|output|error)(\.[A-Za-z0-9_\-]+)*$")
    op: CompareOp = CompareOp.EQ
    value: Any = None

    @field_validator("value")
    @classmethod
    def _pattern_is_bounded(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_PATTERN_LENGTH:
            raise ValueError(f"value is longer than {MAX_PATTERN_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _pattern_compiles(self) -> Self:
        if self.op is CompareOp.MATCHES:
            if not isinstance(self.value, str):
                raise ValueError("op 'matches' needs a string regular expression as value")
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {self.value!r}: {exc}") from None
        return self

    def evaluate(self, subject: dict[str, Any]) -> bool:
        found = resolve_path(subject, self.path)
        op = self.op
        if op is CompareOp.EXISTS:
            return found is not MISSING
        if op is CompareOp.MISSING:
            return found is MISSING
        if found is MISSING:
            return False
        if op is CompareOp.TRUTHY:
            return bool(found)
        if op is CompareOp.FALSY:
            return not found
        return _compare(op, found, self.value)


class All(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    all: list[Predicate] = Field(min_length=1)

    def evaluate(self, subject: dict[str, Any]) -> bool:
        return all(p.evaluate(subject) for p in self.all)


class Any_(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    any: list[Predicate] = Field(min_length=1)

    def evaluate(self, subject: dict[str, Any]) -> bool:
        return any(p.evaluate(subject) for p in self.any)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    not_: Predicate = Field(alias="not")

    def evaluate(self, subject: dict[str, Any]) -> bool:
        return not self.not_.evaluate(subject)


Predicate = Annotated[Compare | All | Any_ | Not, Field(union_mode="left_to_right")]

All.model_rebuild()
Any_.model_rebuild()
Not.model_rebuild()


def resolve_path(subject: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists; ``MISSING`` when it does not resolve."""
    current = subject
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list | tuple) and _is_index(part):
            index = int(part)
            if not -len(current) <= index < len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def _is_index(part: str) -> bool:
    return part.lstrip("-").isdigit()


def _compare(op: CompareOp, left: Any, right: Any) -> bool:
    try:
        if op is CompareOp.EQ:
            return bool(left == right)
        if op is CompareOp.NE:
            return bool(left != right)
        if op is CompareOp.LT:
            return bool(left < right)
        if op is CompareOp.LE:
            return bool(left <= right)
        if op is CompareOp.GT:
            return bool(left > right)
        if op is CompareOp.GE:
            return bool(left >= right)
        if op is CompareOp.CONTAINS:
            return right in left if isinstance(left, str | list | tuple | dict) else False
        if op is CompareOp.NOT_CONTAINS:
            return right not in left if isinstance(left, str | list | tuple | dict) else False
        if op is CompareOp.MATCHES:
            if not isinstance(left, str) or not isinstance(right, str):
                return False
            return re.search(right, left) is not None
        if op is CompareOp.IN:
            return left in right if isinstance(right, str | list | tuple | dict) else False
        if op is CompareOp.NOT_IN:
            return left not in right if isinstance(right, str | list | tuple | dict) else False
    except (TypeError, re.error):
        return False
    return False


def evaluate_condition(
    predicate: Compare | All | Any_ | Not, status: str, output: Any, error: str | None
) -> bool:
    """Decide a `condition` line given the upstream star's final status and result."""
    return predicate.evaluate({"status": status, "output": output, "error": error})


__all__ = [
    "All",
    "Any_",
    "Compare",
    "CompareOp",
    "Not",
    "Predicate",
    "evaluate_condition",
    "resolve_path",
]
