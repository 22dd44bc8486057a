"""Serialised constellations for the view tests, made through the real model."""

from __future__ import annotations

from typing import Any

from agents.constellation.model import Constellation
from tests.app.gui.graphs import random_dag

CID = "c0ffee12"


def attempt(number: int, device: str, status: str, error: str | None = None) -> dict[str, Any]:
    return {"number": number, "device": device, "started_at": 1.0, "status": status, "error": error}


def constellation(
    stars: dict[str, dict[str, Any]],
    lines: list[dict[str, Any]] | None = None,
    *,
    cid: str = CID,
    version: int = 1,
    status: str = "running",
    retry_of: str | None = None,
) -> dict[str, Any]:
    data = {
        "id": cid,
        "name": "release",
        "version": version,
        "status": status,
        "retry_of": retry_of,
        "stars": {
            sid: {"id": sid, "tool": "shell.run", "args": {"cmd": "true"}, **fields}
            for sid, fields in stars.items()
        },
        "lines": lines or [],
    }
    return Constellation.model_validate(data).model_dump(mode="json", by_alias=True)


CHECK = {"path": "output.returncode", "op": "eq", "value": 0}


def release() -> dict[str, Any]:
    """Eight stars in every kind of state, three devices, every kind of line."""
    return constellation(
        {
            "fetch": {"title": "Fetch", "status": "succeeded",
                      "attempts": [attempt(1, "laptop", "succeeded")]},
            "build": {"title": "Build", "status": "running", "after": ["fetch"], "retries": 2,
                      "attempts": [attempt(1, "rig", "failed", "exit 1"),
                                   attempt(2, "rig", "running")]},
            "test": {"title": "Test", "status": "running", "after": ["fetch"],
                     "attempts": [attempt(1, "box", "running")]},
            "bench": {"title": "Bench", "status": "failed", "after": ["fetch"],
                      "error": "timed out", "attempts": [attempt(1, "rig", "failed", "timed out")]},
            "ship": {"title": "Ship", "after": ["build", "test"]},
            "notify": {"title": "Notify", "status": "skipped", "after": ["bench"],
                       "skip_reason": "upstream star 'bench' failed"},
            "report": {"title": "Report"},
            "tidy": {"title": "Tidy", "status": "ready"},
        },
        [
            {"from": "bench", "to": "report", "kind": "completion"},
            {"from": "test", "to": "tidy", "kind": "condition", "when": CHECK},
        ],
    )  # fmt: skip


def big(n: int, seed: int = 1) -> dict[str, Any]:
    """`n` waiting stars in a random DAG."""
    ids, edges = random_dag(n, seed)
    after: dict[str, list[str]] = {s: [] for s in ids}
    for a, b in edges:
        after[b].append(a)
    return constellation({s: {"after": after[s]} for s in ids}, cid=f"big-{n}")


def shown(tooltip: str) -> str:
    """A tooltip's text as a person reads it (tooltips are escaped rich text)."""
    from PySide6.QtGui import QTextDocument

    document = QTextDocument()
    document.setHtml(tooltip)
    return document.toPlainText().replace("\xa0", " ")
