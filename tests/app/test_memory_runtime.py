"""The runtime's task memory, in process and through the control API: runs are remembered,
the planner reuses the plan of a request that succeeded before and shows similar ones to
its model, history gives estimates, and memory_search / memory_show / memory_forget
answer the same in process and remotely. Real SQLite, real ChromaDB and embeddings in
tmp_path, real tools; the planner model is scripted (the real one: tests/e2e)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from agents.fleet_dispatcher import merged_tool_schemas
from agents.models.manager import LazyModelManager
from app.client import Orrery
from app.errors import RequestRejected
from app.planning import RequestPlanner
from app.runtime import InProcessDevice, Runtime
from app.runtime.memory import RuntimeMemory
from app.settings import PlannerSettings
from memory import Store
from tests.agents.planner.scripted import ScriptedModel, plan_json
from tests.served import Served

pytestmark = pytest.mark.slow  # ChromaDB and the embedding model load once per test

NOTE = "write hello into note.txt"
NOTE_PLAN = plan_json(
    {
        "id": "s1",
        "title": "write the note",
        "tool": "fs.write",
        "on": "here",
        "args": {"path": "note.txt", "content": "hello"},
    },
    rationale="one write where the note goes",
)
GREETING_PLAN = plan_json(
    {
        "id": "s1",
        "title": "write the greeting",
        "tool": "fs.write",
        "on": "here",
        "args": {"path": "greeting.txt", "content": "hi"},
    }
)


@dataclass
class Models:
    """What `RequestPlanner` asks of a model manager, with a scripted planner model."""

    model: ScriptedModel
    closed: list[bool] = field(default_factory=list)

    async def backend(self, role: str) -> ScriptedModel:
        assert role == "planner"
        return self.model

    async def close(self) -> None:
        self.closed.append(True)


@dataclass
class Parts:
    runtime: Runtime
    model: ScriptedModel


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    model = ScriptedModel([NOTE_PLAN, GREETING_PLAN])
    device = InProcessDevice(tmp_path / "workspace", name="here")
    with Store.open_path(tmp_path / "orrery.db") as store:
        memory = RuntimeMemory(store, tmp_path / "recall")
        planner = RequestPlanner(
            cast(LazyModelManager, Models(model)),
            lambda: merged_tool_schemas([device]),
            # The whole-plan generation: these tests are about its worked examples.
            PlannerSettings(strategy="whole"),
            memory=memory,
        )
        async with Runtime(store, [device], planner=planner, memory=memory) as runtime:
            yield Parts(runtime, model)


async def test_the_same_request_is_planned_from_memory_the_second_time(parts: Parts) -> None:
    runtime = parts.runtime
    first = await runtime.submit(NOTE)
    assert not first.rationale.startswith("From memory")  # the memory was empty
    assert (await first.wait()).succeeded
    assert len(parts.model.calls) == 1

    again = await runtime.submit(NOTE)
    assert len(parts.model.calls) == 1  # no model call: the plan came from memory
    assert again.rationale.startswith("From memory: reused the plan that succeeded for r-")
    assert "one write where the note goes" in again.rationale
    assert (await again.wait()).succeeded
    snapshot = await runtime.constellation(again.id)
    assert snapshot.constellation["stars"]["s1"]["estimate"] is not None  # from history
    assert snapshot.constellation["stars"]["s1"]["args"] == {"path": "note.txt", "content": "hello"}

    similar = await runtime.submit("write hi into greeting.txt")
    assert len(parts.model.calls) == 2
    prompt = parts.model.calls[1].prompt
    assert f"Example request: {NOTE}" in prompt
    assert prompt.endswith("Request: write hi into greeting.txt")
    assert similar.rationale.startswith("From memory: planned with")
    assert (await similar.wait()).succeeded

    tree = await runtime.memory_show(again.id)  # a constellation id names its request
    assert tree.text == NOTE
    assert tree.summary is not None
    remembered = await runtime.memory_show(first.id)
    assert tree.request != remembered.request  # asked again: a request of its own ...
    assert tree.summary["from_memory"] == remembered.request  # ... planned from the first
    assert [node.kind for node in tree.nodes][:2] == ["request", "constellation"]
    assert {node.kind for node in tree.nodes} == {"request", "constellation", "star", "attempt"}


async def test_the_step_planner_plans_by_code_and_reuses_from_memory(tmp_path: Path) -> None:
    model = ScriptedModel([])  # the step planner needs no model for a plain write
    device = InProcessDevice(tmp_path / "workspace", name="here")
    with Store.open_path(tmp_path / "orrery.db") as store:
        memory = RuntimeMemory(store, tmp_path / "recall")
        planner = RequestPlanner(
            cast(LazyModelManager, Models(model)),
            lambda: merged_tool_schemas([device]),
            memory=memory,
        )
        async with Runtime(store, [device], planner=planner, memory=memory) as runtime:
            first = await runtime.submit(NOTE)
            assert (await first.wait()).succeeded
            assert (tmp_path / "workspace" / "note.txt").read_text() == "hello"
            again = await runtime.submit(NOTE)
            assert again.rationale.startswith("From memory: reused the plan that succeeded")
            assert (await again.wait()).succeeded
    assert model.calls == []


async def browse(api: Any) -> tuple[list[Any], Any, Any]:
    hits = await api.memory_search("put hello in a note file", limit=3)
    tree = await api.memory_show(hits[0].request)
    forgotten = await api.memory_forget(hits[0].request)
    return hits, tree, forgotten


async def test_browsing_is_the_same_in_process_and_through_the_control_api(
    tmp_path: Path,
) -> None:
    results = []
    for where in ("here", "there"):
        home = tmp_path / where
        device = InProcessDevice(home / "workspace", name="here")
        with Store.open_path(home / "orrery.db") as store:
            memory = RuntimeMemory(store, home / "recall")
            if where == "here":
                async with Runtime(store, [device], memory=memory) as runtime:
                    await (await runtime.submit(PLAN)).wait()
                    results.append(await browse(runtime))
                    await check_refusals(runtime)
            else:
                async with (
                    Served(store, home, extra=[device], memory=memory) as served,
                    Orrery(served.control_url, data_dir=home) as client,
                ):
                    await (await client.submit(PLAN)).wait()
                    results.append(await browse(client))
                    await check_refusals(client)
    (hits, tree, forgotten), (remote_hits, remote_tree, remote_forgotten) = results
    assert [(h.text, h.status, h.plan, h.outcome) for h in hits] == [
        (h.text, h.status, h.plan, h.outcome) for h in remote_hits
    ]
    [hit] = hits
    assert hit.text == "note: write hello into note.txt"  # a plan's name and description
    assert hit.status == "succeeded"
    assert hit.outcome == "succeeded"
    assert hit.plan == [{"id": "write", "title": "", "tool": "fs.write", "on": "any", "after": []}]
    assert hit.fleet == ["here"]
    assert 0.3 < hit.similarity <= 1.0
    assert [n.kind for n in tree.nodes] == [n.kind for n in remote_tree.nodes]
    assert [n.status for n in tree.nodes] == ["succeeded"] * 4
    assert forgotten.forgotten
    assert remote_forgotten.forgotten


async def check_refusals(api: Any) -> None:
    assert await api.memory_search("put hello in a note file") == []  # forgotten
    with pytest.raises(RequestRejected) as unknown:
        await api.memory_show("r-nothing-like-it")
    assert unknown.value.code == "unknown_memory"
    assert "orrery memory search" in unknown.value.reason
    with pytest.raises(RequestRejected) as again:
        await api.memory_forget("r-nothing-like-it")
    assert again.value.code == "unknown_memory"


PLAN = """
name: note
description: write hello into note.txt
stars:
  - id: write
    tool: fs.write
    args: {path: note.txt, content: hello}
"""


async def test_without_a_recall_index_search_says_so_and_the_tree_is_kept(
    tmp_path: Path,
) -> None:
    device = InProcessDevice(tmp_path / "workspace", name="here")
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Runtime(store, [device]) as runtime:  # the default: the tree, no recall
            run = await runtime.submit(PLAN)
            await run.wait()
            with pytest.raises(RequestRejected) as caught:
                await runtime.memory_search("hello")
            assert caught.value.code == "memory_unavailable"
            tree = await runtime.memory_show(run.id)
            assert tree.status == "succeeded"
