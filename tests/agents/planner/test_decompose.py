"""The step planner: structure by code, commands and tool choices by a scripted model."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.constellation import DeviceSelector
from agents.models.backend import Completion
from agents.planner.context import PlanningContext
from agents.planner.decompose import StepPlanner
from agents.planner.errors import PlanRejected
from devices.registry import DeviceInfo
from devices.tools import default_tools
from tests.agents.planner.scripted import ScriptedModel, plan_json, star

ALL = frozenset(default_tools().schemas())


def fleet_context() -> PlanningContext:
    devices = [
        DeviceInfo(name="laptop", tools=ALL, labels=frozenset({"desktop"})),
        DeviceInfo(name="nas", tools=ALL - {"python.run"}, labels=frozenset({"storage"})),
        DeviceInfo(name="builder-1", tools=ALL, labels=frozenset({"build"})),
        DeviceInfo(name="builder-2", tools=ALL, labels=frozenset({"build"})),
        DeviceInfo(name="winbox", platform="windows", tools=frozenset({"shell.run"})),
    ]
    return PlanningContext.from_devices(devices, default_tools().schemas())


def on(spec_star: object) -> str | None:
    selector = getattr(spec_star, "on", None)
    return selector.name if isinstance(selector, DeviceSelector) else None


async def test_a_collection_on_every_device_fans_out_and_the_write_waits_for_all() -> None:
    model = ScriptedModel([])
    outcome = await StepPlanner(model).create(
        "collect disk usage from every linux device and write a summary on the laptop",
        fleet_context(),
    )
    stars = outcome.spec.stars
    collections = stars[:-1]
    assert [s.effective_tool for s in collections] == ["sys.info"] * 4
    assert sorted(on(s) or "" for s in collections) == ["builder-1", "builder-2", "laptop", "nas"]
    assert all(s.after == [] for s in collections)  # parallel: no lines between them
    summary = stars[-1]
    assert (summary.effective_tool, on(summary)) == ("fs.write", "laptop")
    assert summary.after == [s.id for s in collections]
    content = summary.effective_args["content"]
    for collection in collections:
        assert f"${{{collection.id}.output}}" in content
    assert "{{" not in content
    assert summary.effective_args["path"] == "summary.txt"
    assert model.calls == []  # nothing here needed the model
    assert outcome.rationale


async def test_a_plain_write_writes_the_words_asked_into_the_file_named() -> None:
    model = ScriptedModel([])
    outcome = await StepPlanner(model).create(
        "write good morning into a file named morning.txt", fleet_context()
    )
    (only,) = outcome.spec.stars
    assert only.effective_tool == "fs.write"
    assert only.effective_args == {"path": "morning.txt", "content": "good morning"}


async def test_a_folder_backed_up_to_another_device_is_packed_uploaded_and_fetched() -> None:
    outcome = await StepPlanner(ScriptedModel([])).create(
        "Back up the laptop's Documents folder to the nas", fleet_context()
    )
    pack, put, get = outcome.spec.stars
    assert (pack.effective_tool, on(pack)) == ("shell.run", "laptop")
    assert pack.effective_args == {"cmd": "tar czf Documents.tar.gz Documents"}
    assert (put.effective_tool, on(put), put.after) == ("artifact.put", "laptop", [pack.id])
    assert put.effective_args == {"path": "Documents.tar.gz"}
    assert (get.effective_tool, on(get), get.after) == ("artifact.get", "nas", [put.id])
    assert get.effective_args["artifact"] == f"${{{put.id}.output.artifact}}"


async def test_a_step_on_the_same_devices_continues_device_by_device() -> None:
    model = ScriptedModel([json.dumps({"cmd": "rm -rf build/"})])
    outcome = await StepPlanner(model).create(
        "remove the build/ folder on both builders, then report the free disk space of each",
        fleet_context(),
    )
    rm1, rm2, disk1, disk2 = outcome.spec.stars
    assert [s.effective_tool for s in (rm1, rm2)] == ["shell.run", "shell.run"]
    assert rm1.effective_args == {"cmd": "rm -rf build/"}
    assert (on(disk1), disk1.after) == (on(rm1), [rm1.id])
    assert (on(disk2), disk2.after) == (on(rm2), [rm2.id])
    assert len(model.calls) == 1  # one command for the step, shared by both devices
    assert model.calls[0].grammar is not None  # generated under the tool's schema
    assert "Task: remove the build/ folder" in model.calls[0].prompt


async def test_a_command_naming_a_file_nobody_mentioned_is_asked_again() -> None:
    model = ScriptedModel(
        [
            json.dumps({"cmd": "python -m pytest -q tests/"}),
            json.dumps({"cmd": "systemctl --failed"}),
        ]
    )
    outcome = await StepPlanner(model).create(
        "show which services failed on the nas", fleet_context()
    )
    (only,) = outcome.spec.stars
    assert only.effective_args == {"cmd": "systemctl --failed"}
    assert "'tests'" in outcome.problems[0]
    assert "rejected" in model.calls[1].messages[-1]["content"]


async def test_a_command_that_keeps_inventing_paths_is_confined_to_the_named_ones() -> None:
    invented = json.dumps({"cmd": "du -sh /data/cache | sort -rh"})
    model = ScriptedModel([invented] * 3)
    outcome = await StepPlanner(model).create(
        "delete files older than 30 days from /tmp/work on the nas", fleet_context()
    )
    (only,) = outcome.spec.stars
    assert only.effective_args == {"cmd": "du -sh /tmp/work | sort -rh"}
    assert len(model.calls) == 3
    assert "confined" in outcome.problems[-1]


async def test_a_command_reading_a_system_file_the_request_never_spoke_of_is_asked_again() -> None:
    # Seen from the embedded model: "count the lines of every text file in the workspace"
    # became `cat /etc/passwd` while /etc counted as a folder any command may name.
    model = ScriptedModel(
        [
            json.dumps({"cmd": "cat /etc/passwd"}),
            json.dumps({"cmd": "cat ~/.ssh/id_rsa.pub"}),
            json.dumps({"cmd": "cat *.txt | wc -l"}),
        ]
    )
    outcome = await StepPlanner(model).create(
        "count the lines of every text file in the workspace on the nas", fleet_context()
    )
    (only,) = outcome.spec.stars
    assert only.effective_args == {"cmd": "cat *.txt | wc -l"}
    assert "'/etc/passwd'" in outcome.problems[0]
    assert "'~/.ssh/id_rsa.pub'" in outcome.problems[1]
    # the kind of file in words is given to the model as its extension
    # (and without "in the workspace": every command runs there)
    assert "Task: count the lines of every .txt file" in model.calls[0].prompt
    assert "workspace" not in model.calls[0].prompt.rpartition("Task:")[2]


async def test_a_system_folder_the_request_speaks_of_may_be_named() -> None:
    model = ScriptedModel([json.dumps({"cmd": "find /var/log -name '*.log' -mtime +30 -delete"})])
    outcome = await StepPlanner(model).create(
        "clean up log files older than 30 days on the nas", fleet_context()
    )
    (only,) = outcome.spec.stars
    assert only.effective_args == {"cmd": "find /var/log -name '*.log' -mtime +30 -delete"}
    assert outcome.problems == []


async def test_an_ambiguous_step_is_a_constrained_choice_among_the_devices_tools() -> None:
    model = ScriptedModel([json.dumps({"tool": "sys.info"})])
    outcome = await StepPlanner(model).create("How busy is builder-1?", fleet_context())
    (only,) = outcome.spec.stars
    assert (only.effective_tool, on(only)) == ("sys.info", "builder-1")
    schema = model.calls[0].schema
    assert schema is not None
    assert set(schema["properties"]["tool"]["enum"]) <= ALL
    assert "Step: How busy is builder-1\n" in model.calls[0].prompt


async def test_a_step_plan_that_cannot_be_made_falls_back_to_the_whole_plan() -> None:
    reference = json.dumps({"cmd": "echo ${s1.output}"})
    whole = plan_json(star("s1", on="nas", cmd="uptime"), rationale="whole plan")
    model = ScriptedModel([reference, reference, reference, whole])
    outcome = await StepPlanner(model).create(
        "restart the printer queue on the nas", fleet_context()
    )
    assert outcome.rationale == "whole plan"
    assert any("the step plan" in problem for problem in outcome.problems)


async def test_fan_out_keeps_to_the_devices_that_offer_the_tool() -> None:
    model = ScriptedModel([json.dumps({"code": "import sys\nprint(sys.version)"})])
    outcome = await StepPlanner(model).create(
        "print the python version on every linux device", fleet_context()
    )
    assert [on(s) for s in outcome.spec.stars] == ["builder-1", "builder-2", "laptop"]
    assert {s.effective_tool for s in outcome.spec.stars} == {"python.run"}


class AnsweringModel:
    """Answers any of the step planner's questions with something well-formed."""

    def __init__(self) -> None:
        self.calls = 0

    async def chat(self, messages: object, **kwargs: object) -> Completion:
        self.calls += 1
        schema = kwargs.get("schema")
        if isinstance(schema, dict) and "tool" in schema.get("properties", {}):
            text = json.dumps({"tool": schema["properties"]["tool"]["enum"][0]})
        elif kwargs.get("grammar"):
            text = json.dumps({"cmd": "true", "code": "print(1)"})
        else:
            text = plan_json(star("s1", on="nas", cmd="true"))
        return Completion(text, "stop", 1, 0, 0.0, 0.0)


WORDS = st.sampled_from(
    [
        *("laptop", "nas", "builder-1", "both", "builders", "every", "linux", "device"),
        *("and", "then", ",", "copy", "write", "read", "list", "check", "disk", "to"),
        *("from", "on", "notes.txt", "/var/log", "https://example.org/x", "the", "folder"),
        *("Backups", "with", "python", "it", "at the same time", '"hi"', "same as", "."),
    ]
)


@settings(max_examples=100, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=14))
async def test_any_request_gets_a_valid_plan_or_a_clear_rejection(words: list[str]) -> None:
    request = " ".join(words)
    try:
        outcome = await StepPlanner(AnsweringModel()).create(request, fleet_context())
    except PlanRejected:
        return
    assert outcome.spec.stars
