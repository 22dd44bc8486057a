"""Requests split into steps and device phrases resolved against a fleet, by code."""

from __future__ import annotations

import pytest

from agents.planner.steps import (
    mentioned_files,
    mentioned_folders,
    mentioned_urls,
    quoted_text,
    resolve_devices,
    split_steps,
)
from devices.registry import DeviceInfo

TOOLS = frozenset({"shell.run", "sys.info", "fs.write"})


def device(name: str, platform: str = "linux", *labels: str) -> DeviceInfo:
    return DeviceInfo(name=name, platform=platform, labels=frozenset(labels), tools=TOOLS)


FLEET = [
    device("render-1", "linux", "render"),
    device("render-2", "linux", "render"),
    device("mediabox", "linux", "storage"),
    device("studio-mac", "macos", "desktop"),
    device("win-pc", "windows", "desktop"),
]


def devices_of(text: str) -> list[tuple[tuple[str, ...], str]]:
    return [(mention.devices, mention.role) for mention in resolve_devices(text, FLEET)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on every linux machine", [(("render-1", "render-2", "mediabox"), "on")]),
        ("from both render nodes", [(("render-1", "render-2"), "from")]),
        ("on all the desktops", [(("studio-mac", "win-pc"), "on")]),
        ("on each of my machines", [(tuple(d.name for d in FLEET), "on")]),
        (
            "copy it from render 1 to the media box",
            [(("render-1",), "from"), (("mediabox",), "to")],
        ),
        ("the studio mac's photos", [(("studio-mac",), "from")]),
        ("on the windows machine", [(("win-pc",), "on")]),
        ("from render-1 and render-2", [(("render-1",), "from"), (("render-2",), "from")]),
    ],
)
def test_device_phrases_resolve_against_the_fleet(
    text: str, expected: list[tuple[tuple[str, ...], str]]
) -> None:
    assert devices_of(text) == expected


def test_a_singular_label_word_or_a_file_name_is_no_device_phrase() -> None:
    assert devices_of("render the scene into render.png") == []
    assert devices_of("open the desktop folder") == []


def test_a_request_splits_into_clauses_with_their_devices() -> None:
    steps = split_steps(
        "Check the GPU temperature on both render nodes, then write the numbers into "
        "temps.txt on the mediabox and show me the file.",
        FLEET,
    )
    assert [step.text for step in steps] == [
        "Check the GPU temperature on both render nodes",
        "write the numbers into temps.txt on the mediabox",
        "show me the file",
    ]
    assert steps[0].devices() == ["render-1", "render-2"]
    assert steps[1].devices() == ["mediabox"]
    assert steps[2].devices() == []


def test_device_lists_and_objects_joined_by_and_stay_one_clause() -> None:
    steps = split_steps("Measure memory and disk on render-1 and render-2", FLEET)
    assert len(steps) == 1
    assert steps[0].devices() == ["render-1", "render-2"]


def test_at_the_same_time_marks_a_parallel_clause_and_conditions_join_the_next() -> None:
    steps = split_steps(
        "Fetch http://intranet/q from win-pc and, at the same time, check the load on the "
        "render nodes; if it is high, restart the renderer.",
        FLEET,
    )
    assert [step.parallel for step in steps] == [False, True, False]
    assert steps[2].text == "if it is high, restart the renderer"


def test_what_a_step_names() -> None:
    text = 'Write "all good" into logs/state.txt, fetch https://a.example/x.json and list /var/log'
    assert mentioned_files(text, FLEET) == ["logs/state.txt"]
    assert mentioned_urls(text) == ["https://a.example/x.json"]
    assert mentioned_folders(text) == ["/var/log"]
    assert quoted_text(text) == "all good"
    assert mentioned_folders("zip the Photos folder and what is in Downloads") == [
        "Downloads",
        "Photos",
    ]
    assert mentioned_files("write 2.4.1 into VERSION") == ["VERSION"]
