"""`orrery approvals`, `approve`, `cancel` and `retry`: steer runs on a server or here.

`orrery run --server` shows a tool call that waits for a person as `approve? ... (request
R ...)`; `orrery approve R --server URL` lets it run, `--deny` refuses it. `cancel ID`
stops a constellation (or with `--star S` one star); `retry ID` runs a finished one again
from where it failed, as a new constellation, and follows it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from app.commands.clients import api_for
from app.commands.follow import Display, follow
from app.exit_codes import EXIT_OK


async def approvals(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        pending = await api.approvals()
    for item in pending:
        if options.json:
            print(json.dumps(item.model_dump(), ensure_ascii=False))
        else:
            where = f"{item.constellation}/{item.star}#{item.attempt}"
            print(f"{item.request}  {where}  on {item.device}  {item.summary}")
    if not pending and not options.json:
        print("no tool call waits for approval", file=sys.stderr)
    return EXIT_OK


async def approve(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        await api.approve(options.request, not options.deny, options.reason)
    print(f"{'refused' if options.deny else 'approved'} {options.request}", file=sys.stderr)
    return EXIT_OK


async def cancel(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options) as api:
        if options.star:
            status = await api.cancel_star(options.id, options.star, options.reason)
            print(f"star {options.star} of {options.id} is {status}", file=sys.stderr)
        else:
            status = await api.cancel(options.id, options.reason)
            print(f"constellation {options.id} is {status}", file=sys.stderr)
    return EXIT_OK


async def retry(options: argparse.Namespace, stop: asyncio.Event) -> int:
    async with api_for(options, this_machine=True) as api:
        run = await api.retry(options.id, options.star)
        where = f"server {options.server}" if options.server else "this machine"
        display = Display(
            json=options.json, where=where, server=options.server, data_dir=options.data_dir
        )
        return await follow(api, run, display, stop)
