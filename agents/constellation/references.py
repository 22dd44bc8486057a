"""`${star.output.field}` references: parsed at validation, resolved at dispatch time.

A string that is exactly one reference is replaced by the referenced value as it is
(a number stays a number, a text keeps every character); a reference inside longer text
is interpolated as text: a text value without one trailing line break (`\n` or `\r\n`, as
a command's output ends), anything else as JSON. Only `output` (the upstream result) and
`error` may be read.

In an argument a shell reads as a command line (`shell_words.SHELL_ARGS`: shell.run's
`cmd`) every reference, whole or inside text, becomes one single-quoted word instead, so
what another star produced is never run as shell syntax (`agents.constellation.shell_words`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from agents.constellation.predicate import MISSING, resolve_path
from agents.constellation.shell_words import insert_as_words

REFERENCE_PATTERN = re.compile(r"\$\{([^{}]*)\}")
_REFERENCE_BODY = re.compile(
    r"^(?P<star>[A-Za-z_][A-Za-z0-9_\-]{0,63})\.(?P<path>(output|error)(\.[A-Za-z0-9_\-]+)*)$"
)


@dataclass(frozen=True, slots=True)
class Reference:
    star: str
    path: str  # "output", "output.stdout", "error", ...
    text: str  # the whole ${...} as written

    def __str__(self) -> str:
        return self.text


class ReferenceSyntaxError(ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(
            f"malformed reference {text!r}: write ${{STAR.output}} or ${{STAR.output.FIELD}}"
        )
        self.text = text


class UnresolvedReference(LookupError):
    """A reference whose upstream has no such value at dispatch time."""

    def __init__(self, reference: Reference, why: str) -> None:
        super().__init__(f"cannot resolve {reference.text}: {why}")
        self.reference = reference


def parse_reference(text: str) -> Reference:
    match = REFERENCE_PATTERN.fullmatch(text)
    body = match.group(1).strip() if match else ""
    found = _REFERENCE_BODY.match(body)
    if not found:
        raise ReferenceSyntaxError(text)
    return Reference(star=found.group("star"), path=found.group("path"), text=text)


def iter_references(
    value: Any, location: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield (location, raw ${...} text) for every reference inside nested args."""
    if isinstance(value, str):
        for match in REFERENCE_PATTERN.finditer(value):
            yield location, match.group(0)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_references(item, (*location, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_references(item, (*location, index))


Lookup = Callable[[str], tuple[Any, str | None] | None]
"""Given a star id, its (output, error) if it has finished, else None."""


def resolve_references(value: Any, lookup: Lookup, *, shell_args: Collection[str] = ()) -> Any:
    """Return a copy of `value` with every reference replaced by the upstream value; in
    the top-level arguments named in `shell_args`, as single-quoted shell words (raises
    `UnsafeShellReference` where that cannot be done safely)."""
    if shell_args and isinstance(value, dict):
        return {
            key: _as_shell_words(item, lookup)
            if key in shell_args and isinstance(item, str)
            else resolve_references(item, lookup)
            for key, item in value.items()
        }
    if isinstance(value, str):
        whole = REFERENCE_PATTERN.fullmatch(value)
        if whole:
            return _value_of(parse_reference(value), lookup)
        if "${" not in value:
            return value
        return REFERENCE_PATTERN.sub(
            lambda m: _as_text(_value_of(parse_reference(m.group(0)), lookup)), value
        )
    if isinstance(value, dict):
        return {key: resolve_references(item, lookup) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_references(item, lookup) for item in value]
    return value


def _as_shell_words(command: str, lookup: Lookup) -> str:
    if "${" not in command:
        return command
    return insert_as_words(
        command,
        REFERENCE_PATTERN,
        lambda text: _as_text(_value_of(parse_reference(text), lookup)),
    )


def _value_of(reference: Reference, lookup: Lookup) -> Any:
    found = lookup(reference.star)
    if found is None:
        raise UnresolvedReference(reference, f"star {reference.star!r} has not finished")
    output, error = found
    value = resolve_path({"output": output, "error": error}, reference.path)
    if value is MISSING:
        raise UnresolvedReference(
            reference, f"star {reference.star!r} produced no {reference.path!r}"
        )
    return value


def _as_text(value: Any) -> str:
    """A value as it reads inside longer text: a text without one trailing line break
    ("There are ${count.output.stdout} files" must not break after the number)."""
    if isinstance(value, str):
        if value.endswith("\r\n"):
            return value[:-2]
        return value.removesuffix("\n")
    return json.dumps(value, sort_keys=True)
