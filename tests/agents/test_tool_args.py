"""`ToolArgsChecker`: a task's args against the schemas one device announced."""

from __future__ import annotations

from typing import Any

from agents.tool_args import ToolArgsChecker
from devices.tools import default_tools
from protocol.tasks import TaskAssignment


def task(tool: str, **args: Any) -> TaskAssignment:
    return TaskAssignment(
        constellation_id="c", star_id="s", attempt=2, device="box", tool=tool, args=args
    )


def test_fitting_args_pass_and_a_field_at_fault_is_named() -> None:
    checker = ToolArgsChecker("box", default_tools().schemas())
    assert checker.problem(task("shell.run", cmd="ls", env={"A": "1"})) is None
    problem = checker.problem(task("shell.run", cmd="ls", env={"A": 1}))
    assert problem is not None
    assert problem.startswith("star 's': invalid arguments for shell.run: args.env.A: 1 is ")
    assert problem.endswith("the schema device 'box' announced for it")


def test_many_problems_are_counted_beyond_three() -> None:
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in "abcde"}}
    checker = ToolArgsChecker("box", {"t.t": schema})
    problem = checker.problem(task("t.t", a=1, b=2, c=3, d=4, e=5))
    assert problem is not None
    assert problem.count("is not of type 'string'") == 3
    assert "(and 2 more)" in problem


def test_a_tool_the_device_did_not_announce_is_not_sent() -> None:
    checker = ToolArgsChecker("box", {"fs.read": {}})
    assert checker.problem(task("fs.read", anything=1)) is None  # {} accepts anything
    assert checker.problem(task("shell.run", cmd="ls")) == (
        "star 's': device 'box' has no tool 'shell.run'; it offers: fs.read"
    )


def test_a_schema_that_is_no_schema_fails_saying_so() -> None:
    checker = ToolArgsChecker("box", {"t.t": {"type": "no-such-type"}})
    problem = checker.problem(task("t.t"))
    assert problem is not None
    assert problem.startswith("star 's': cannot check the arguments for t.t: the schema device")
    assert "is not a usable JSON Schema" in problem
    unresolvable = ToolArgsChecker("box", {"t.t": {"$ref": "https://example.org/x.json"}})
    problem = unresolvable.problem(task("t.t"))
    assert problem is not None
    assert "is not a usable JSON Schema" in problem
