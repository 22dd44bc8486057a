"""Every command block of README.md and docs/*.md runs as written, or says why not.

The slow test follows each doc as a reader would (tests/docs/command_blocks.py says how
a session fills in what the reader would: ports, tokens, ids) and fails when a documented
command stops working: an option that moved, a file that is not where the doc says, a
server a client cannot reach as documented.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.docs.command_blocks import (
    ROOT,
    Block,
    DocSession,
    blocks,
    command_blocks,
    stray_markers,
)

# What a doc assumes has happened before its blocks (a reader arriving from elsewhere).
SETUP: dict[str, list[str]] = {
    "docs/memory.md": [
        "orrery run resources/plans/parallel-report.yaml",
        'orrery memory search "parallel report"',
    ],
}


def runnable_by_section() -> dict[str, list[Block]]:
    """The blocks to run, by `doc#section` (each section is one reader's session)."""
    by_section: dict[str, list[Block]] = defaultdict(list)
    for block in command_blocks():
        if block.illustrative is None:
            by_section[f"{block.path.relative_to(ROOT)}#{block.section}"].append(block)
    return dict(by_section)


def test_every_illustrative_block_says_why_and_marks_a_fence() -> None:
    for block in command_blocks():
        if block.illustrative is not None:
            assert block.illustrative.strip(), f"{block.where}: say why it is not run"
    assert stray_markers() == []


def test_the_docs_keep_runnable_command_blocks() -> None:
    """The run below covers the quick starts (marking them illustrative would hide them)."""
    runnable = runnable_by_section()
    docs = {key.partition("#")[0] for key in runnable}
    assert {"README.md", "docs/devices.md", "docs/memory.md"} <= docs
    readme = " ".join(
        " ".join(b.commands())
        for key, bs in runnable.items()
        if key.startswith("README")
        for b in bs
    )
    for promise in ("orrery run", "orrery devices enroll", "orrery serve", "orrery device "):
        assert promise in readme


def test_the_parser_reads_blocks_as_a_reader_does(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n<!-- illustrative: needs a GPU -->\n```sh\nmake gpu\n```\n\n"
        "```sh\n# a comment\norrery serve \\\n    --port 8765 &\n\norrery devices list\n```\n\n"
        "```\n$ orrery serve\norrery: serving AIP at ws://x\n```\n\n```yaml\nname: x\n```\n",
        encoding="utf-8",
    )
    found = list(blocks(doc))
    assert [b.info for b in found] == ["sh", "sh", "", "yaml"]
    assert found[0].illustrative == "needs a GPU"
    assert found[1].illustrative is None
    assert found[1].commands() == ["orrery serve      --port 8765 &", "orrery devices list"]
    assert found[2].is_command_block
    assert found[2].commands() == ["orrery serve"]
    assert found[2].transcript_output() == ["orrery: serving AIP at ws://x"]
    assert not found[3].is_command_block


def test_a_session_fills_in_what_the_reader_would(tmp_path: Path) -> None:
    session = DocSession(tmp_path)
    session.learn("orr1_abcdefghijklmnopqrstuvwxyz0123\nrun 0123456789ab done; r-00112233aabb\n")
    filled = session.fill(
        "orrery device --server ws://HOST:8765 --token TOKEN; orrery show ID; "
        "orrery memory show r-6ec2d400210f; orrery serve --host 0.0.0.0"
    )
    assert filled == (
        f"orrery device --server ws://127.0.0.1:{session.port} "
        "--token orr1_abcdefghijklmnopqrstuvwxyz0123; orrery show 0123456789ab; "
        "orrery memory show r-00112233aabb; orrery serve --host 127.0.0.1"
    )
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(AssertionError, match="needs a token"):
        DocSession(fresh).fill("echo TOKEN")


def test_a_broken_command_fails_the_session(tmp_path: Path) -> None:
    session = DocSession(tmp_path)
    with pytest.raises(AssertionError, match="exited 2"):
        session.run("orrery devices list --no-such-option", where="doc:1")
    with pytest.raises(AssertionError, match="ended before it was ready"):
        session.run("orrery device --server ws://HOST:8765 --name nobody", where="doc:2")
    with pytest.raises(AssertionError, match="stopped before the session ended"):
        session.close()


@pytest.mark.slow
@pytest.mark.parametrize("section", sorted(runnable_by_section()))
def test_the_command_blocks_run_as_written(section: str, tmp_path: Path) -> None:
    session = DocSession(tmp_path)
    try:
        for command in SETUP.get(section.partition("#")[0], []):
            session.run(command)
        for block in runnable_by_section()[section]:
            session.run_block(block)
    finally:
        session.close()
