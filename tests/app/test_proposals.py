"""`app.runtime.proposals`: plans made from words are held for a while and a number, and a
proposal that no longer waits is refused with why (expired, dropped, discarded, started)
and what to do; a star is described for review by device, tool and the command or path."""

from __future__ import annotations

import pytest

from agents.constellation.plan_file import parse_plan
from app.runtime.proposals import Ending, ProposalBook, ProposalGone, describe_stars
from devices.registry import DeviceInfo

PLAN = """
name: sweep
stars:
  - id: usage
    on: {each: true, labels: [linux]}
    tool: shell.run
    args: {cmd: "df -h /"}
  - id: save
    on: nas
    after: [usage]
    tool: fs.write
    args: {path: disk.txt, content: "${usage.output.stdout}"}
  - id: look
    tool: fs.list
    args: {path: .}
  - id: think
    on: {platform: linux, gpu: true}
    instruction: summarise the disk usage
  - id: info
    tool: sys.info
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gone(book: ProposalBook, proposal_id: str) -> ProposalGone:
    with pytest.raises(ProposalGone) as caught:
        book.waiting(proposal_id)
    return caught.value


def test_a_proposal_waits_until_it_expires_and_then_says_so() -> None:
    clock = Clock()
    book = ProposalBook(ttl=60, now=clock)
    held = book.add(parse_plan(PLAN), "check the disks")
    assert book.waiting(held.id) is held
    assert held.id.startswith("p-")
    clock.now += 45
    assert book.expires_in(held) == pytest.approx(15)
    assert book.sweep() == []
    clock.now += 15
    assert book.sweep() == [held]
    assert len(book) == 0
    expired = gone(book, held.id)
    assert expired.ending is not None
    assert expired.ending.how is Ending.EXPIRED
    assert "expired: it waited more than 60s without being started" in expired.message
    assert "propose the request again" in expired.message


def test_the_oldest_is_dropped_to_make_room_and_ended_ones_say_how() -> None:
    book = ProposalBook(limit=2, now=Clock())
    plan = parse_plan(PLAN)
    first, second = book.add(plan, "one"), book.add(plan, "two")
    assert book.sweep(room=1) == [first]
    third = book.add(plan, "three")
    assert len(book) == 2
    assert "dropped to make room: 2 newer proposals" in gone(book, first.id).message
    book.end(second.id, Ending.DISCARDED)
    assert "was discarded; propose the request again" in gone(book, second.id).message
    book.end(third.id, Ending.STARTED, "c-123")
    started = gone(book, third.id)
    assert "started already: it runs as constellation 'c-123'" in started.message
    never = gone(book, "p-nothing")
    assert never.ending is None
    assert "is not known here" in never.message
    with pytest.raises(ProposalGone):
        book.end(third.id, Ending.DISCARDED)  # an ended one cannot end again


def test_stars_are_described_by_device_tool_and_what_they_do() -> None:
    linux = frozenset({"linux"})
    fleet = [
        DeviceInfo(name="nas", tools=frozenset({"shell.run", "fs.write"}), labels=linux),
        DeviceInfo(name="atlas", tools=frozenset({"shell.run"}), labels=linux),
        DeviceInfo(name="win", platform="windows", tools=frozenset({"shell.run"})),
    ]
    rows = {row.id: row for row in describe_stars(parse_plan(PLAN), fleet)}
    assert (rows["usage"].device, rows["usage"].tool, rows["usage"].what) == (
        "each of atlas, nas",
        "shell.run",
        "df -h /",
    )
    assert (rows["save"].device, rows["save"].what, rows["save"].after) == (
        "nas",
        "disk.txt",
        ["usage"],
    )
    assert rows["look"].device == "any device"
    assert (rows["think"].device, rows["think"].tool) == (
        "any device on linux with a GPU",
        "agent.do",
    )
    assert rows["think"].what == "summarise the disk usage"
    assert rows["info"].what == ""
    nobody = describe_stars(parse_plan(PLAN), [])[0]
    assert nobody.device == "each device labelled linux (none connected now)"
