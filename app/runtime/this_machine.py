"""This machine as a device of the runtime, in process (no network, no device process).

`InProcessDevice` is a `Dispatcher` and `Approvals` around `devices.local.LocalDispatcher`:
its tools run here, in `workspace`; a call its policy wants approved waits for the
runtime's `approve` like a remote device's; and it reports its state (joined, busy,
online, left) like the AIP dispatcher does for remote devices.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agents.dispatch import ApprovalAsked, DeviceChange, TaskSink, UnknownApproval
from devices.local import LocalDispatcher
from devices.registry import DeviceInfo
from devices.tools import ToolRegistry
from devices.tools.base import ArtifactChannelLike
from protocol.tasks import TaskAssignment, TaskProgress, TaskResult

log = logging.getLogger("orrery.this_machine")

ApprovalRule = Callable[[str, BaseModel], str | None]
"""A device policy's rule: a one-line summary of a call that needs approval, else None."""

AttemptKey = tuple[str, str, int]


class InProcessDevice:
    """This machine as one device named `name`; see the module docstring."""

    def __init__(
        self,
        workspace: Path,
        *,
        name: str = "local",
        max_tasks: int = 4,
        labels: Iterable[str] = (),
        tools: ToolRegistry | None = None,
        needs_approval: ApprovalRule | None = None,
        private: Iterable[Path] = (),
        artifacts: ArtifactChannelLike | None = None,
    ) -> None:
        """`private`: folders its sandboxed tool processes must not see (the data dir);
        `artifacts`: where artifact.put and artifact.get keep files (default: none, and
        those tools fail saying so)."""
        self._needs_approval = needs_approval
        self._local = LocalDispatcher(
            workspace,
            name=name,
            max_tasks=max_tasks,
            labels=labels,
            tools=tools,
            approvals=self if needs_approval is not None else None,
            private=private,
            artifacts=artifacts,
        )
        self._sink: TaskSink | None = None
        self._running: set[AttemptKey] = set()
        self._state = ""
        self._pending: dict[str, tuple[ApprovalAsked, asyncio.Future[tuple[bool, str]]]] = {}
        self._requests = itertools.count(1)

    @property
    def name(self) -> str:
        return self._local.name

    @property
    def workspace(self) -> Path:
        return self._local.workspace

    # ---------------------------------------------------------------- Dispatcher

    def attach(self, sink: TaskSink) -> None:
        self._sink = sink
        self._local.attach(self)

    def devices(self) -> Sequence[DeviceInfo]:
        return self._local.devices()

    def tool_schemas(self) -> dict[str, dict[str, Any]]:
        return self._local.tool_schemas()

    def assign(self, assignment: TaskAssignment) -> None:
        self._running.add(assignment.key)
        self._local.assign(assignment)
        self._report_load()

    def cancel(self, assignment: TaskAssignment, reason: str) -> None:
        self._running.discard(assignment.key)
        self._local.cancel(assignment, reason)
        self._report_load()

    def announce(self) -> None:
        """Report that this device joined (once the runtime listens)."""
        self._report("online", "in process", joined=True)

    async def aclose(self) -> None:
        """Stop every running attempt and report that the device left."""
        await self._local.aclose()
        self._running.clear()
        self._report("offline", "the runtime stopped", left=True)

    # ---------------------------------------------------------------- its sink

    def on_progress(self, progress: TaskProgress) -> None:
        if self._sink is not None:
            self._sink.on_progress(progress)

    def on_result(self, result: TaskResult) -> None:
        self._running.discard(result.key)
        self._report_load()
        if self._sink is not None:
            self._sink.on_result(result)

    # ---------------------------------------------------------------- approvals

    def needed(self, tool: str, args: BaseModel) -> str | None:
        """`devices.local.ApprovalGate`: whether the policy wants this call approved."""
        return self._needs_approval(tool, args) if self._needs_approval else None

    async def ask(self, assignment: TaskAssignment, tool: str, summary: str) -> tuple[bool, str]:
        """`devices.local.ApprovalGate`: wait for the runtime's `decide`."""
        request = f"{self.name}-{next(self._requests)}"
        asked = ApprovalAsked(
            request=request,
            constellation_id=assignment.constellation_id,
            star_id=assignment.star_id,
            attempt=assignment.attempt,
            device=self.name,
            tool=tool,
            summary=summary,
        )
        waiter: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._pending[request] = (asked, waiter)
        log.info("%s waits for approval (%s): %s", self.name, request, summary)
        try:
            if self._sink is not None:
                self._sink.on_approval(asked)
            return await waiter
        finally:
            self._pending.pop(request, None)

    def pending_approvals(self) -> list[ApprovalAsked]:
        return [asked for asked, waiter in self._pending.values() if not waiter.done()]

    def decide(
        self, request: str, approved: bool, *, by: str = "", reason: str = ""
    ) -> ApprovalAsked:
        found = self._pending.get(request)
        if found is None or found[1].done():
            raise UnknownApproval(request, [p.request for p in self.pending_approvals()])
        asked, waiter = found
        who = f" by {by}" if by else ""
        waiter.set_result((approved, f"{reason}{who}".strip()))
        return asked

    # ---------------------------------------------------------------- state

    def _report_load(self) -> None:
        limit = self._local.devices()[0].max_tasks
        self._report("busy" if len(self._running) >= limit else "online", "")

    def _report(self, state: str, reason: str, *, joined: bool = False, left: bool = False) -> None:
        if (state == self._state and not joined and not left) or self._sink is None:
            return
        self._state = state
        self._sink.on_device_change(
            DeviceChange(
                device=self.name,
                state=state,
                info=self._local.devices()[0] if joined else None,
                reason=reason,
                running=len(self._running),
                joined=joined,
                left=left,
            )
        )
