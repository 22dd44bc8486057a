"""Checking a task's arguments against the JSON Schema its device announced for the tool.

The orchestrator checks `task.assign.args` before it sends them (docs/protocol.md,
`task.assign`): a star whose arguments do not fit fails at once with an error naming the
star, the tool and the field, instead of travelling to the device to fail there. Each
schema is read in the dialect its `$schema` names, Draft 2020-12 when it names none (what
pydantic emits, and so what the reference device announces).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from protocol.tasks import TaskAssignment

log = logging.getLogger("orrery.aip.dispatcher")

MAX_LISTED = 3
"""Problems an error message lists; the rest are counted."""


class ToolArgsChecker:
    """The tool schemas one device announced in its `hello`, and a validator per tool,
    built the first time the tool is used (a device's schema is untrusted input: one that
    is not a valid JSON Schema fails the attempts that would use it, with the reason)."""

    def __init__(self, device: str, schemas: Mapping[str, dict[str, Any]]) -> None:
        self.device = device
        self._schemas = schemas
        self._validators: dict[str, Validator | str] = {}  # a validator, or why there is none

    def problem(self, assignment: TaskAssignment) -> str | None:
        """Why `assignment` must not be sent to this device, or None when its args fit."""
        star = f"star {assignment.star_id!r}"
        tool = assignment.tool
        if tool not in self._schemas:
            offered = ", ".join(sorted(self._schemas)) or "nothing"
            return f"{star}: device {self.device!r} has no tool {tool!r}; it offers: {offered}"
        validator = self._validator(tool)
        if isinstance(validator, str):
            return f"{star}: cannot check the arguments for {tool}: {validator}"
        try:
            errors = list(validator.iter_errors(assignment.args))
        except (Unresolvable, RecursionError) as exc:
            return f"{star}: cannot check the arguments for {tool}: {_unusable(self.device, exc)}"
        if not errors:
            return None
        listed = "; ".join(f"{_where(error)}: {error.message}" for error in errors[:MAX_LISTED])
        more = f" (and {len(errors) - MAX_LISTED} more)" if len(errors) > MAX_LISTED else ""
        return (
            f"{star}: invalid arguments for {tool}: {listed}{more}; "
            f"fix the star's args to match the schema device {self.device!r} announced for it"
        )

    def _validator(self, tool: str) -> Validator | str:
        found = self._validators.get(tool)
        if found is None:
            schema = self._schemas[tool]
            cls = validators.validator_for(schema, default=Draft202012Validator)
            try:
                cls.check_schema(schema)
                found = cls(schema)
            except (SchemaError, RecursionError) as exc:
                found = _unusable(self.device, exc)
                log.warning("device %s: tool %s: %s", self.device, tool, found)
            self._validators[tool] = found
        return found


def _where(error: ValidationError) -> str:
    """`args`, or the dotted path of the field at fault (`args.env.HOME`, `args.cmd.0`)."""
    return ".".join(["args", *(str(part) for part in error.absolute_path)])


def _unusable(device: str, exc: BaseException) -> str:
    reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return (
        f"the schema device {device!r} announced is not a usable JSON Schema ({reason}); "
        "fix the tool's args_schema on the device"
    )


__all__ = ["MAX_LISTED", "ToolArgsChecker"]
