"""Remembered plans adapted to the devices connected now: reused, shown as examples, or
named as what not to repeat; never copied onto a fleet without their devices."""

from __future__ import annotations

from typing import Any

from agents.planner.context import PlanningContext
from agents.planner.prompt import plan_messages
from agents.planner.recall import adapt_plan, recall_plans, specifics
from agents.planner.validate import plan_from_output
from devices.registry import DeviceInfo
from devices.tools import default_tools
from memory.recall import Recollection
from memory.tree import RequestRecord

TOOLS = frozenset({"shell.run", "fs.read", "fs.write", "fs.list", "sys.info"})


def device(
    name: str, *labels: str, platform: str = "linux", tools: frozenset[str] = TOOLS
) -> DeviceInfo:
    return DeviceInfo(name=name, platform=platform, labels=frozenset(labels), tools=tools)


def context(*devices: DeviceInfo) -> PlanningContext:
    return PlanningContext.from_devices(devices, default_tools().schemas())


OLD_FLEET = [
    {"name": "laptop", "platform": "linux", "labels": ["desktop"], "tools": sorted(TOOLS)},
    {"name": "nas", "platform": "linux", "labels": ["storage"], "tools": sorted(TOOLS)},
]

COPY_PLAN: dict[str, Any] = {
    "name": "copy",
    "rationale": "read on laptop, write on nas",
    "stars": [
        {
            "id": "write",
            "title": "write it on nas",
            "tool": "fs.write",
            "on": {"name": "nas"},
            "args": {"path": "todo.txt", "content": "${read.output.content}"},
            "after": ["read"],
        },
        {
            "id": "read",
            "title": "read todo.txt on laptop",
            "tool": "fs.read",
            "on": {"name": "laptop"},
            "args": {"path": "todo.txt"},
            "after": [],
        },
    ],
    "lines": [],
}


def summary(
    plan: dict[str, Any] = COPY_PLAN, fleet: list[dict[str, Any]] = OLD_FLEET, **more: Any
) -> dict[str, Any]:
    return {"plan": plan, "fleet": fleet, "outcome": {"status": "succeeded"}, **more}


def found(
    rid: str, text: str, similarity: float, status: str = "succeeded", **fields: Any
) -> Recollection:
    record = RequestRecord(
        id=rid,
        text=text,
        source="request",
        status=status,
        created_at=1.0,
        finished_at=2.0,
        constellation_id="c",
        summary=fields.pop("summary", None) or summary(),
        indexed=True,
        forgotten=False,
    )
    return Recollection(record, similarity)


def test_a_plan_on_the_same_fleet_keeps_its_devices_and_gets_the_planners_ids() -> None:
    here = context(device("laptop", "desktop"), device("nas", "storage"))
    adapted = adapt_plan(summary(), here)
    assert adapted is not None
    assert adapted.devices == {}
    assert adapted.same_roles
    stars = adapted.plan["stars"]
    assert [(s["id"], s["tool"], s["on"], s["after"]) for s in stars] == [
        ("s1", "fs.read", "laptop", []),
        ("s2", "fs.write", "nas", ["s1"]),
    ]
    assert stars[1]["args"]["content"] == "${s1.output.content}"
    spec, constellation = plan_from_output(adapted.plan, here, name="copy todo")
    assert len(constellation.stars) == 2
    assert spec.stars[1].after == ["s1"]


def test_devices_that_are_gone_are_mapped_to_stand_ins_with_their_role_and_renamed() -> None:
    here = context(
        device("desk", "desktop"), device("storage-box", "storage"), device("pi", "sensor")
    )
    adapted = adapt_plan(summary(), here)
    assert adapted is not None
    assert adapted.devices == {"laptop": "desk", "nas": "storage-box"}
    assert adapted.same_roles
    stars = adapted.plan["stars"]
    assert [s["on"] for s in stars] == ["desk", "storage-box"]
    assert stars[0]["title"] == "read todo.txt on desk"
    assert stars[1]["title"] == "write it on storage-box"
    assert adapted.plan["rationale"] == "read on desk, write on storage-box"
    plan_from_output(adapted.plan, here, name="copy todo")  # valid on this fleet


def test_a_plan_is_dropped_where_no_device_can_stand_in() -> None:
    windows_only = context(
        device("till", "till", platform="windows"), device("office", "office", platform="windows")
    )
    assert adapt_plan(summary(), windows_only) is None
    no_writer = context(
        device("laptop", "desktop"), device("nas", "storage", tools=frozenset({"fs.read"}))
    )
    # Only the laptop can write, and it already reads: one device for two changes the plan.
    assert adapt_plan(summary(), no_writer) is None
    two_laptops = context(
        device("laptop", "desktop"), device("spare", "desktop"), device("nas", "storage")
    )
    adapted = adapt_plan(summary(), two_laptops)
    assert adapted is not None
    assert adapted.devices == {}


def test_a_stand_in_by_platform_alone_is_not_the_same_role() -> None:
    here = context(device("laptop", "desktop"), device("web1", "web"))
    adapted = adapt_plan(summary(), here)
    assert adapted is not None
    assert adapted.devices == {"nas": "web1"}
    assert not adapted.same_roles


def test_plans_with_lines_the_planner_cannot_write_are_not_used() -> None:
    plan = {**COPY_PLAN, "lines": [{"from": "read", "to": "write", "kind": "completion"}]}
    here = context(device("laptop", "desktop"), device("nas", "storage"))
    assert adapt_plan(summary(plan), here) is None


def test_a_label_selector_becomes_a_device_that_has_the_labels() -> None:
    plan = {
        "name": "p",
        "stars": [{"id": "x", "tool": "sys.info", "on": {"labels": ["storage"]}, "args": {}}],
    }
    adapted = adapt_plan(summary(plan), context(device("a", "desktop"), device("b", "storage")))
    assert adapted is not None
    assert adapted.plan["stars"][0]["on"] == "b"
    assert adapt_plan(summary(plan), context(device("a", "desktop"))) is None


def test_the_same_request_is_reused_and_similar_ones_are_examples() -> None:
    here = context(device("laptop", "desktop"), device("nas", "storage"))
    recalled = recall_plans(
        [
            found("r-far", "list the inbox", 0.2),
            found("r-near", "copy notes.txt from the laptop to the nas", 0.7),
            found("r-same", "Copy todo.txt from the laptop to the NAS", 0.98),
        ],
        here,
        request="copy todo.txt from the laptop to the nas",
    )
    assert recalled.reuse is not None
    assert recalled.reuse.request_id == "r-same"
    assert [e.request_id for e in recalled.examples] == ["r-near", "r-same"]  # nearest last
    assert recalled.avoid == []
    assert "r-same" in recalled.reuse.describe()


def test_no_reuse_when_a_device_only_stands_in_by_platform() -> None:
    here = context(device("laptop", "desktop"), device("web1", "web"))
    recalled = recall_plans(
        [found("r-same", "copy todo.txt to the nas", 0.99)],
        here,
        request="copy todo.txt to the nas",
    )
    assert recalled.reuse is None
    assert [e.request_id for e in recalled.examples] == ["r-same"]


def test_failed_plans_are_named_as_what_not_to_repeat() -> None:
    here = context(device("laptop", "desktop"), device("nas", "storage"))
    failed_summary = summary(
        outcome={"status": "failed", "failed_star": "write", "error": "failed"}
    )
    recalled = recall_plans(
        [
            found("r-bad", "copy todo.txt to the nas", 0.9, "failed", summary=failed_summary),
            found("r-bad2", "copy other.txt", 0.4, "failed", summary=failed_summary),
        ],
        here,
        request="copy todo.txt to the nas",
    )
    assert recalled.reuse is None
    assert recalled.examples == []
    [avoid] = recalled.avoid
    assert avoid.request_id == "r-bad"
    assert avoid.problem == "star s2 (fs.write) failed"  # in the ids the prompt shows
    messages = plan_messages(
        "copy todo.txt to the nas",
        here,
        [e.example() for e in recalled.examples],
        [{**avoid.example(), "problem": avoid.problem}],
    )
    prompt = messages[1]["content"]
    assert prompt.startswith('A plan that failed before for "copy todo.txt to the nas"')
    assert "Do not repeat what failed." in prompt
    assert prompt.endswith("Request: copy todo.txt to the nas")


def test_an_empty_memory_recalls_nothing() -> None:
    recalled = recall_plans([], context(device("laptop")), request="anything")
    assert recalled.empty


def test_a_request_naming_other_files_or_numbers_is_no_reuse() -> None:
    # 0.96 similar for the embedding model, and another request all the same.
    here = context(device("laptop", "desktop"), device("nas", "storage"))
    past = [found("r-5", "copy notes.txt from the laptop to the nas as notes-5.txt", 0.96)]
    recalled = recall_plans(
        past, here, request="copy notes.txt from the laptop to the nas as notes-15.txt"
    )
    assert recalled.reuse is None
    assert [e.request_id for e in recalled.examples] == ["r-5"]  # still a worked example
    again = recall_plans(
        past, here, request="Copy notes.txt from the laptop to the NAS as notes-5.txt."
    )
    assert again.reuse is not None


def test_specifics_are_numbers_files_paths_urls_and_quoted_text() -> None:
    assert specifics('Write "Good morning" into /tmp/a.txt, then fetch https://x.org/y?z=1.') == {
        "good morning": 1,
        "/tmp/a.txt": 1,
        "https://x.org/y?z=1": 1,
    }
    assert specifics("back up my photos to the NAS") == {}
    assert specifics("keep 7 copies of build-12") == {"7": 1, "build-12": 1}
