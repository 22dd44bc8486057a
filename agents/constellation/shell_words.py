"""`${...}` references inside shell commands: inserted as data, never as shell syntax.

A reference in `shell.run`'s `cmd` is replaced by its value as one single-quoted word
(`shlex.quote`), whatever the value holds: `echo got ${a.output.body}` with a body of
`hi; touch X` runs `echo got 'hi; touch X'`. Inside quotes written in the command the
quotes are closed around it (`"got ${a.output}"` -> `"got "'hi; touch X'""`), so the
author's quoting keeps its meaning and the value stays one literal piece of the word.

That needs to know how the shell reads the command at each reference, so the command is
scanned (plain, '...', "...", backslash escapes, comments) and a reference is refused --
at validation, naming the reason -- where the scan cannot be sure: after an escaping
backslash, in a comment, and anywhere after a backtick, `$(`, `$'`, a `${` that is not a
reference, or a here-document (`<<`). There, pass the value through `args.env` instead
(`env: {X: "${a.output}"}` and `"$X"` in the command): an environment variable is data.

`SHELL_ARGS` names the arguments that are shell syntax, per tool.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Final

SHELL_ARGS: Final[Mapping[str, frozenset[str]]] = {"shell.run": frozenset({"cmd"})}
"""Tool -> its arguments that a shell reads as a command line."""

_BLANKS = frozenset(" \t\n")
_OPERATORS = frozenset(";&|()<>")
ADVICE = (
    'pass the value in args.env instead (env: {NAME: "${...}"} and "$NAME" in the '
    "command): a variable's value is never read as shell syntax"
)


class Context(Enum):
    """How the shell reads the text at a reference."""

    PLAIN = "plain"  # unquoted
    SINGLE = "single"  # inside '...'
    DOUBLE = "double"  # inside "..."


class UnsafeShellReference(ValueError):
    """A reference where the shell's reading of the command cannot be told for sure;
    `reference` is its text, the message says where and what to do instead."""

    def __init__(self, reference: str, where: str) -> None:
        super().__init__(
            f"{reference} is {where} in a shell command, where Orrery cannot insert it as "
            f"data; {ADVICE}"
        )
        self.reference = reference
        self.where = where


def reference_contexts(cmd: str, pattern: re.Pattern[str]) -> list[tuple[re.Match[str], Context]]:
    """Each match of `pattern` (the references) in `cmd` with how the shell reads the text
    there; `UnsafeShellReference` for the first one it cannot tell (see the module)."""
    starts = {match.start(): match for match in pattern.finditer(cmd)}
    found: list[tuple[re.Match[str], Context]] = []
    state = Context.PLAIN
    unknown = ""  # the construct after which nothing can be told, once met
    comment = False
    word_start = True
    i = 0
    while i < len(cmd):
        match = starts.get(i)
        if match is not None:
            if unknown:
                raise UnsafeShellReference(match.group(0), f"after {unknown}")
            if comment:
                raise UnsafeShellReference(match.group(0), "in a comment")
            found.append((match, state))
            i = match.end()
            word_start = False
            continue
        char = cmd[i]
        after = cmd[i + 1] if i + 1 < len(cmd) else ""
        if unknown:
            i += 1
            continue
        if comment:
            comment = char != "\n"
            word_start = not comment
            i += 1
            continue
        if state is Context.SINGLE:
            if char == "'":
                state = Context.PLAIN
            i += 1
            continue
        if char == "\\":
            if i + 1 in starts:
                raise UnsafeShellReference(starts[i + 1].group(0), "right after a backslash")
            i += 2
            word_start = False
            continue
        if char == "`":
            unknown = "a backtick"
        elif char == "$" and after in ("(", "'", "{"):
            unknown = f"'${after}'"
        elif state is Context.DOUBLE:
            if char == '"':
                state = Context.PLAIN
        elif char == "<" and after == "<":
            unknown = "a here-document ('<<')"
        elif char == "#" and word_start:
            comment = True
        elif char == "'":
            state = Context.SINGLE
        elif char == '"':
            state = Context.DOUBLE
        word_start = state is Context.PLAIN and (char in _BLANKS or char in _OPERATORS)
        i += 1
    return found


def insert_as_words(cmd: str, pattern: re.Pattern[str], value_of: Callable[[str], str]) -> str:
    """`cmd` with every reference (a match of `pattern`) replaced by `value_of(its text)`
    as one single-quoted word, quotes around it closed and reopened; raises
    `UnsafeShellReference` as `reference_contexts` does."""
    pieces: list[str] = []
    last = 0
    for match, context in reference_contexts(cmd, pattern):
        word = shlex.quote(value_of(match.group(0)))
        if context is Context.SINGLE:
            word = f"'{word}'"
        elif context is Context.DOUBLE:
            word = f'"{word}"'
        pieces.append(cmd[last : match.start()])
        pieces.append(word)
        last = match.end()
    pieces.append(cmd[last:])
    return "".join(pieces)


__all__ = [
    "ADVICE",
    "SHELL_ARGS",
    "Context",
    "UnsafeShellReference",
    "insert_as_words",
    "reference_contexts",
]
