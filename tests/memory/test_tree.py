"""The task memory tree: nodes, revisions, stale marks, consolidated requests, durations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from memory import Store, StoreInvalidData, UnknownMemory
from memory.tree import (
    AddNode,
    OpenRequest,
    RecordDuration,
    TaskTree,
    UpdateNode,
    UpdateRequest,
    attempt_node_id,
    constellation_node_id,
    request_node_id,
    star_node_id,
)

if TYPE_CHECKING:
    from conftest import ManualClock


@pytest.fixture
def tree(store: Store) -> TaskTree:
    return TaskTree(store)


def grow(tree: TaskTree, rid: str = "r-1", cid: str = "c1") -> None:
    """A request with one constellation of two stars, s2 after s1, and an attempt of s1."""
    con = constellation_node_id(cid)
    tree.apply(
        [
            OpenRequest(rid, "back up my photos to the NAS", "request"),
            AddNode(con, "constellation", rid, rid, "backup", "running", {"version": 1}),
            UpdateRequest(rid, constellation_id=cid),
            AddNode(star_node_id(cid, "s1"), "star", con, rid, "pack", "pending", {"tool": "a.b"}),
            AddNode(star_node_id(cid, "s2"), "star", con, rid, "send", "pending", {"tool": "c.d"}),
            AddNode(
                attempt_node_id(cid, "s1", 1),
                "attempt",
                star_node_id(cid, "s1"),
                rid,
                "attempt 1 on nas",
                "running",
                {"device": "nas"},
                started_at=10.0,
            ),
        ]
    )


def test_a_request_grows_a_tree_with_parents_and_a_root(tree: TaskTree) -> None:
    grow(tree)
    grown = tree.tree("r-1")
    assert grown.request.text == "back up my photos to the NAS"
    assert grown.request.status == "running"
    assert grown.request.constellation_id == "c1"
    kinds = [node.kind for node in grown.nodes]
    assert kinds == ["request", "constellation", "star", "star", "attempt"]
    assert all(node.request_id == "r-1" for node in grown.nodes)
    assert [n.id for n in grown.children("c-c1")] == ["s-c1/s1", "s-c1/s2"]
    assert grown.children("s-c1/s1")[0].inputs == {"device": "nas"}
    assert all(revs[0].kind == "created" for revs in grown.revisions.values())
    assert len(grown.revisions) == 5


def test_adding_a_node_twice_changes_nothing(tree: TaskTree, clock: ManualClock) -> None:
    grow(tree)
    clock.advance(5)
    grow(tree)  # an event recorded twice
    grown = tree.tree("r-1")
    assert len(grown.nodes) == 5
    assert all(len(revs) == 1 for revs in grown.revisions.values())
    assert {node.created_at for node in grown.nodes} == {clock.now - 5}


def test_an_edit_is_a_revision_and_marks_downstream_nodes_stale(
    tree: TaskTree, clock: ManualClock
) -> None:
    grow(tree)
    clock.advance()
    tree.apply(
        [
            UpdateNode(
                "s-c1/s1",
                inputs={"tool": "a.b", "args": {"cmd": "new"}},
                revision="edited",
                detail={"version": 2, "rationale": "use the faster command"},
            ),
            UpdateNode("s-c1/s2", stale=True, revision="stale", detail={"because": "s1"}),
        ]
    )
    s1, s2 = tree.node("s-c1/s1"), tree.node("s-c1/s2")
    assert s1 is not None
    assert s2 is not None
    assert (s1.revision, s1.stale, s1.inputs["args"]) == (2, False, {"cmd": "new"})
    assert (s2.revision, s2.stale) == (2, True)
    history = tree.revisions("r-1")
    assert [r.kind for r in history["s-c1/s1"]] == ["created", "edited"]
    assert history["s-c1/s1"][1].detail["rationale"] == "use the faster command"
    assert history["s-c1/s2"][1].detail == {"because": "s1"}
    assert history["s-c1/s2"][1].ts == clock.now


def test_updating_an_unknown_node_changes_nothing(tree: TaskTree) -> None:
    grow(tree)
    tree.apply([UpdateNode("s-c1/nope", status="failed", revision="finished")])
    assert tree.node("s-c1/nope") is None


def test_finishing_a_request_keeps_its_summary_and_queues_it_for_recall(
    tree: TaskTree, clock: ManualClock
) -> None:
    grow(tree)
    assert tree.to_index() == []  # not finished yet
    clock.advance(3)
    summary = {"asked": "back up my photos to the NAS", "outcome": {"status": "succeeded"}}
    tree.apply([UpdateRequest("r-1", status="succeeded", summary=summary, finished=True)])
    record = tree.request("r-1")
    assert record is not None
    assert (record.status, record.finished_at, record.summary) == ("succeeded", clock.now, summary)
    assert [r.id for r in tree.to_index()] == ["r-1"]
    tree.mark_indexed(["r-1"])
    assert tree.to_index() == []
    root = tree.node("r-1")
    assert root is not None
    assert (root.status, root.output) == ("succeeded", summary)
    # It runs again (a retry): reopened, then a new summary, which recall must learn again.
    tree.apply([UpdateRequest("r-1", status="running", finished=False)])
    reopened = tree.request("r-1")
    assert reopened is not None
    assert reopened.finished_at is None
    tree.apply([UpdateRequest("r-1", status="failed", summary={"asked": "x"}, finished=True)])
    assert [r.id for r in tree.to_index()] == ["r-1"]


def test_forgetting_keeps_the_tree_but_flags_the_request(tree: TaskTree) -> None:
    grow(tree)
    assert tree.forget("r-1")
    assert not tree.forget("r-nope")
    record = tree.request("r-1")
    assert record is not None
    assert record.forgotten
    assert len(tree.nodes("r-1")) == 5


def test_requests_resolve_by_id_prefix_or_constellation(tree: TaskTree) -> None:
    grow(tree, "r-abc111", "c111")
    grow(tree, "r-abc222", "c222")
    assert tree.resolve("r-abc111") == "r-abc111"
    assert tree.resolve("r-abc2") == "r-abc222"
    assert tree.resolve("c111") == "r-abc111"
    assert tree.resolve("c2") == "r-abc222"  # a prefix of a constellation id
    assert tree.request_of_constellation("c222") == "r-abc222"
    with pytest.raises(UnknownMemory, match="several"):
        tree.resolve("r-abc")
    with pytest.raises(UnknownMemory, match="orrery memory search"):
        tree.resolve("r-zzz")
    with pytest.raises(UnknownMemory):
        tree.tree("r-zzz")


def test_durations_count_and_lean_towards_the_latest(tree: TaskTree) -> None:
    tree.apply([RecordDuration("shell.run", "nas", 10.0)])
    tree.apply([RecordDuration("shell.run", "nas", 20.0), RecordDuration("shell.run", "pi", 1)])
    found = {(d.tool, d.device): d for d in tree.durations(["shell.run", "fs.read"])}
    assert set(found) == {("shell.run", "nas"), ("shell.run", "pi")}
    nas = found["shell.run", "nas"]
    assert nas.count == 2
    assert nas.last_seconds == 20.0
    assert nas.mean_seconds == pytest.approx(13.0)  # 10 + 0.3 * (20 - 10)


def test_bad_data_is_refused_before_anything_is_written(tree: TaskTree) -> None:
    with pytest.raises(StoreInvalidData, match="inputs of node"):
        tree.apply(
            [
                OpenRequest("r-2", "x", "request"),
                AddNode("c-x", "constellation", "r-2", "r-2", "x", "running", {"bad": {1, 2}}),
            ]
        )
    assert tree.request("r-2") is None
    with pytest.raises(StoreInvalidData):
        tree.apply([RecordDuration("shell.run", "", 1.0)])


def test_new_request_ids_are_distinct() -> None:
    ids = {request_node_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("r-") for i in ids)


def test_the_tree_survives_reopening(db_path: Path) -> None:
    with Store.open_path(db_path) as store:
        grow(TaskTree(store))
    with Store.open_path(db_path) as store:
        assert len(TaskTree(store).tree("r-1").nodes) == 5
        assert TaskTree(store).count_requests() == 1
