"""`orrery history`, `orrery show ID`, `orrery status` and `orrery devices list|enroll`.

Each asks the interface (`app.interface.OrreryApi`): the data dir's runtime in process, or
with `--server URL` a running `orrery serve`, so the answers have one shape either way.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time

from rich.console import Console
from rich.markup import escape

from agents.constellation import Constellation
from app.commands.clients import api_for
from app.control.messages import DeviceEntry, HistoryEntry, Snapshot
from app.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from app.progress import outputs_table, render_output, summary_table
from app.run_stats import run_stats
from app.text_safety import one_line, printable


async def history(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        rows = await api.history(limit=max(1, options.limit), status=options.status)
    for row in rows:
        if options.json:
            print(json.dumps(row.model_dump(mode="json"), ensure_ascii=False))
        else:
            print(_history_line(row))
    return EXIT_OK


def _history_line(row: HistoryEntry) -> str:
    note = f"  {one_line(row.reason)}" if row.reason else ""
    return f"{row.id}  {row.status:<9}  {row.name} ({row.stars} stars){note}"


async def status(options: argparse.Namespace, stop: asyncio.Event) -> int:
    """What runs now, the devices, and what waits for approval."""
    async with api_for(options) as api:
        running = await api.history(limit=100, status="running")
        devices = await api.devices()
        waiting = await api.approvals()
    if options.json:
        document = {
            "running": [r.model_dump(mode="json") for r in running],
            "devices": [d.model_dump(mode="json") for d in devices],
            "approvals": [a.model_dump(mode="json") for a in waiting],
        }
        print(json.dumps(document, ensure_ascii=False))
        return EXIT_OK
    print(f"running: {len(running)}")
    for row in running:
        print(f"  {_history_line(row)}")
    print(f"devices: {len(devices)}")
    for device in devices:
        print(f"  {_device_line(device)}")
    print(f"waiting for approval: {len(waiting)}")
    for item in waiting:
        print(
            f"  {item.request}  {item.constellation}/{item.star}  on {item.device}: {item.summary}"
        )
    return EXIT_OK


async def show(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        snapshot = await api.constellation(options.id)
    drawings = [(f, p) for f, p in (("png", options.png), ("svg", options.svg)) if p]
    if drawings:  # Qt is loaded only to draw
        from app.gui.constellation.render import render_png, render_svg

        drawn = {**snapshot.constellation, "name": snapshot.name, "status": snapshot.status}
        for kind, path in drawings:
            try:
                (render_png if kind == "png" else render_svg)(drawn, path)
            except OSError as exc:
                print(f"orrery: error: cannot write {path}: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
    stars = snapshot.constellation.get("stars") or {}
    if options.output is not None:
        star = stars.get(options.output)
        if star is None:
            known = ", ".join(stars) or "none"
            print(f"orrery: error: no star {options.output!r} in {snapshot.constellation_id} "
                  f"(stars: {known})", file=sys.stderr)  # fmt: skip
            return EXIT_BAD_INPUT
        print(json.dumps(star.get("output"), ensure_ascii=False, indent=2))
        return EXIT_OK
    if options.json:
        print(json.dumps(_document(snapshot), ensure_ascii=False))
        return EXIT_OK
    _print_constellation(snapshot)
    for _, path in drawings:
        print(f"graph drawn to {path}")
    return EXIT_OK


def _document(snapshot: Snapshot) -> dict[str, object]:
    data = snapshot.constellation
    return {
        "id": snapshot.constellation_id,
        "name": snapshot.name,
        "status": snapshot.status,
        "version": snapshot.version,
        "reason": snapshot.reason,
        "rationale": data.get("rationale", ""),
        "description": data.get("description", ""),
        "retry_of": data.get("retry_of"),
        "fan_out": data.get("fan_out"),
        "created_at": snapshot.created_at,
        "finished_at": snapshot.finished_at,
        "live": snapshot.live,
        "stars": list((data.get("stars") or {}).values()),
        "lines": data.get("lines") or [],
        "edits": [e.model_dump(mode="json") for e in snapshot.edits],
        "stats": dataclasses.asdict(run_stats(data)),
    }


def _print_constellation(snapshot: Snapshot) -> None:
    from app.gui.constellation.view_model import edges_of, fan_out_notes

    out = Console(highlight=False, emoji=False)
    out.print(f"[bold]{escape(snapshot.name)}[/] ({snapshot.constellation_id}): "
              f"{snapshot.status}, version {snapshot.version}")  # fmt: skip
    data = snapshot.constellation
    for label, text in (
        ("description", data.get("description")),
        ("rationale", data.get("rationale")),
        ("retry of", data.get("retry_of")),
        ("reason", snapshot.reason),
    ):
        if text:
            out.print(f"{label}: {escape(printable(str(text)))}")
    try:
        constellation = Constellation.model_validate(data)
    except ValueError:
        constellation = None
    if constellation is not None:
        out.print(summary_table(constellation))
        produced = outputs_table(constellation)
        if produced is not None:
            out.print(produced)
    else:  # a record from another version: show what it says
        for star_id, star in (data.get("stars") or {}).items():
            out.print(
                f"  {star_id}: {star.get('status')} {escape(render_output(star.get('output')))}"
            )
    for source, target, kind in edges_of(data):
        out.print(f"  {source} -> {target} ({kind})")
    for note in fan_out_notes(data):
        out.print(f"fan-out: {escape(printable(note))}")
    for edit in snapshot.edits:
        undo = " (undo)" if edit.undo else ""
        out.print(f"edit to version {edit.version}{undo}: {escape(printable(edit.rationale))}")
    out.print(f"parallelism: {run_stats(data).line()}")


async def devices_list(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        devices = await api.devices()
    for device in devices:
        if options.json:
            print(json.dumps(device.model_dump(mode="json"), ensure_ascii=False))
        else:
            print(_device_line(device))
            mcp_tools = [tool for tool in device.tools if tool.startswith("mcp.")]
            if mcp_tools:  # the MCP servers' tools its policy lists (docs/mcp.md)
                print(f"{'':<20} mcp: {one_line(', '.join(mcp_tools))}")
    if not devices and not options.json:
        print("no devices enrolled: `orrery devices enroll NAME` makes one", file=sys.stderr)
    return EXIT_OK


def _device_line(device: DeviceEntry) -> str:
    labels = one_line(",".join(device.labels)) or "-"  # as the device announced them
    load = f"{len(device.running)}/{device.max_tasks}" if device.max_tasks else "-"
    seen = ""
    if device.last_seen is not None:
        seen = f"  seen {_age(time.time() - device.last_seen)} ago"
    where = " (this machine)" if device.in_process else ""
    return f"{device.name:<20} {device.state:<8} {load:>5}  {labels}{seen}{where}"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def devices_enroll(options: argparse.Namespace, stop: asyncio.Event) -> int:
    """Create (or rotate) device NAME's token and print it once (only a key is stored)."""
    async with api_for(options) as api:
        token = await api.enroll(options.name)
    print(token)
    return EXIT_OK
