"""The constellation model, `when:` predicates, `${...}` references and `build_constellation`."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from agents.constellation.build import build_constellation
from agents.constellation.errors import (
    BadReference,
    ConstellationError,
    CycleDetected,
    DuplicateLine,
    DuplicateStarId,
    UnknownStar,
    UnknownTool,
)
from agents.constellation.model import (
    Constellation,
    DeviceSelector,
    IllegalTransition,
    Line,
    LineKind,
    PlanSpec,
    StarSpec,
    StarStatus,
    constellation_json_schema,
    lines_of,
)
from agents.constellation.predicate import (
    MISSING,
    All,
    Any_,
    Compare,
    CompareOp,
    Not,
    Predicate,
    evaluate_condition,
    resolve_path,
)
from agents.constellation.references import (
    Reference,
    ReferenceSyntaxError,
    UnresolvedReference,
    iter_references,
    parse_reference,
    resolve_references,
)

TOOLS = {"shell.run", "python.run", "fs.read", "fs.write", "fs.list"}
PREDICATE = TypeAdapter(Predicate)


def star(star_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": star_id, "tool": "shell.run", "args": {"cmd": "true"}, **fields}


def plan(*stars: dict[str, Any], lines: list[dict[str, Any]] | None = None) -> PlanSpec:
    return PlanSpec.model_validate({"name": "test", "stars": list(stars), "lines": lines or []})


# --------------------------------------------------------------------------- predicates

SUBJECT: dict[str, Any] = {
    "status": "succeeded",
    "output": {
        "returncode": 0,
        "stdout": "hello world\n",
        "count": 5,
        "ratio": 0.5,
        "items": [{"name": "a"}, {"name": "b"}],
        "tags": ["x", "y"],
        "empty": "",
        "nothing": None,
    },
    "error": None,
}


def compare(path: str, op: str, value: Any = None) -> bool:
    return Compare(path=path, op=CompareOp(op), value=value).evaluate(SUBJECT)


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("output.returncode", "eq", 0, True),
        ("output.returncode", "eq", 1, False),
        ("status", "eq", "succeeded", True),
        ("output.returncode", "ne", 1, True),
        ("output.returncode", "ne", 0, False),
        ("output.count", "lt", 6, True),
        ("output.count", "lt", 5, False),
        ("output.count", "le", 5, True),
        ("output.count", "le", 4, False),
        ("output.count", "gt", 4, True),
        ("output.count", "gt", 5, False),
        ("output.count", "ge", 5, True),
        ("output.ratio", "ge", 0.75, False),
        ("output.stdout", "contains", "world", True),
        ("output.stdout", "contains", "mars", False),
        ("output.tags", "contains", "x", True),
        ("output.stdout", "not_contains", "mars", True),
        ("output.tags", "not_contains", "x", False),
        ("output.stdout", "matches", r"^hello\s+w", True),
        ("output.stdout", "matches", r"^world", False),
        ("output.count", "in", [1, 5, 9], True),
        ("output.count", "in", [1, 2], False),
        ("status", "in", "succeeded or failed", True),
        ("output.count", "not_in", [1, 2], True),
        ("output.count", "not_in", [5], False),
        ("output.stdout", "exists", None, True),
        ("output.nothing", "exists", None, True),
        ("output.absent", "exists", None, False),
        ("output.absent", "missing", None, True),
        ("output.stdout", "missing", None, False),
        ("output.stdout", "truthy", None, True),
        ("output.empty", "truthy", None, False),
        ("output.empty", "falsy", None, True),
        ("output.nothing", "falsy", None, True),
        ("output.count", "falsy", None, False),
    ],
)
def test_each_compare_op(path: str, op: str, value: Any, expected: bool) -> None:
    assert compare(path, op, value) is expected


@pytest.mark.parametrize(
    ("path", "op", "value"),
    [
        ("output.stdout", "lt", 3),  # str < int
        ("output.count", "ge", "4"),  # int >= str
        ("output.count", "eq", "5"),  # no coercion
        ("output.items", "gt", 1),
        ("output.count", "contains", 5),  # int is no container
        ("output.count", "not_contains", 5),
        ("output.count", "matches", "5"),  # regex against a number
        ("output.count", "in", 5),  # right side is no container
        ("output.count", "not_in", 7),
        ("output.items", "in", "abc"),  # list in str: TypeError
        ("output.items", "not_in", "abc"),
    ],
)
def test_type_mismatch_is_false_not_an_error(path: str, op: str, value: Any) -> None:
    assert compare(path, op, value) is False


@pytest.mark.parametrize("op", [op.value for op in CompareOp if op.value != "missing"])
def test_unresolved_path_is_false_for_every_op_but_missing(op: str) -> None:
    value = "x" if op == "matches" else None
    assert compare("output.nope.deeper", op, value) is False


def test_paths_into_lists() -> None:
    assert compare("output.items.1.name", "eq", "b")
    assert compare("output.items.-1.name", "eq", "b")
    assert compare("output.tags.0", "eq", "x")
    assert compare("output.items.2.name", "exists") is False
    assert compare("output.items.name", "missing")  # a list takes indices only
    assert resolve_path(SUBJECT, "output.stdout.0") is MISSING  # no indexing into strings
    assert resolve_path({"a": [[1, 2], [3]]}, "a.0.1") == 2
    assert resolve_path({"a": (1, 2)}, "a.-3") is MISSING


def test_combinators_and_their_yaml_shapes() -> None:
    both = PREDICATE.validate_python(
        {
            "all": [
                {"path": "status", "op": "eq", "value": "succeeded"},
                {"path": "output.returncode", "value": 0},  # op defaults to eq
            ]
        }
    )
    assert isinstance(both, All)
    assert both.evaluate(SUBJECT)
    either = PREDICATE.validate_python(
        {
            "any": [
                {"path": "output.count", "op": "gt", "value": 10},
                {"path": "error", "op": "falsy"},
            ]
        }
    )
    assert isinstance(either, Any_)
    assert either.evaluate(SUBJECT)
    negated = PREDICATE.validate_python({"not": {"path": "output.count", "op": "eq", "value": 5}})
    assert isinstance(negated, Not)
    assert not negated.evaluate(SUBJECT)
    assert negated.model_dump(by_alias=True) == {
        "not": {"path": "output.count", "op": "eq", "value": 5}
    }
    assert evaluate_condition(either, "failed", None, "boom") is False


def test_evaluate_condition_sees_status_output_and_error() -> None:
    failed = Compare(path="error", op=CompareOp.CONTAINS, value="timeout")
    assert evaluate_condition(failed, "failed", None, "attempt hit its timeout")
    assert not evaluate_condition(failed, "succeeded", {"x": 1}, None)


@pytest.mark.parametrize(
    "data",
    [
        {"path": "stdout", "op": "eq", "value": 1},  # must start at status/output/error
        {"path": "output.x", "op": "equals"},
        {"path": "output.x", "op": "matches", "value": "("},  # does not compile
        {"path": "output.x", "op": "matches", "value": 3},
        {"path": "output.x", "op": "contains", "value": "x" * 600},
        {"all": []},
        {"path": "output.x", "extra": 1},
    ],
)
def test_invalid_predicates_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PREDICATE.validate_python(data)


# --------------------------------------------------------------------------- model


def test_device_selector_shorthand_and_any() -> None:
    spec = StarSpec.model_validate(star("a", on="laptop"))
    assert spec.on == DeviceSelector(name="laptop")
    assert not spec.on.is_any
    assert DeviceSelector().is_any
    assert not DeviceSelector(labels=("gpu",)).is_any
    with pytest.raises(ValidationError):
        DeviceSelector.model_validate({"name": "x", "cpu": 4})


def test_star_needs_exactly_one_of_tool_and_instruction() -> None:
    with pytest.raises(ValidationError, match="either 'tool'"):
        StarSpec.model_validate({"id": "a"})
    with pytest.raises(ValidationError, match="not both"):
        StarSpec.model_validate({"id": "a", "tool": "shell.run", "instruction": "do it"})
    agent = StarSpec.model_validate({"id": "a", "instruction": "tidy up", "args": {"max_steps": 2}})
    assert agent.effective_tool == "agent.do"
    assert agent.effective_args == {"goal": "tidy up", "max_steps": 2}
    with pytest.raises(ValidationError, match="leave 'goal' out"):
        StarSpec.model_validate({"id": "a", "instruction": "tidy up", "args": {"goal": "x"}})
    tool = StarSpec.model_validate(star("b"))
    assert tool.effective_tool == "shell.run"
    assert tool.effective_args == {"cmd": "true"}


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "1abc"},
        {"id": "a b"},
        {"tool": "Shell.Run"},
        {"tool": "shell"},
        {"retries": -1},
        {"timeout": 0},
        {"priority": 5000},
        {"after": ["x", "x"]},
        {"bogus": 1},
    ],
)
def test_star_field_rules(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        StarSpec.model_validate({**star("a"), **fields})


def test_line_rules_and_aliases() -> None:
    line = Line.model_validate({"from": "a", "to": "b"})
    assert (line.source, line.target, line.kind) == ("a", "b", LineKind.SUCCESS)
    assert Line(source="a", target="b") == line  # populate by field name as well
    assert line.model_dump(by_alias=True)["from"] == "a"
    assert line.label() == "a->b (success)"
    with pytest.raises(ValidationError, match="needs a 'when'"):
        Line.model_validate({"from": "a", "to": "b", "kind": "condition"})
    with pytest.raises(ValidationError, match="takes no 'when'"):
        Line.model_validate(
            {"from": "a", "to": "b", "kind": "completion", "when": {"path": "status"}}
        )
    with pytest.raises(ValidationError, match="to itself"):
        Line.model_validate({"from": "a", "to": "a"})


def test_plan_needs_a_name_and_a_star() -> None:
    with pytest.raises(ValidationError):
        PlanSpec.model_validate({"name": "x", "stars": []})
    with pytest.raises(ValidationError):
        PlanSpec.model_validate({"stars": [star("a")]})


def test_lines_of_expands_after_and_explicit_lines_win() -> None:
    spec = plan(
        star("a"),
        star("b", after=["a"]),
        star("c", after=["a", "b"]),
        lines=[{"from": "b", "to": "c", "kind": "completion"}],
    )
    lines = {line.key: line.kind for line in lines_of(spec)}
    assert lines == {
        ("a", "b"): LineKind.SUCCESS,
        ("a", "c"): LineKind.SUCCESS,
        ("b", "c"): LineKind.COMPLETION,
    }


def test_status_transitions_only_move_forward() -> None:
    built = build_constellation(plan(star("a")))
    a = built.stars["a"]
    a.move_to(StarStatus.READY)
    a.move_to(StarStatus.RUNNING)
    a.move_to(StarStatus.SUCCEEDED)
    assert a.status.terminal
    assert a.status.started
    with pytest.raises(IllegalTransition):
        a.move_to(StarStatus.RUNNING)
    assert not StarStatus.PENDING.started
    assert not StarStatus.READY.terminal


# --------------------------------------------------------------------------- JSON


def test_plan_spec_json_round_trip() -> None:
    spec = plan(
        star("a", on={"labels": ["linux"], "gpu": True}, retries=2, timeout=30.5),
        {"id": "b", "instruction": "summarise ${a.output.stdout}", "after": ["a"]},
        star("c", allow_failure=True, estimate=3),
        lines=[
            {
                "from": "a",
                "to": "c",
                "kind": "condition",
                "when": {"not": {"any": [{"path": "output.returncode", "op": "ne", "value": 0}]}},
            }
        ],
    )
    text = spec.model_dump_json(by_alias=True)
    assert '"from":"a"' in text
    assert '"not":' in text
    assert PlanSpec.model_validate_json(text) == spec


def test_constellation_json_round_trip() -> None:
    spec = plan(
        star("a", on="laptop"),
        star("b", after=["a"], args={"cmd": "echo ${a.output.stdout}"}),
        lines=[
            {"from": "a", "to": "c", "kind": "condition", "when": {"path": "status", "value": "x"}}
        ],
    )
    spec.stars.append(StarSpec.model_validate(star("c")))
    built = build_constellation(spec, constellation_id="c1")
    built.stars["a"].move_to(StarStatus.READY)
    built.stars["a"].output = {"stdout": "hi", "list": [1, 2.5, None]}
    again = Constellation.model_validate_json(built.canonical_json())
    assert again == built
    assert again.canonical_json() == built.canonical_json()
    assert json.loads(built.canonical_json())["lines"][0] == {
        "from": "a",
        "to": "b",
        "kind": "success",
        "when": None,
    }


def test_json_schema_describes_plans() -> None:
    schema = constellation_json_schema()
    json.dumps(schema)  # plain JSON data
    assert schema["type"] == "object"
    assert {"name", "stars"} <= set(schema["required"])
    assert "$defs" in schema
    star_props = schema["$defs"]["StarSpec"]["properties"]
    assert {"id", "tool", "args", "instruction", "on", "after", "retries", "timeout"} <= set(
        star_props
    )
    assert star_props["id"]["pattern"].startswith("^")
    line_props = schema["$defs"]["Line"]["properties"]
    assert {"from", "to", "kind", "when"} <= set(line_props)
    assert schema["$defs"]["StarSpec"].get("additionalProperties") is False


# --------------------------------------------------------------------------- references


def test_parse_reference() -> None:
    assert parse_reference("${a.output}") == Reference("a", "output", "${a.output}")
    assert parse_reference("${ fetch-1.output.items.0 }").path == "output.items.0"
    assert parse_reference("${a.error}").path == "error"
    for bad in ("${a}", "${a.stdout}", "${a.output.}", "${.output}", "${a.status}", "$a.output"):
        with pytest.raises(ReferenceSyntaxError):
            parse_reference(bad)


def test_iter_references_reports_where() -> None:
    args = {"cmd": "cat ${a.output.path} ${b.output}", "env": {"X": ["${c.error}"]}, "n": 3}
    assert list(iter_references(args, ("args",))) == [
        (("args", "cmd"), "${a.output.path}"),
        (("args", "cmd"), "${b.output}"),
        (("args", "env", "X", 0), "${c.error}"),
    ]


def _lookup(star_id: str) -> tuple[Any, str | None] | None:
    finished: dict[str, tuple[Any, str | None]] = {
        "a": ({"count": 3, "stdout": "hi\n", "rows": [{"v": 1}], "flag": False}, None),
        "f": (None, "boom"),
        "t": (
            {"two": "4\n\n", "crlf": "4\r\n", "bare": "4", "spaced": " 4 \n", "lf": "\n"},
            None,
        ),
    }
    return finished.get(star_id)


def test_whole_reference_keeps_type() -> None:
    resolved = resolve_references(
        {
            "n": "${a.output.count}",
            "rows": "${a.output.rows}",
            "flag": "${a.output.flag}",
            "first": "${a.output.rows.0.v}",
            "error": "${f.error}",
            "plain": 7,
            "nested": ["${a.output.count}"],
            "text": "${a.output.stdout}",
            "two": "${t.output.two}",
        },
        _lookup,
    )
    assert resolved == {
        "n": 3,
        "rows": [{"v": 1}],
        "flag": False,
        "first": 1,
        "error": "boom",
        "plain": 7,
        "nested": [3],
        "text": "hi\n",  # a whole reference is the value as it is, line break included
        "two": "4\n\n",
    }


def test_interpolated_reference_becomes_text() -> None:
    assert resolve_references("n=${a.output.count}!", _lookup) == "n=3!"
    assert resolve_references("rows: ${a.output.rows}", _lookup) == 'rows: [{"v": 1}]'
    assert resolve_references("flag: ${a.output.flag}", _lookup) == "flag: false"
    assert resolve_references("no refs, $ and {} stay", _lookup) == "no refs, $ and {} stay"


@pytest.mark.parametrize(
    ("text", "resolved"),
    [
        ("There are ${a.output.stdout} files here.", "There are hi files here."),
        ("${a.output.stdout}${a.output.count}", "hi3"),
        ("${a.output.stdout}\n${a.output.stdout}\n", "hi\nhi\n"),
        ("[${t.output.two}]", "[4\n]"),  # only one line break goes
        ("[${t.output.crlf}]", "[4]"),
        ("[${t.output.bare}]", "[4]"),
        ("[${t.output.spaced}]", "[ 4 ]"),  # spaces stay
        ("[${t.output.lf}]", "[]"),
    ],
)
def test_interpolated_text_loses_one_trailing_line_break(text: str, resolved: str) -> None:
    assert resolve_references(text, _lookup) == resolved


def test_unresolved_references() -> None:
    with pytest.raises(UnresolvedReference, match="has not finished"):
        resolve_references("${zz.output}", _lookup)
    with pytest.raises(UnresolvedReference, match=r"produced no 'output\.missing'"):
        resolve_references({"x": "value: ${a.output.missing}"}, _lookup)
    with pytest.raises(UnresolvedReference):
        resolve_references("${f.output.stdout}", _lookup)  # failed star: output is None


# --------------------------------------------------------------------------- build


def test_build_gives_a_fresh_constellation() -> None:
    spec = plan(star("a"), star("b", after=["a"]), star("c", after=["a", "b"]))
    built = build_constellation(spec, known_tools=TOOLS, constellation_id="abc")
    assert built.id == "abc"
    assert built.version == 1
    assert built.name == "test"
    assert list(built.stars) == ["a", "b", "c"]
    assert all(s.status is StarStatus.PENDING and s.after == [] for s in built.stars.values())
    assert [line.key for line in built.incoming("c")] == [("a", "c"), ("b", "c")]
    assert [line.key for line in built.outgoing("a")] == [("a", "b"), ("a", "c")]
    assert built.line("b", "c") is not None
    assert built.line("c", "b") is None
    assert built.stars["b"].spec() == StarSpec.model_validate(star("b"))
    assert len(build_constellation(spec).id) == 12


@pytest.mark.parametrize(
    ("stars", "lines", "error", "item", "location", "mention"),
    [
        ([star("a"), star("a")], [], DuplicateStarId, "a", ("stars", 1, "id"), "'a'"),
        (
            [star("a"), star("b", after=["x"])],
            [],
            UnknownStar,
            "x",
            ("stars", 1, "after", 0),
            "'x'",
        ),
        ([star("a"), star("b")], [{"from": "a", "to": "q"}], UnknownStar, "q", ("lines", 0), "'q'"),
        (
            [star("a"), star("b")],
            [{"from": "a", "to": "b"}, {"from": "a", "to": "b", "kind": "completion"}],
            DuplicateLine,
            "a->b (completion)",
            ("lines", 1),
            "'a' to 'b'",
        ),
        (
            [star("a", after=["c"]), star("b", after=["a"]), star("c", after=["b"])],
            [],
            CycleDetected,
            None,
            None,
            "cycle",
        ),
        (
            [star("a"), star("b", tool="shel.run")],
            [],
            UnknownTool,
            "shel.run",
            ("stars", 1, "tool"),
            "star 'b' uses unknown tool 'shel.run'",
        ),
        (
            [star("a"), star("b", args={"content": "${a.output}"})],
            [],
            BadReference,
            "${a.output}",
            ("stars", 1, "args", "content"),
            "not upstream",
        ),
        (
            [star("a", args={"cmd": ["x", "${nope.output}"]})],
            [],
            BadReference,
            "${nope.output}",
            ("stars", 0, "args", "cmd", 1),
            "no star 'nope'",
        ),
        (
            [star("a"), star("b", after=["a"], args={"cmd": "${a.stdout}"})],
            [],
            BadReference,
            "${a.stdout}",
            ("stars", 1, "args", "cmd"),
            "malformed reference",
        ),
    ],
)
def test_build_errors_name_item_and_location(
    stars: list[dict[str, Any]],
    lines: list[dict[str, Any]],
    error: type[ConstellationError],
    item: str | None,
    location: tuple[str | int, ...] | None,
    mention: str,
) -> None:
    with pytest.raises(error, match=re.escape(mention)) as info:
        build_constellation(plan(*stars, lines=lines), known_tools=TOOLS)
    exc = info.value
    if item is not None:
        assert exc.item == item
    if location is not None:
        assert exc.location == location
    else:  # the cycle: closed by one of the `after` entries
        assert exc.location[0] == "stars"
        assert exc.location[2] == "after"
        assert {"a", "b", "c"} <= set(exc.item)


def test_unknown_tools_are_only_checked_with_a_catalogue() -> None:
    spec = plan(star("a", tool="made.up"))
    assert build_constellation(spec).stars["a"].tool == "made.up"
    with pytest.raises(UnknownTool, match=r"known tools: fs\.list"):
        build_constellation(spec, known_tools=TOOLS)


def test_reference_through_a_longer_path_is_upstream() -> None:
    spec = plan(
        star("a"),
        star("b", after=["a"]),
        star("c", after=["b"], args={"cmd": "echo ${a.output.stdout}"}),
    )
    assert build_constellation(spec).stars["c"].args["cmd"] == "echo ${a.output.stdout}"
