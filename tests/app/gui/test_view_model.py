"""The view model: a state per star from a snapshot, then from the events."""

from __future__ import annotations

from typing import Any

import pytest

from agents.constellation.model import Constellation
from agents.events import (
    ApprovalGiven,
    ApprovalNeeded,
    AttemptFailed,
    ConstellationFinished,
    EditApplied,
    StarFinished,
    StarProgress,
    StarReady,
    StarStarted,
)
from app.gui.constellation.view_model import (
    ConstellationModel,
    StarState,
    describe_predicate,
    edges_of,
    fan_out_notes,
)

CID = "c-1"


def snapshot(**stars: dict[str, Any]) -> dict[str, Any]:
    """A serialised constellation (through the real model, so the shape is the real
    one); each star a dict of overrides."""
    data = {
        "id": CID,
        "name": "demo",
        "version": 1,
        "status": "running",
        "stars": {
            sid: {"id": sid, "tool": "shell.run", "args": {"cmd": "true"}, **fields}
            for sid, fields in stars.items()
        },
        "lines": [],
    }
    return Constellation.model_validate(data).model_dump(mode="json", by_alias=True)


def attempt(number: int, device: str, status: str, error: str | None = None) -> dict[str, Any]:
    return {"number": number, "device": device, "started_at": 1.0, "status": status, "error": error}


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, StarState.WAITING),
        ({"status": "ready"}, StarState.READY),
        ({"status": "running", "attempts": [attempt(1, "pc", "running")]}, StarState.RUNNING),
        (
            {"status": "running", "retries": 2, "attempts": [attempt(1, "pc", "failed", "boom")]},
            StarState.RETRYING,
        ),
        ({"status": "succeeded", "attempts": [attempt(1, "pc", "succeeded")]}, StarState.SUCCEEDED),
        ({"status": "failed", "error": "exit 3"}, StarState.FAILED),
        ({"status": "skipped", "skip_reason": "upstream failed"}, StarState.SKIPPED),
        ({"status": "cancelled"}, StarState.CANCELLED),
    ],
)
def test_a_snapshot_gives_each_star_its_state(fields: dict[str, Any], state: StarState) -> None:
    model = ConstellationModel()
    model.set_snapshot(snapshot(a=fields))
    assert model.stars["a"].state is state


def test_a_snapshot_names_the_last_attempts_device_and_number() -> None:
    model = ConstellationModel()
    attempts = [attempt(1, "laptop", "failed", "exit 1"), attempt(2, "gpu-rig", "running")]
    model.set_snapshot(snapshot(a={"status": "running", "retries": 3, "attempts": attempts}))
    star = model.stars["a"]
    assert (star.device, star.attempt, star.badge) == ("gpu-rig", 2, "#2")
    assert star.attempts_allowed == 4
    assert model.devices == ["gpu-rig"]


def test_pending_approvals_show_on_a_running_star() -> None:
    model = ConstellationModel()
    running = {"status": "running", "attempts": [attempt(1, "pc", "running")]}
    model.set_snapshot(snapshot(a=running, b=running), approvals=[("a", "req-1")])
    assert model.stars["a"].state is StarState.APPROVAL
    assert model.stars["b"].state is StarState.RUNNING


def test_events_walk_a_star_through_a_retry_to_success() -> None:
    model = ConstellationModel()
    model.set_snapshot(snapshot(a={"retries": 1}, b={}))
    seen = []

    def apply(event: Any) -> frozenset[str]:
        changed = model.apply(event)
        seen.append((model.stars["a"].state, model.stars["a"].badge))
        return changed

    assert apply(StarReady(constellation_id=CID, star_id="a")) == {"a"}
    apply(StarStarted(constellation_id=CID, star_id="a", attempt=1, device="pc"))
    apply(StarProgress(constellation_id=CID, star_id="a", attempt=1, message="step 1\nof 3"))
    assert model.stars["a"].progress == "step 1 of 3"
    assert model.stars["a"].detail == "step 1 of 3"
    apply(
        AttemptFailed(
            constellation_id=CID, star_id="a", attempt=1, device="pc", error="boom", will_retry=True
        )
    )
    assert model.stars["a"].detail == "boom"
    apply(StarStarted(constellation_id=CID, star_id="a", attempt=2, device="rig"))
    # a late progress message of the first attempt changes nothing
    assert not apply(StarProgress(constellation_id=CID, star_id="a", attempt=1, message="old"))
    apply(StarFinished(constellation_id=CID, star_id="a", status="succeeded", attempt=2))
    assert seen == [
        (StarState.READY, ""),
        (StarState.RUNNING, ""),
        (StarState.RUNNING, ""),
        (StarState.RETRYING, ""),
        (StarState.RUNNING, "#2"),
        (StarState.RUNNING, "#2"),
        (StarState.SUCCEEDED, "#2"),
    ]
    assert model.stars["a"].device == "rig"
    assert model.stars["b"].state is StarState.WAITING  # untouched


def test_approval_needed_then_given() -> None:
    model = ConstellationModel()
    model.set_snapshot(snapshot(a={}))
    model.apply(StarStarted(constellation_id=CID, star_id="a", attempt=1, device="pc"))
    needed = ApprovalNeeded(
        constellation_id=CID,
        star_id="a",
        attempt=1,
        device="pc",
        request="r1",
        tool="shell.run",
        summary="rm -rf build",
    )
    assert model.apply(needed) == {"a"}
    assert model.stars["a"].state is StarState.APPROVAL
    given = ApprovalGiven(constellation_id=CID, star_id="a", request="r1", approved=True)
    assert model.apply(given) == {"a"}
    assert model.stars["a"].state is StarState.RUNNING


def test_a_finished_star_does_not_go_back() -> None:
    model = ConstellationModel()
    model.set_snapshot(snapshot(a={"status": "cancelled"}))
    assert not model.apply(StarReady(constellation_id=CID, star_id="a"))
    assert not model.apply(StarStarted(constellation_id=CID, star_id="a", attempt=1, device="x"))
    assert model.stars["a"].state is StarState.CANCELLED


def test_events_of_other_constellations_and_unknown_stars_are_ignored() -> None:
    model = ConstellationModel()
    model.set_snapshot(snapshot(a={}))
    assert not model.apply(StarReady(constellation_id="other", star_id="a"))
    assert not model.apply(StarReady(constellation_id=CID, star_id="nope"))
    assert model.stars["a"].state is StarState.WAITING


def test_an_edit_makes_the_model_outdated_until_a_newer_snapshot() -> None:
    model = ConstellationModel()
    model.set_snapshot(snapshot(a={}))
    model.apply(EditApplied(constellation_id=CID, version=2, rationale="more"))
    assert model.outdated
    stale = snapshot(a={})  # a snapshot read before the edit landed
    model.set_snapshot(stale)
    assert model.outdated
    fresh = {**snapshot(a={}, b={}), "version": 2}
    change = model.set_snapshot(fresh)
    assert not model.outdated
    assert change.added == {"b"}
    assert not change.new_constellation


def test_the_finished_event_sets_the_status() -> None:
    model = ConstellationModel()
    model.set_snapshot(snapshot(a={}))
    model.apply(ConstellationFinished(constellation_id=CID, status="failed"))
    assert model.status == "failed"


def test_a_new_snapshot_keeps_progress_of_a_star_still_running() -> None:
    model = ConstellationModel()
    running = {"status": "running", "attempts": [attempt(1, "pc", "running")]}
    model.set_snapshot(snapshot(a=running))
    model.apply(StarProgress(constellation_id=CID, star_id="a", attempt=1, message="half"))
    change = model.set_snapshot(snapshot(a=running))
    assert model.stars["a"].progress == "half"
    assert change.changed == frozenset()


def test_lines_carry_kind_and_predicate() -> None:
    data = snapshot(a={}, b={}, c={"after": ["a"]})
    data["lines"] = [
        {
            "from": "a",
            "to": "b",
            "kind": "condition",
            "when": {
                "all": [
                    {"path": "output.returncode", "op": "eq", "value": 0},
                    {"not": {"path": "error", "op": "exists"}},
                ]
            },
        }
    ]
    model = ConstellationModel()
    model.set_snapshot(data)
    line = model.lines[("a", "b")]
    assert line.kind == "condition"
    assert line.predicate == "output.returncode = 0 and not error exists"
    assert "when output.returncode = 0" in line.tooltip()
    assert model.lines[("a", "c")].kind == "success"
    assert edges_of(data) == [("a", "b", "condition"), ("a", "c", "success")]


def test_describe_predicate_groups_nested_any() -> None:
    both = [{"path": "output.n", "op": "gt", "value": 3}, {"path": "output.ok", "op": "truthy"}]
    when = {"any": [{"path": "status", "op": "eq", "value": "failed"}, {"all": both}]}
    assert describe_predicate(when) == ('status = "failed" or (output.n > 3 and output.ok is true)')


def test_an_explicit_line_overrides_the_after_shorthand() -> None:
    data = snapshot(a={}, b={"after": ["a"]})
    data["lines"] = [{"from": "a", "to": "b", "kind": "completion", "when": None}]
    assert edges_of(data) == [("a", "b", "completion")]


def test_a_fan_out_that_takes_joining_devices_gets_a_note_before_and_after_expansion() -> None:
    written = {
        "id": CID,
        "name": "hosts",
        "stars": {
            "host": {"id": "host", "tool": "shell.run", "args": {},
                     "on": {"each": True, "labels": ["workers"], "joining": True}},
            "disk": {"id": "disk", "tool": "shell.run", "args": {}, "on": {"each": True}},
        },
    }  # fmt: skip
    assert fan_out_notes(written) == ["host fans out, also to devices that join while it runs"]
    expanded = {
        **written,
        "fan_out": {
            "stars": list(written["stars"].values()),
            "accepted": {"host": ["atlas"], "disk": ["atlas"]},
            "joined": {"host": ["cygnus"]},
        },
    }
    model = ConstellationModel()
    model.set_snapshot(expanded)
    assert model.notes == ["host takes joining devices; branches on atlas, cygnus (joined)"]
    model.set_snapshot({**written, "stars": {}})
    assert model.notes == []


def test_a_device_keeps_its_place_as_stars_move_between_devices() -> None:
    """Legend colours follow the order of the devices: a device seen first stays first
    (its colour with it) when its stars retry elsewhere, in events or in a snapshot."""
    model = ConstellationModel()
    on = {
        "a": {"status": "running", "retries": 2, "attempts": [attempt(1, "pc", "running")]},
        "b": {"status": "running", "attempts": [attempt(1, "rig", "running")]},
    }
    model.set_snapshot(snapshot(**on))
    assert model.devices == ["pc", "rig"]
    model.apply(StarStarted(constellation_id=CID, star_id="a", attempt=2, device="rig"))
    assert model.devices == ["pc", "rig"]
    retried = {
        "a": {"status": "running", "retries": 2,
              "attempts": [attempt(1, "pc", "failed", "x"), attempt(2, "rig", "running")]},
        "b": {"status": "running", "attempts": [attempt(1, "rig", "failed", "y"),
                                                attempt(2, "pc", "running")]},
    }  # fmt: skip
    model.set_snapshot(snapshot(**retried))
    assert model.devices == ["pc", "rig"]  # (star a, first, now runs on rig)
    model.set_snapshot({**snapshot(**retried), "id": "another"})
    assert model.devices == ["rig", "pc"]  # another constellation: its own order


def test_a_snapshot_keeps_the_views_of_stars_it_did_not_change_and_names_new_lines() -> None:
    model = ConstellationModel()
    model.set_snapshot(snapshot(a={}, b={"after": ["a"]}, c={}))
    a, b = model.stars["a"], model.stars["b"]
    change = model.set_snapshot(
        snapshot(a={}, b={"after": ["a"], "title": "renamed"}, c={"after": ["a"]})
    )
    assert model.stars["a"] is a  # the same drawing: its item keeps it
    assert model.stars["b"] is not b
    assert change.changed == {"b"}
    assert change.redrawn_lines == {("a", "c")}
    assert change.lines_changed
    again = model.set_snapshot(
        snapshot(a={}, b={"after": ["a"], "title": "renamed"}, c={"after": ["a"]})
    )
    assert again.changed == frozenset()
    assert again.redrawn_lines == frozenset()
    assert not again.lines_changed
