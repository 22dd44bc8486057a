"""Plans that a server refuses or takes long to read (issue 16, findings 7 and 8): a large
plan is parsed off the event loop within a budget, its refusal says what is wrong, and
every refused plan is one line, locally and through the control client. A real served
runtime on 127.0.0.1 with a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from agents.constellation.plan_file import MAX_PLAN_NODES, PlanFileError, parse_plan
from app.client import Orrery
from app.control.messages import MAX_PLAN_BYTES
from app.control.token import read_token
from app.errors import RequestRejected
from memory import Store
from tests.served import Served

WAIT = 60.0


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Served(store, tmp_path) as running:
            yield running


async def authenticated(served: Served) -> ClientConnection:
    ws = await connect(served.control_url, max_size=None)
    await ws.send(json.dumps({"type": "auth", "id": "a", "token": read_token(served.data_dir)}))
    assert json.loads(await ws.recv())["type"] == "authenticated"
    return ws


def slow_plan(values: int) -> str:
    """A valid plan whose YAML takes a while to read: one star with many small values."""
    items = ", ".join(str(i % 10) for i in range(values))
    star = f"  - id: a\n    tool: shell.run\n    args: {{cmd: 'true', data: [{items}]}}\n"
    return "name: heavy\nstars:\n" + star


async def test_a_large_plan_does_not_hold_the_server_for_other_clients(served: Served) -> None:
    submitter, other = await authenticated(served), await authenticated(served)
    try:
        await submitter.send(json.dumps({"type": "submit", "id": "big", "plan": slow_plan(20_000)}))
        submitted = asyncio.ensure_future(submitter.recv())
        answered = 0  # `devices` requests another client got answered while it was parsed
        async with asyncio.timeout(WAIT):
            while not submitted.done():
                await other.send(json.dumps({"type": "devices", "id": f"d{answered}"}))
                reply: dict[str, Any] = json.loads(await other.recv())
                assert reply["type"] == "device_list", reply
                answered += 1
            reply = json.loads(submitted.result())
        assert reply["type"] == "submitted", reply
        assert answered >= 5, f"only {answered} requests were answered during the parse"
    finally:
        await submitter.close()
        await other.close()


def test_reading_a_plan_has_a_budget() -> None:
    with pytest.raises(PlanFileError) as refused:
        parse_plan(slow_plan(20_000), source="heavy.yaml", budget=0.01)
    message = str(refused.value)
    assert message.startswith("heavy.yaml: reading the plan took longer than 0.01s")
    assert "split it" in message


@pytest.mark.slow
def test_a_plan_too_big_as_written_is_not_blamed_on_aliases() -> None:
    values = ", ".join(["1"] * (MAX_PLAN_NODES + 10))
    text = f"name: x\nstars:\n  - {{id: a, tool: shell.run, args: {{v: [{values}]}}}}\n"
    with pytest.raises(PlanFileError) as refused:
        parse_plan(text, source="wide.yaml")
    message = str(refused.value)
    assert f"plan has more than {MAX_PLAN_NODES} values" in message
    assert "alias" not in message


# --------------------------------------------------------------- one-line refusals


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "plan file is empty; it needs 'name' and 'stars'"),
        ("  \n# nothing\n", "plan file is empty; it needs 'name' and 'stars'"),
        ("name: big\n# " + "x" * MAX_PLAN_BYTES + "\nstars: []\n", "larger than 1024 KiB"),
    ],
    ids=["empty", "blank", "too large"],
)
async def test_a_refused_plan_is_one_line_through_the_client_as_in_process(
    served: Served, tmp_path: Path, text: str, reason: str
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    refusals: list[RequestRejected] = []
    async with Orrery(served.control_url, data_dir=served.data_dir) as client:
        for api in (client, served.runtime):
            with pytest.raises(RequestRejected) as refused:
                await api.submit(plan)
            refusals.append(refused.value)
    for refusal in refusals:
        assert refusal.code == "invalid_plan"
        assert refusal.field == "plan"
        assert reason in refusal.reason
        assert "\n" not in refusal.reason
        assert refusal.reason.startswith(f"{plan}:")
    remote, local = refusals
    assert remote.reason == local.reason


async def test_a_request_the_client_cannot_send_is_refused_as_the_server_would(
    served: Served,
) -> None:
    async with Orrery(served.control_url, data_dir=served.data_dir) as client:
        with pytest.raises(RequestRejected) as refused:
            await client.cancel("x" * 500)  # longer than a constellation id may be
    assert refused.value.code == "malformed"
    assert refused.value.field == "constellation"
    assert "\n" not in str(refused.value)


async def test_the_server_refuses_an_oversized_plan_as_an_invalid_plan(served: Served) -> None:
    ws = await authenticated(served)
    try:
        big = "name: big\n# " + "x" * MAX_PLAN_BYTES + "\nstars: []\n"
        await ws.send(json.dumps({"type": "submit", "id": "s", "plan": big, "source": "b.yaml"}))
        reply = json.loads(await ws.recv())
        assert (reply["code"], reply["field"]) == ("invalid_plan", "plan")
        assert reply["message"].startswith("b.yaml: plan file is larger than 1024 KiB")
    finally:
        await ws.close()


async def test_a_deeply_nested_plan_is_refused_before_it_can_exhaust_a_worker_stack(
    served: Served,
) -> None:
    ws = await authenticated(served)
    try:
        for depth in (200, 3000, 100_000):  # 3000 once crashed the process (found by fuzzing)
            plan = "name: deep\nstars: " + "[" * depth + "]" * depth + "\n"
            await ws.send(json.dumps({"type": "submit", "id": f"s{depth}", "plan": plan}))
            reply = json.loads(await ws.recv())
            assert (reply["code"], reply["field"]) == ("invalid_plan", "plan"), reply
            assert "nested too deeply (more than 64 levels)" in reply["message"]
        await ws.send(json.dumps({"type": "devices", "id": "d"}))
        assert json.loads(await ws.recv())["type"] == "device_list"
    finally:
        await ws.close()
