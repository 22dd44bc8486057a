"""`${...}` references in shell commands are data, never syntax (issue 16, finding 4):
each becomes one single-quoted word, also inside quotes the author wrote, and where the
shell's reading cannot be told the plan is refused. Checked by running /bin/sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.constellation import BadReference, PlanSpec, build_constellation
from agents.constellation.references import REFERENCE_PATTERN, resolve_references
from agents.constellation.shell_words import (
    Context,
    UnsafeShellReference,
    insert_as_words,
    reference_contexts,
)

NASTY = [
    "hi; touch X",
    "$(touch X)",
    "`touch X`",
    "'; touch X; '",
    '"; touch X; "',
    "a\nb; touch X",
    "\\",
    "it's",
    "",
    "-n",
    "${HOME}",
    "*",
    "#x",
]


def sh(command: str, cwd: Path) -> str:
    done = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")  # bytes as printed: no newline translation


def inserted(template: str, value: str) -> str:
    return insert_as_words(template, REFERENCE_PATTERN, lambda _: value)


@pytest.mark.parametrize("value", NASTY)
@pytest.mark.parametrize(
    ("template", "printed"),
    [
        ("printf '%s|' ${a.output}", "{v}|"),
        ("printf '%s|' pre${a.output}post", "pre{v}post|"),
        ("printf '%s|' \"in ${a.output} quotes\"", "in {v} quotes|"),
        ("printf '%s|' 'in ${a.output} quotes'", "in {v} quotes|"),
        ("printf '%s|' ${a.output} ${b.output}", "{v}|{v}|"),
    ],
)
def test_a_value_is_one_literal_piece_of_its_word(
    tmp_path: Path, template: str, printed: str, value: str
) -> None:
    assert sh(inserted(template, value), tmp_path) == printed.format(v=value)
    assert not (tmp_path / "X").exists()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=40))
def test_any_text_comes_out_as_it_went_in(tmp_path: Path, value: str) -> None:
    command = inserted("printf '%s' ${a.output}\"|${a.output}|\"'${a.output}'", value)
    assert sh(command, tmp_path) == f"{value}|{value}|{value}"


def test_contexts_follow_the_quotes() -> None:
    found = reference_contexts(
        "echo ${a.output} '${b.output}' \"${c.output}\" \\' ${d.output} \"'\" ${e.output}",
        REFERENCE_PATTERN,
    )
    assert [context for _, context in found] == [
        Context.PLAIN,
        Context.SINGLE,
        Context.DOUBLE,
        Context.PLAIN,
        Context.PLAIN,
    ]


@pytest.mark.parametrize(
    ("command", "where"),
    [
        ("echo \\${a.output}", "right after a backslash"),
        ('echo "\\${a.output}"', "right after a backslash"),
        ("echo hi # ${a.output}", "in a comment"),
        ("echo $(cat ${a.output})", "after '$('"),
        ("echo `echo ${a.output}`", "after a backtick"),
        ("cat <<EOF\n${a.output}\nEOF", "after a here-document"),
        ("echo ${x:-${a.output}}", "after '${'"),
        ("echo $'x' ${a.output}", "after '$''"),
    ],
)
def test_where_the_reading_cannot_be_told_the_reference_is_refused(
    command: str, where: str
) -> None:
    with pytest.raises(UnsafeShellReference) as refused:
        reference_contexts(command, REFERENCE_PATTERN)
    assert where in str(refused.value)
    assert "args.env" in str(refused.value)  # what to do instead


def test_a_comment_ends_at_the_line_and_a_hash_inside_a_word_is_no_comment() -> None:
    found = reference_contexts("echo a#b ${a.output} # note\necho ${b.output}", REFERENCE_PATTERN)
    assert [context for _, context in found] == [Context.PLAIN, Context.PLAIN]


def test_only_shell_arguments_are_quoted() -> None:
    outputs = {"a": ({"body": "hi; touch X"}, None)}
    args = {"cmd": "echo got ${a.output.body}", "env": {"B": "${a.output.body}"}}
    resolved = resolve_references(args, outputs.get, shell_args={"cmd"})
    assert resolved == {"cmd": "echo got 'hi; touch X'", "env": {"B": "hi; touch X"}}
    whole = resolve_references({"cmd": "${a.output.body}"}, outputs.get, shell_args={"cmd"})
    assert whole == {"cmd": "'hi; touch X'"}  # a whole command from data is one word too
    plain = resolve_references({"path": "${a.output.body}"}, outputs.get)
    assert plain == {"path": "hi; touch X"}


def plan(cmd: str, tool: str = "shell.run") -> PlanSpec:
    return PlanSpec.model_validate(
        {
            "name": "p",
            "stars": [
                {"id": "a", "tool": "fs.read", "args": {"path": "x"}},
                {"id": "b", "tool": tool, "after": ["a"], "args": {"cmd": cmd}},
            ],
        }
    )


def test_a_plan_with_a_reference_the_shell_would_misread_is_refused() -> None:
    with pytest.raises(BadReference) as refused:
        build_constellation(plan("echo $(date) ${a.output.content}"))
    assert "star 'b'" in refused.value.message
    assert refused.value.location == ("stars", 1, "args", "cmd")
    build_constellation(plan("echo $(date) ${a.output.content}", tool="fs.write"))  # no shell
    build_constellation(plan('echo "got: ${a.output.content}"'))
