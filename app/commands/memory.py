"""`orrery memory search TEXT`, `orrery memory show ID` and `orrery memory forget ID`.

Each asks the interface (`app.interface.OrreryApi`): the data dir's runtime in process,
or with `--server URL` a running `orrery serve`, so the answers have one shape either
way. `search` finds past requests by meaning, with their outcome and plan; `show` prints
one request's memory tree (request → constellations → stars → attempts, with revisions
and stale marks); `forget` takes a request out of recall for good.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys

from rich.console import Console
from rich.markup import escape

from app.commands.clients import api_for
from app.control.messages import MemoryHit, MemoryNodeInfo, MemoryTree
from app.exit_codes import EXIT_OK


async def search(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        hits = await api.memory_search(options.text, limit=max(1, options.limit))
    if options.json:
        for hit in hits:
            print(json.dumps(hit.model_dump(mode="json"), ensure_ascii=False))
        return EXIT_OK
    if not hits:
        print("nothing remembered like that yet (requests are remembered once they ran)",
              file=sys.stderr)  # fmt: skip
        return EXIT_OK
    out = Console(highlight=False, emoji=False)
    for hit in hits:
        _print_hit(out, hit)
    return EXIT_OK


def _print_hit(out: Console, hit: MemoryHit) -> None:
    when = _when(hit.finished_at or hit.created_at)
    out.print(f"[bold]{hit.request}[/]  {hit.similarity:.2f}  {escape(hit.text)}")
    repaired = f", {hit.repaired} repaired" if hit.repaired else ""
    failures = f"; {hit.failures} failure(s){repaired}" if hit.failures else ""
    fleet = f" on {', '.join(hit.fleet)}" if hit.fleet else ""
    out.print(f"  {escape(hit.outcome)}{failures}, {when}{fleet}")
    for star in hit.plan:
        after = f" after {', '.join(star['after'])}" if star.get("after") else ""
        title = f"  {star['title']}" if star.get("title") else ""
        out.print(f"    {star['id']}: {star['tool']} on {star['on']}{after}{escape(title)}")


async def show(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        tree = await api.memory_show(options.id)
    if options.json:
        print(json.dumps(tree.model_dump(mode="json"), ensure_ascii=False))
        return EXIT_OK
    _print_tree(Console(highlight=False, emoji=False), tree)
    return EXIT_OK


def _print_tree(out: Console, tree: MemoryTree) -> None:
    forgotten = " (forgotten: not recalled)" if tree.forgotten else ""
    out.print(f"[bold]{tree.request}[/] {tree.status}{forgotten}: {escape(tree.text)}")
    out.print(f"  asked {_when(tree.created_at)} ({tree.source})")
    source = (tree.summary or {}).get("from_memory")
    if source:
        out.print(f"  planned from the memory of {source}")
    children: dict[str | None, list[MemoryNodeInfo]] = {}
    for node in tree.nodes:
        children.setdefault(node.parent, []).append(node)

    def walk(parent: str, depth: int) -> None:
        for node in children.get(parent, []):
            out.print("  " * depth + _node_line(node))
            for revision in node.revisions[1:]:
                detail = ", ".join(f"{k}={v}" for k, v in revision.detail.items())
                line = f"rev {revision.revision} {revision.kind}{': ' + detail if detail else ''}"
                out.print("  " * (depth + 2) + escape(line))
            walk(node.id, depth + 1)

    walk(tree.request, 1)
    summary = tree.summary or {}
    for failure in summary.get("failures") or []:
        repaired = failure.get("repaired") or "not repaired"
        where = f"{failure.get('star')} ({failure.get('tool')}) on {failure.get('device') or '-'}"
        out.print(escape(f"  failure: {where}: {failure.get('error')}; {repaired}"))


def _node_line(node: MemoryNodeInfo) -> str:
    stale = " [stale]" if node.stale else ""
    took = ""
    if node.started_at is not None and node.finished_at is not None:
        took = f" {node.finished_at - node.started_at:.1f}s"
    facts = ""
    if node.kind == "star":
        facts = f" {node.inputs.get('tool', '')} on {_on(node.inputs.get('on'))}"
        output = node.output or {}
        if output.get("exit_code") is not None:
            facts += f" exit {output['exit_code']}"
        if output.get("error"):
            facts += f" ({output['error']})"
    elif node.kind == "attempt" and (node.output or {}).get("error"):
        facts = f" ({(node.output or {})['error']})"
    return escape(f"{node.kind} {node.id}: {node.name} — {node.status}{took}{facts}{stale}")


def _on(on: object) -> str:
    if isinstance(on, dict) and on.get("name"):
        return str(on["name"])
    if isinstance(on, dict) and on.get("labels"):
        return "labels " + ",".join(str(label) for label in on["labels"])
    return "any"


async def forget(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        forgotten = await api.memory_forget(options.id)
    if forgotten.forgotten:
        print(f"forgot {forgotten.request}: it will not be recalled again", file=sys.stderr)
    else:
        print(f"{forgotten.request} was forgotten already", file=sys.stderr)
    return EXIT_OK


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")
