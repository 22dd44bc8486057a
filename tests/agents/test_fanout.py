"""Fan-out: a star whose `on` names a set of devices expands into one star per device."""

from __future__ import annotations

import pytest

from agents.constellation import DeviceSelector
from agents.constellation.fanout import NoFanOutDevice, expand_fan_out
from agents.constellation.plan_file import parse_plan
from devices.registry import DeviceInfo

TOOLS = frozenset({"shell.run", "sys.info", "fs.write"})
DEVICES = [
    DeviceInfo(name="atlas", tools=TOOLS, labels=frozenset({"reports"})),
    DeviceInfo(name="borealis", tools=TOOLS, labels=frozenset({"build", "linux"})),
    DeviceInfo(name="cygnus", tools=TOOLS, labels=frozenset({"storage", "linux"})),
    DeviceInfo(name="dorado", platform="windows", tools=frozenset({"fs.write"})),
]

PLAN = """
name: disk report
stars:
  - id: clean
    tool: shell.run
    on: {each: true, labels: [linux]}
    args: {cmd: "rm -rf build"}
  - id: disk
    tool: sys.info
    on: {each: true, labels: [linux]}
    args: {}
    after: [clean]
  - id: summary
    tool: fs.write
    on: atlas
    args:
      path: summary.txt
      content: "disks:\\n${disk.output.disks}"
    after: [disk]
  - id: listed
    tool: shell.run
    on: atlas
    args: {cmd: "echo", env_list: "${disk.output.hostname}"}
    after: [disk]
"""


def test_a_list_of_names_is_a_fan_out_selector() -> None:
    selector = DeviceSelector.model_validate(["atlas", "cygnus"])
    assert selector == DeviceSelector(names=("atlas", "cygnus"), each=True)
    assert not selector.is_any


def test_expansion_makes_one_star_per_matching_device_and_rewires_lines() -> None:
    constellation = parse_plan(PLAN)
    assert expand_fan_out(constellation, DEVICES)
    stars = constellation.stars
    assert sorted(stars) == [
        "clean-borealis",
        "clean-cygnus",
        "disk-borealis",
        "disk-cygnus",
        "listed",
        "summary",
    ]
    assert stars["disk-cygnus"].on == DeviceSelector(name="cygnus")
    lines = {line.key for line in constellation.lines}
    # Same devices: branch by branch; into a single star: from every branch.
    assert lines == {
        ("clean-borealis", "disk-borealis"),
        ("clean-cygnus", "disk-cygnus"),
        ("disk-borealis", "summary"),
        ("disk-cygnus", "summary"),
        ("disk-borealis", "listed"),
        ("disk-cygnus", "listed"),
    }
    # Inside text: one line per branch; a whole reference: the list of the branches' values.
    assert stars["summary"].args["content"] == (
        "disks:\n${disk-borealis.output.disks}\n${disk-cygnus.output.disks}"
    )
    assert stars["listed"].args["env_list"] == [
        "${disk-borealis.output.hostname}",
        "${disk-cygnus.output.hostname}",
    ]


def test_a_plan_without_fan_out_is_left_alone_and_no_match_is_an_error() -> None:
    plain = parse_plan("name: p\nstars:\n  - {id: a, tool: sys.info, on: atlas, args: {}}\n")
    assert not expand_fan_out(plain, DEVICES)
    assert list(plain.stars) == ["a"]
    nowhere = parse_plan(
        "name: p\nstars:\n  - {id: a, tool: sys.info, on: {each: true, platform: macos}, "
        "args: {}}\n"
    )
    with pytest.raises(NoFanOutDevice, match="star 'a' fans out over platform macos"):
        expand_fan_out(nowhere, DEVICES)
    assert list(nowhere.stars) == ["a"]  # nothing changed


def test_fan_out_keeps_to_devices_that_offer_the_tool() -> None:
    constellation = parse_plan(
        "name: p\nstars:\n  - {id: w, tool: sys.info, on: [atlas, dorado], args: {}}\n"
    )
    expand_fan_out(constellation, DEVICES)
    assert list(constellation.stars) == ["w-atlas"]  # dorado has no sys.info
