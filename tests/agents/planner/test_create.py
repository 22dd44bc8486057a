"""Plan creation with a scripted model: valid plans, repairs, and rejections."""

from __future__ import annotations

import json

import pytest

from agents.constellation import DeviceSelector
from agents.models.backend import Completion
from agents.planner.errors import NoCapableDevice, PlanRejected
from agents.planner.planner import Planner
from devices.registry import DeviceInfo
from tests.agents.planner.scripted import ScriptedModel, context, plan_json, star

REQUEST = "show the disk usage of the laptop and the nas, then write a summary on the laptop"


async def test_a_valid_plan_is_accepted_at_once() -> None:
    model = ScriptedModel(
        [
            plan_json(
                star("s1", on="laptop", cmd="df -h"),
                star("s2", on="nas", cmd="df -h"),
                star(
                    "s3",
                    tool="fs.write",
                    on="any",
                    after=["s1", "s2"],
                    path="du.txt",
                    content="${s1.output.stdout} ${s2.output.stdout}",
                ),
                rationale="two checks in parallel, then the summary",
            )
        ]
    )
    outcome = await Planner(model).create(REQUEST, context())
    assert outcome.attempts == 1
    assert outcome.problems == []
    assert outcome.rationale == "two checks in parallel, then the summary"
    stars = outcome.constellation.stars
    assert list(stars) == ["s1", "s2", "s3"]
    assert stars["s1"].on == DeviceSelector(name="laptop")
    assert stars["s3"].on is None  # `any`: the orchestrator picks a capable device
    assert {line.key for line in outcome.constellation.lines} == {("s1", "s3"), ("s2", "s3")}
    assert outcome.constellation.rationale == outcome.rationale
    assert outcome.constellation.name == REQUEST[:79] + "…"


async def test_malformed_json_is_repaired_with_the_problem_fed_back() -> None:
    broken = '{"rationale": "x", "stars": [{"id": "s1"'
    model = ScriptedModel([broken, plan_json(star("s1"))])
    outcome = await Planner(model).create("say hi on the laptop", context())
    assert outcome.attempts == 2
    assert "not valid JSON" in outcome.problems[0]
    repair = model.calls[1].messages
    assert repair[-2] == {"role": "assistant", "content": broken}
    assert "rejected" in repair[-1]["content"]
    assert "not valid JSON" in repair[-1]["content"]


async def test_a_cyclic_plan_is_repaired() -> None:
    cyclic = plan_json(star("s1", after=["s2"]), star("s2", after=["s1"]))
    model = ScriptedModel([cyclic, plan_json(star("s1"), star("s2", after=["s1"]))])
    outcome = await Planner(model).create("two steps", context())
    assert outcome.attempts == 2
    assert "cycle" in outcome.problems[0]
    assert list(outcome.constellation.stars) == ["s1", "s2"]


@pytest.mark.parametrize(
    ("bad_star", "problem"),
    [
        (star("s1", tool="net.scan"), "no connected device offers tool 'net.scan'"),
        (star("s1", tool="fs.write", path="x.txt"), "'content' is a required property"),
        (star("s1", on="mainframe"), "device 'mainframe' is not connected"),
        (
            star("s1", tool="fs.write", on="winbox", path="a", content="b"),
            "no connected device can run it",
        ),
        (star("s1", tool="fs.read", path="a", max_bytes=0), "argument max_bytes"),
        (
            {"id": "s1", "title": "t", "tool": "shell.run", "args": {"cmd": "x"}, "colour": "red"},
            "colour",
        ),
        (star("s1", cmd="cat ${s9.output}"), "no star 's9'"),
    ],
)
async def test_schema_violations_are_rejected_after_bounded_repairs(
    bad_star: dict[str, object], problem: str
) -> None:
    model = ScriptedModel([plan_json(bad_star)] * 3)
    with pytest.raises(PlanRejected) as caught:
        await Planner(model, max_repairs=2).create("anything", context())
    assert len(model.calls) == 3  # one try and two repairs, then a clear refusal
    assert len(caught.value.reasons) == 3
    assert problem in caught.value.reasons[-1]
    assert problem in str(caught.value)
    assert "larger model" in str(caught.value)


async def test_a_cut_off_plan_asks_again_for_fewer_stars() -> None:
    cut = Completion('{"rationale": "a", "stars": [', "length", 1536, 0, 0.0, 0.0)
    model = ScriptedModel([cut, plan_json(star("s1"))])
    outcome = await Planner(model, max_stars=8).create("a lot", context())
    assert "cut off" in outcome.problems[0]
    first, second = (call.schema for call in model.calls)
    assert first is not None
    assert second is not None
    assert len(first["properties"]["stars"]["anyOf"]) == 8
    assert len(second["properties"]["stars"]["anyOf"]) == 4


async def test_a_plan_that_is_not_an_object_is_rejected() -> None:
    model = ScriptedModel([json.dumps([1, 2]), json.dumps({"rationale": "r", "stars": []})])
    with pytest.raises(PlanRejected) as caught:
        await Planner(model, max_repairs=1).create("x", context())
    assert "must be a JSON object" in caught.value.reasons[0]
    assert "non-empty list 'stars'" in caught.value.reasons[1]


async def test_an_empty_request_and_a_fleet_without_tools_are_refused() -> None:
    model = ScriptedModel([])
    with pytest.raises(PlanRejected, match="request is empty"):
        await Planner(model).create("   ", context())
    bare = context([DeviceInfo(name="idle", tools=frozenset())])
    with pytest.raises(NoCapableDevice, match="idle"):
        await Planner(model).create("do it", bare)
    assert model.calls == []


async def test_a_star_referring_to_its_own_output_is_told_so() -> None:
    own = plan_json(star("s1", tool="fs.write", path="a.txt", content="${s1.output.content}"))
    model = ScriptedModel([own, plan_json(star("s1"))])
    outcome = await Planner(model).create("write a file", context())
    assert "its own output" in outcome.problems[0]
    assert "after: [s1]" not in outcome.problems[0]  # no advice to depend on itself


async def test_a_reference_to_an_earlier_star_implies_the_dependency() -> None:
    model = ScriptedModel(
        [
            plan_json(
                star("s1", tool="fs.read", path="notes.txt"),
                star("s2", tool="fs.write", on="nas", path="notes.txt",
                     content="${s1.output.content}"),
            )
        ]
    )  # fmt: skip
    outcome = await Planner(model).create("copy notes.txt to the nas", context())
    assert outcome.attempts == 1
    assert outcome.spec.stars[1].after == ["s1"]
    assert [line.key for line in outcome.constellation.lines] == [("s1", "s2")]


async def test_the_last_attempt_rules_out_references_by_grammar() -> None:
    bad = plan_json(star("s1", cmd="cat ${s1.output.stdout}"))
    model = ScriptedModel([bad, bad, plan_json(star("s1", cmd="ls"))])
    outcome = await Planner(model, max_repairs=2).create("list things", context())
    assert outcome.attempts == 3
    first, second, last = model.calls
    assert first.schema is not None
    assert first.grammar is None
    assert second.grammar is None
    assert last.schema is None
    assert last.grammar is not None
    assert 'char ::= [^"\\\\$' in last.grammar  # no "$" in any string
    assert "no ${...} references" not in second.messages[-1]["content"]
    assert "no ${...} references" in last.messages[-1]["content"]
