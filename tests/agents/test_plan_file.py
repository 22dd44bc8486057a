"""Plan files: loading, the YAML dialect, located one-line errors, samples and round trips."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.constellation.errors import (
    BadReference,
    ConstellationError,
    CycleDetected,
    DuplicateLine,
    DuplicateStarId,
    UnknownStar,
    UnknownTool,
)
from agents.constellation.model import DeviceSelector, LineKind, PlanSpec, StarStatus
from agents.constellation.plan_file import (
    MAX_PLAN_BYTES,
    PlanFileError,
    load_plan,
    load_plan_spec,
    parse_plan,
    parse_plan_spec,
    plan_to_yaml,
)

TOOLS = {"shell.run", "python.run", "fs.read", "fs.write", "fs.list"}
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "resources" / "plans").glob("*.yaml"))
FIXTURES = Path(__file__).parent / "plans"
SOURCE = "plans/x.yaml"


def plan_error(text: str) -> PlanFileError:
    """Parse a (dedented) plan that must fail; check the one-line `file:line:col:` form."""
    with pytest.raises(PlanFileError) as info:
        parse_plan(textwrap.dedent(text), source=SOURCE, known_tools=TOOLS)
    error = info.value
    rendered = str(error)
    assert "\n" not in rendered
    assert error.line is not None
    assert error.column is not None
    assert rendered.startswith(f"{SOURCE}:{error.line}:{error.column}: ")
    assert rendered == f"{SOURCE}:{error.line}:{error.column}: {error.message}"
    return error


# --------------------------------------------------------------------------- the malformed plans
# Each case: the plan, the 1-based line to blame, fragments the message must contain, and the
# type of the underlying cause.

MALFORMED = {
    "yaml syntax error": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
           args: {cmd: ls}
        """,
        5,
        ["invalid YAML", "expected <block end>"],
        yaml.YAMLError,
    ),
    "unclosed flow mapping": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            args: {cmd: ls
        """,
        6,
        ["invalid YAML", "flow mapping at line 5"],
        yaml.YAMLError,
    ),
    "tab indentation": (
        "name: x\nstars:\n\t- id: a\n",
        3,
        ["invalid YAML", "'\\t'"],
        yaml.YAMLError,
    ),
    "unknown tool": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
          - id: b
            tool: shel.run
        """,
        6,
        ["star 'b' uses unknown tool 'shel.run'", "known tools: fs.list, fs.read"],
        UnknownTool,
    ),
    "instruction star without agent.do": (
        """\
        name: x
        stars:
          - id: a
            instruction: tidy the downloads folder
        """,
        4,
        ["star 'a' uses unknown tool 'agent.do'"],
        UnknownTool,
    ),
    "cycle": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            after: [b]
          - id: b
            tool: shell.run
            after: [a]
        """,
        8,
        ["cycle a -> b -> a"],
        CycleDetected,
    ),
    "cycle through explicit lines": (
        """\
        name: x
        stars:
          - {id: a, tool: shell.run}
          - {id: b, tool: shell.run}
        lines:
          - {from: a, to: b}
          - {from: b, to: a, kind: completion}
        """,
        7,
        ["cycle", "a", "b"],
        CycleDetected,
    ),
    "duplicate star id": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
          - id: b
            tool: shell.run
          - id: a
            tool: fs.read
        """,
        7,
        ["star id 'a' is used twice"],
        DuplicateStarId,
    ),
    "reference to an unknown star": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            args:
              cmd: echo ${ghost.output.stdout}
        """,
        6,
        ["star 'a' refers to ${ghost.output.stdout}", "no star 'ghost'"],
        BadReference,
    ),
    "reference to a star that is not upstream": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
          - id: b
            tool: fs.write
            args:
              path: out.txt
              content: "${a.output.stdout}"
        """,
        9,
        ["star 'b' refers to ${a.output.stdout}", "'a' is not upstream", "after: [a]"],
        BadReference,
    ),
    "malformed reference": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
          - id: b
            after: [a]
            tool: shell.run
            args:
              cmd: [echo, "${a.stdout}"]
        """,
        9,
        ["malformed reference '${a.stdout}'"],
        BadReference,
    ),
    "unknown star in after": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
          - id: b
            tool: shell.run
            after:
              - a
              - c
        """,
        9,
        ["names star 'c', which does not exist"],
        UnknownStar,
    ),
    "unknown star in a line": (
        """\
        name: x
        stars:
          - {id: a, tool: shell.run}
          - {id: b, tool: shell.run}
        lines:
          - from: a
            to: b
            kind: completion
          - from: a
            to: q
        """,
        10,
        ["names star 'q'"],
        UnknownStar,
    ),
    "duplicate line": (
        """\
        name: x
        stars:
          - {id: a, tool: shell.run}
          - {id: b, tool: shell.run}
        lines:
          - {from: a, to: b}
          - {from: a, to: b, kind: completion}
        """,
        7,
        ["two lines join 'a' to 'b'"],
        DuplicateLine,
    ),
    "wrong field type": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            retries: many
        """,
        5,
        ["star 'a': retries:", "valid integer", "(got 'many')"],
        ValidationError,
    ),
    "out of range": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            timeout: -5
        """,
        5,
        ["star 'a': timeout:", "greater than 0", "(got -5)"],
        ValidationError,
    ),
    "unknown field": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            afer: [b]
        """,
        5,
        ["star 'a': unknown field 'afer'", "did you mean 'after'?", "allowed: id, title"],
        ValidationError,
    ),
    "unknown top-level field": (
        """\
        name: x
        descripton: typo
        stars:
          - {id: a, tool: shell.run}
        """,
        2,
        ["unknown field 'descripton'", "did you mean 'description'?"],
        ValidationError,
    ),
    "unknown field in a selector": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            on:
              labels: [linux]
              os: linux
        """,
        7,
        ["star 'a': unknown field 'os' in 'on'", "allowed: name, labels, platform, gpu"],
        ValidationError,
    ),
    "condition line without when": (
        """\
        name: x
        stars:
          - {id: a, tool: shell.run}
          - {id: b, tool: shell.run}
        lines:
          - from: a
            to: b
            kind: condition
        """,
        6,
        ["line a->b", "a 'condition' line needs a 'when' predicate"],
        ValidationError,
    ),
    "bad predicate deep inside all": (
        """\
        name: x
        stars:
          - {id: a, tool: shell.run}
          - {id: b, tool: shell.run}
        lines:
          - from: a
            to: b
            kind: condition
            when:
              all:
                - {path: output.returncode, op: eq, value: 0}
                - {path: returncode, op: eq, value: 1}
        """,
        12,
        ["line a->b: when.all[1].path", "(got 'returncode')"],
        ValidationError,
    ),
    "unknown predicate op": (
        """\
        name: x
        stars:
          - {id: a, tool: shell.run}
          - {id: b, tool: shell.run}
        lines:
          - from: a
            to: b
            kind: condition
            when: {path: output.returncode, op: equals, value: 0}
        """,
        9,
        ["line a->b: when.op", "(got 'equals')"],
        ValidationError,
    ),
    "star with neither tool nor instruction": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
          - id: b
            args: {cmd: ls}
        """,
        5,
        ["star 'b'", "needs either 'tool'"],
        ValidationError,
    ),
    "on: true is not a selector": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            on: true
        """,
        5,
        ["star 'a': on: expected a device name or a mapping", "(got True)"],
        ValidationError,
    ),
    "missing name": (
        """\
        # no name
        stars:
          - {id: a, tool: shell.run}
        """,
        2,
        ["missing required field 'name'"],
        ValidationError,
    ),
    "empty star list": (
        """\
        name: x
        stars: []
        """,
        2,
        ["stars:", "at least 1 item"],
        ValidationError,
    ),
    "duplicate key": (
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            args: {cmd: ls}
            tool: fs.read
        """,
        6,
        ["duplicate key 'tool' (first given at line 4)"],
        yaml.YAMLError,
    ),
    "duplicate top-level key": (
        """\
        name: x
        stars:
          - {id: a, tool: shell.run}
        name: y
        """,
        4,
        ["duplicate key 'name'"],
        yaml.YAMLError,
    ),
    "control character": (
        'name: x\nstars:\n  - {id: a, tool: shell.run, args: {x: "a\x00b"}}\n',
        3,
        ["control character U+0000"],
        yaml.YAMLError,
    ),
    "top level is a list": (
        """\
        - id: a
          tool: shell.run
        """,
        1,
        ["a plan must be a mapping", "not a list"],
        type(None),
    ),
    "top level is a scalar": ("just words\n", 1, ["not a single value"], type(None)),
    "empty file": ("# only a comment\n", 1, ["plan file is empty"], type(None)),
    "two documents": (
        """\
        name: x
        stars: [{id: a, tool: shell.run}]
        ---
        name: y
        """,
        3,
        ["expected a single document"],
        yaml.YAMLError,
    ),
    "binary value": (
        """\
        name: x
        stars:
          - id: a
            tool: fs.write
            args: {path: x, content: !!binary aGVsbG8=}
        """,
        5,
        ["!!binary is not supported"],
        yaml.YAMLError,
    ),
    "recursive alias": (
        """\
        name: x
        stars:
          - &me
            id: a
            tool: shell.run
            args: {self: *me}
        """,
        3,
        ["alias refers to the value that contains it"],
        type(None),
    ),
}


@pytest.mark.parametrize(
    ("text", "line", "fragments", "cause"), list(MALFORMED.values()), ids=list(MALFORMED)
)
def test_malformed_plan_is_located(
    text: str, line: int, fragments: list[str], cause: type[BaseException]
) -> None:
    error = plan_error(text)
    assert error.line == line, str(error)
    for fragment in fragments:
        assert fragment in error.message, str(error)
    assert isinstance(error.cause, cause)
    assert error.source == SOURCE


def test_a_reference_in_an_instruction_is_checked_and_located() -> None:
    text = """\
        name: x
        stars:
          - id: a
            tool: shell.run
          - id: b
            args: {max_steps: 2}
            instruction: "summarise ${a.output.stdout}"
        """
    with pytest.raises(PlanFileError) as info:
        parse_plan(textwrap.dedent(text), source=SOURCE, known_tools={*TOOLS, "agent.do"})
    assert info.value.location == ("stars", 1, "instruction")
    assert (info.value.line, info.value.column) == (7, 18)
    assert "star 'b' refers to ${a.output.stdout}" in info.value.message
    assert "'a' is not upstream" in info.value.message


def test_column_points_at_the_offending_value() -> None:
    error = plan_error(
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
          - id: b
            tool: shel.run
        """
    )
    assert (error.line, error.column) == (6, 11)
    assert str(error).startswith("plans/x.yaml:6:11: star 'b' uses unknown tool 'shel.run'")
    assert error.location == ("stars", 1, "tool")
    assert isinstance(error.cause, ConstellationError)
    assert error.cause.item == "shel.run"


def test_unknown_field_points_at_the_key() -> None:
    error = plan_error("name: x\nstars:\n  - {id: a, tool: shell.run, bogus: 1}\n")
    assert (error.line, error.column) == (3, 30)
    assert error.location == ("stars", 0, "bogus")


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    error = plan_error(
        """\
        name: x
        stars:
          - id: a
            tool: shell.run
            retries: -1
          - id: b
            tool: Shell
        """
    )
    assert error.line == 5
    assert error.message.endswith("(and 1 more problem)")


# --------------------------------------------------------------------------- the YAML dialect


def test_on_key_is_a_selector_not_a_boolean() -> None:
    spec = parse_plan_spec(
        """\
name: x
stars:
  - id: a
    tool: shell.run
    on: laptop
  - id: b
    tool: shell.run
    on: {labels: [linux, on, off], gpu: true}
    allow_failure: True
    args: {flag: yes, other: no, y: n, date: 2024-05-01, nil: null, f: 1.5, e: 1e3}
  - id: c
    tool: shell.run
    args: {n: 010, mode: 0644, time: "12:30", t: 12:30, o: 0o17, x: 0x1F, big: 1_000, neg: -3}
"""
    )
    assert spec.stars[0].on == DeviceSelector(name="laptop")
    assert spec.stars[1].on == DeviceSelector(labels=("linux", "on", "off"), gpu=True)
    assert spec.stars[1].allow_failure is True
    assert spec.stars[1].args == {
        "flag": "yes",
        "other": "no",
        "y": "n",
        "date": "2024-05-01",
        "nil": None,
        "f": 1.5,
        "e": "1e3",  # YAML 1.1 floats need a dot
    }
    assert spec.stars[2].args == {
        "n": "010",
        "mode": "0644",
        "time": "12:30",
        "t": "12:30",
        "o": 15,
        "x": 31,
        "big": 1000,
        "neg": -3,
    }


def test_on_yes_is_a_device_name() -> None:
    spec = parse_plan_spec("name: x\nstars:\n  - {id: a, tool: shell.run, on: yes}\n")
    assert spec.stars[0].on == DeviceSelector(name="yes")


def test_merge_keys_still_work_and_may_override() -> None:
    spec = parse_plan_spec(
        """\
name: x
stars:
  - &base {id: a, tool: shell.run, retries: 2, args: {cmd: ls}}
  - <<: *base
    id: b
    retries: 3
"""
    )
    assert [(s.id, s.retries, s.args) for s in spec.stars] == [
        ("a", 2, {"cmd": "ls"}),
        ("b", 3, {"cmd": "ls"}),
    ]


def test_alias_bomb_is_refused() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 7):
        levels.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]")
    error = plan_error("\n".join(levels) + "\n")
    assert "more than 100000 values" in error.message


def test_too_large_text_is_refused() -> None:
    text = "name: x\ndescription: " + "x" * MAX_PLAN_BYTES + "\nstars: []\n"
    with pytest.raises(PlanFileError, match="larger than 1024 KiB") as info:
        parse_plan(text, source="big.yaml")
    assert str(info.value).startswith("big.yaml: plan file is larger")


def test_too_deeply_nested_is_refused() -> None:
    depth = 5000
    text = "name: x\nstars:\n  - {id: a, tool: shell.run, args: {x: " + "[" * depth
    text += "]" * depth + "}}\n"
    with pytest.raises(PlanFileError, match="nested too deeply"):
        parse_plan(text)


# --------------------------------------------------------------------------- files


def test_load_plan_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstars:\n  - id: a\n    tool: fs.rd\n", encoding="utf-8")
    with pytest.raises(PlanFileError) as info:
        load_plan(path, known_tools=TOOLS)
    assert str(info.value).startswith(f"{path}:4:11: star 'a' uses unknown tool 'fs.rd'")
    assert info.value.source == str(path)


@pytest.mark.parametrize(
    ("name", "line", "fragment"),
    [
        ("unknown-tool.yaml", 10, "star 'b' uses unknown tool 'shel.run'"),
        ("syntax-error.yaml", 6, "flow mapping at line 5"),
        ("cycle.yaml", 14, "cycle fetch -> parse -> store -> fetch"),
    ],
)
def test_fixture_files(name: str, line: int, fragment: str) -> None:
    path = FIXTURES / name
    with pytest.raises(PlanFileError) as info:
        load_plan(path, known_tools=TOOLS)
    rendered = str(info.value)
    assert re.match(rf"^{re.escape(str(path))}:{line}:\d+: ", rendered), rendered
    assert fragment in rendered


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PlanFileError) as info:
        load_plan(path)
    error = info.value
    assert (error.line, error.column) == (None, None)
    assert str(error) == f"{path}: cannot read plan file: No such file or directory"
    assert isinstance(error.cause, FileNotFoundError)


def test_large_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * MAX_PLAN_BYTES)
    with pytest.raises(PlanFileError, match="larger than 1024 KiB"):
        load_plan(path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\ndescription: caf\xe9\n")
    with pytest.raises(PlanFileError) as info:
        load_plan_spec(path)
    assert str(info.value) == f"{path}:2:17: plan file is not UTF-8 text"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffname: café\nstars: [{id: a, tool: fs.list}]\n".encode())
    assert load_plan_spec(path).name == "café"


# --------------------------------------------------------------------------- the samples


def test_there_are_samples() -> None:
    names = {path.name for path in SAMPLES}
    assert {"parallel-report.yaml", "failure-cleanup.yaml", "conditional-alert.yaml"} <= names


@pytest.mark.parametrize("path", SAMPLES, ids=[path.name for path in SAMPLES])
def test_sample_plan_loads(path: Path) -> None:
    constellation = load_plan(path, known_tools=TOOLS)
    assert constellation.name == path.stem
    assert constellation.description
    assert all(star.status is StarStatus.PENDING for star in constellation.stars.values())
    spec = load_plan_spec(path)
    assert parse_plan_spec(plan_to_yaml(spec)) == spec


def test_parallel_report_shape() -> None:
    built = load_plan(ROOT / "resources/plans/parallel-report.yaml", known_tools=TOOLS)
    roots = [sid for sid in built.stars if not built.incoming(sid)]
    assert len(roots) >= 3
    summary = next(s for s in built.stars.values() if s.tool == "fs.write")
    assert {line.source for line in built.incoming(summary.id)} == set(roots)
    assert "${" in summary.args["content"]
    assert any(s.tool == "fs.read" for s in built.stars.values())


def test_failure_cleanup_shape() -> None:
    built = load_plan(ROOT / "resources/plans/failure-cleanup.yaml", known_tools=TOOLS)
    failing = built.stars["load_config"]
    assert failing.tool == "fs.read"
    assert failing.retries == 1
    assert not failing.allow_failure
    kinds = {line.target: line.kind for line in built.outgoing("load_config")}
    assert LineKind.COMPLETION in kinds.values()
    assert LineKind.SUCCESS in kinds.values()


def test_conditional_alert_shape() -> None:
    built = load_plan(ROOT / "resources/plans/conditional-alert.yaml", known_tools=TOOLS)
    assert built.stars["check"].args["check"] is False
    conditions = [line for line in built.outgoing("check") if line.kind is LineKind.CONDITION]
    assert {line.target for line in conditions} == {"alert", "ok"}
    failed = {"returncode": 1, "stdout": "/dev/x 100%\n"}
    passed = {"returncode": 0, "stdout": "/dev/x 20%\n"}
    for output, runs in ((failed, "alert"), (passed, "ok")):
        outcome = {"status": "succeeded", "output": output, "error": None}
        chosen = {line.target for line in conditions if line.when and line.when.evaluate(outcome)}
        assert chosen == {runs}


# --------------------------------------------------------------------------- round trip


def test_plan_to_yaml_is_readable_and_round_trips() -> None:
    text = """\
name: demo
stars:
  - id: a
    tool: python.run
    on: laptop
    args:
      code: |
        print("on")
        print("yes")
  - id: b
    after: [a]
    instruction: "summarise ${a.output.stdout}"
    on: {labels: [linux]}
lines:
  - {from: a, to: c, kind: condition, when: {not: {path: output.returncode, value: 0}}}
  - {from: b, to: c, kind: completion}
"""
    text += "  - {from: a, to: d}\n"
    text = text.replace("lines:", "  - {id: c, tool: fs.list}\n  - {id: d, tool: fs.list}\nlines:")
    spec = parse_plan_spec(text)
    dumped = plan_to_yaml(spec)
    assert "on: laptop" in dumped
    assert "'on'" not in dumped
    assert "code: |" in dumped
    assert "from: a" in dumped
    assert "not:" in dumped
    assert "retries" not in dumped  # defaults are left out
    assert parse_plan_spec(dumped) == spec
    assert parse_plan(dumped, known_tools=TOOLS | {"agent.do"}).stars["b"].tool is None


_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")) | st.just("\n"),
    max_size=40,
)
_SCALAR = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | _TEXT
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    name=_TEXT.filter(lambda s: s.strip() != "" and len(s) <= 200),
    args=st.dictionaries(_TEXT, _VALUE, max_size=4),
    labels=st.lists(_TEXT, max_size=3),
)
def test_plan_to_yaml_round_trips_any_values(
    name: str, args: dict[str, object], labels: list[str]
) -> None:
    spec = PlanSpec.model_validate(
        {
            "name": name,
            "stars": [{"id": "a", "tool": "shell.run", "args": args, "on": {"labels": labels}}],
        }
    )
    assert parse_plan_spec(plan_to_yaml(spec)) == spec
