"""What the fault tests share: a served orchestrator in the test's loop, `orrery device`
processes, a TCP relay the test can cut, shell commands that leave traces to check, and
bounded waits on conditions (no sleep decides an outcome)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from agents.constellation import Constellation, PlanSpec, build_constellation
from app.runtime.assembly import fleet_tools


def plan(text: dict[str, object]) -> Constellation:
    return build_constellation(PlanSpec.model_validate(text), known_tools=fleet_tools())


async def wait_for(predicate: Callable[[], bool], within: float = 30.0, what: str = "") -> None:
    """Return once `predicate()` holds; AssertionError after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or predicate}")
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` runs (zombies do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def traced_star(
    star_id: str, shared: Path, pids: Path, seconds: float, gate: Path | None = None
) -> dict[str, object]:
    """A `shell.run` star that writes its shell's pid to `pids/STAR` (which is also its
    process group), sleeps `seconds` (or, with `gate`, waits up to 30 s for that file to
    exist), then appends one line naming itself to `shared`: the effect a test counts."""
    wait = (
        f"i=0; while [ ! -e {gate} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"
        if gate is not None
        else f"sleep {seconds}"
    )
    command = (
        f"echo $$ > {pids / star_id}.tmp && mv {pids / star_id}.tmp {pids / star_id}; "
        f"{wait}; echo {star_id} >> {shared}"
    )
    return {"id": star_id, "tool": "shell.run", "retries": 2, "args": {"cmd": command}}


def lines(shared: Path) -> list[str]:
    return shared.read_text().split() if shared.exists() else []


class Relay:
    """A TCP relay on 127.0.0.1 between devices and the orchestrator that the test owns:
    `cut()` drops every link (and refuses new ones until `restore()`); `delay_up` holds
    every chunk on its way to the orchestrator that long (a slow link)."""

    def __init__(self, target_port: int, delay_up: float = 0.0) -> None:
        self.target_port = target_port
        self.delay_up = delay_up  # seconds each chunk toward the orchestrator is held
        self.open = True
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.links = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self.links += 1
        self._writers += [writer, upstream_writer]

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float
        ) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    if delay:
                        await asyncio.sleep(delay)  # a slow link: it holds what it carries
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(
            pipe(reader, upstream_writer, self.delay_up), pipe(upstream_reader, writer, 0.0)
        )

    def cut(self) -> None:
        self.open = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
