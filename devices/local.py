"""`LocalDispatcher`: runs built-in tools in this process as one device (no network)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from devices.host import platform_name
from devices.registry import DeviceInfo
from devices.tools import ToolContext, ToolError, ToolFailed, ToolRegistry, default_tools
from devices.tools.base import ArtifactChannelLike
from devices.tools.errors import InvalidToolArgs, UnknownToolName
from protocol.tasks import TaskAssignment, TaskProgress, TaskResult

log = logging.getLogger(__name__)

_PROGRESS_CHARS = 16_384  # TaskProgress.message's limit

AttemptKey = tuple[str, str, int]


class ApprovalGate(Protocol):
    """Asks a person before risky tool calls (a device's policy says which)."""

    def needed(self, tool: str, args: BaseModel) -> str | None:
        """A one-line summary of the call when it needs approval, else None."""
        ...

    async def ask(self, assignment: TaskAssignment, tool: str, summary: str) -> tuple[bool, str]:
        """(approved, why): waits for the decision."""
        ...


class _Sink(Protocol):
    """The part of `agents.dispatch.TaskSink` this dispatcher calls (structural, no import)."""

    def on_progress(self, progress: TaskProgress) -> None: ...

    def on_result(self, result: TaskResult) -> None: ...


def _attempt(assignment: TaskAssignment) -> str:
    return f"{assignment.constellation_id}/{assignment.star_id}#{assignment.attempt}"


def _key(assignment: TaskAssignment) -> AttemptKey:
    return (assignment.constellation_id, assignment.star_id, assignment.attempt)


@dataclass(frozen=True)
class _Run:
    assignment: TaskAssignment
    task: asyncio.Task[None]


class LocalDispatcher:
    """One in-process device that runs its tools as asyncio tasks in `workspace`.

    Satisfies `agents.dispatch.Dispatcher`. Every assignment ends in exactly one
    `on_result`, unless it is cancelled first: a cancelled attempt reports nothing.
    """

    def __init__(
        self,
        workspace: Path,
        *,
        name: str = "local",
        max_tasks: int = 4,
        labels: Iterable[str] = (),
        tools: ToolRegistry | None = None,
        artifacts: ArtifactChannelLike | None = None,
        approvals: ApprovalGate | None = None,
        private: Iterable[Path] = (),
    ) -> None:
        """`private`: folders a sandboxed tool process must not see (the data dir)."""
        self._approvals = approvals
        self._private = tuple(private)
        self._workspace = Path(workspace)
        self._artifacts = artifacts  # an ArtifactChannel on a device with an orchestrator
        self._workspace.mkdir(parents=True, exist_ok=True, mode=0o700)  # 0700 if made here
        self._tools = tools if tools is not None else default_tools()
        platform = platform_name()
        self._info = DeviceInfo(
            name=name,
            platform=platform,
            labels=frozenset(labels) | {platform},
            tools=frozenset(self._tools.names()),
            max_tasks=max_tasks,
        )
        self._sink: _Sink | None = None
        self._runs: dict[AttemptKey, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # running or still cleaning up
        self._closed = False

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def workspace(self) -> Path:
        return self._workspace

    def devices(self) -> Sequence[DeviceInfo]:
        return (self._info,)

    def tool_schemas(self) -> dict[str, dict[str, Any]]:
        """Tool name -> argument schema of the tools this device offers."""
        return self._tools.schemas()

    def attach(self, sink: _Sink) -> None:
        self._sink = sink

    def assign(self, assignment: TaskAssignment) -> None:
        """Start the attempt and return at once; progress and the result go to the sink."""
        if self._sink is None:
            raise RuntimeError("attach a TaskSink before assigning work")
        key = _key(assignment)
        if key in self._runs:
            log.warning(
                "%s is already running on %r; ignoring the repeat", _attempt(assignment), self.name
            )
            return
        refusal = self._refusal(assignment)
        if refusal is not None:
            log.info("%s refused: %s", _attempt(assignment), refusal)
            result = TaskResult.failure(assignment, refusal)
            asyncio.get_running_loop().call_soon(self._deliver, result)
            return
        task = asyncio.create_task(self._execute(assignment), name=_attempt(assignment))
        self._runs[key] = _Run(assignment, task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("%s started %s on %r", _attempt(assignment), assignment.tool, self.name)

    def cancel(self, assignment: TaskAssignment, reason: str) -> None:
        """Stop the attempt (its process group is killed); it will report no result."""
        run = self._runs.pop(_key(assignment), None)
        if run is None:
            log.debug("%s: nothing to cancel on %r", _attempt(assignment), self.name)
            return
        log.info("%s cancelled on %r: %s", _attempt(assignment), self.name, reason)
        run.task.cancel(reason)

    async def aclose(self) -> None:
        """Cancel every running attempt and wait until they have stopped."""
        self._closed = True
        for run in list(self._runs.values()):
            self.cancel(run.assignment, "the device is shutting down")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _refusal(self, assignment: TaskAssignment) -> str | None:
        if self._closed:
            return f"device {self.name!r} is shut down"
        if assignment.device != self.name:
            return (
                f"task.assign names device {assignment.device!r}, but this is device "
                f"{self.name!r}; not run"
            )
        if assignment.tool not in self._tools:
            return UnknownToolName(assignment.tool, self._tools.names(), device=self.name).message
        if len(self._runs) >= self._info.max_tasks:
            return (
                f"device {self.name!r} is busy: it already runs {len(self._runs)} "
                f"of at most {self._info.max_tasks} tasks"
            )
        return None

    async def _execute(self, assignment: TaskAssignment) -> None:
        try:
            result = await self._outcome(assignment)
        except asyncio.CancelledError:
            log.info("%s stopped", _attempt(assignment))
            raise
        finally:
            current = self._release(_key(assignment))
        if current:  # not cancelled, even if the tool swallowed a cancellation
            self._deliver(result)

    def _release(self, key: AttemptKey) -> bool:
        """Forget the calling task's run; whether it was still current (not cancelled)."""
        run = self._runs.get(key)
        if run is None or run.task is not asyncio.current_task():
            return False
        del self._runs[key]
        return True

    async def _outcome(self, assignment: TaskAssignment) -> TaskResult:
        tool = self._tools.get(assignment.tool)
        context = ToolContext(
            workspace=self._workspace,
            progress=lambda message, stream: self._progress(assignment, message, stream),
            artifacts=self._artifacts,
            private=self._private,
        )
        deadline = asyncio.timeout(assignment.timeout)
        try:
            args = tool.parse_args(assignment.args)
            async with deadline:
                summary = self._approvals.needed(tool.name, args) if self._approvals else None
                if summary is not None and self._approvals is not None:
                    context.progress(f"waiting for approval: {summary}", None)
                    approved, why = await self._approvals.ask(assignment, tool.name, summary)
                    if not approved:
                        raise ToolFailed(f"{tool.name} was not approved: {why or 'refused'}")
                    context.progress(f"approved: {why}" if why else "approved", None)
                output = await tool.run(args, context)
        except InvalidToolArgs as error:
            log.info("%s refused: %s", _attempt(assignment), error.message)
            return TaskResult.failure(assignment, f"star {assignment.star_id!r}: {error.message}")
        except ToolFailed as error:
            log.info("%s failed: %s", _attempt(assignment), error.message)
            dumped = error.output.model_dump(mode="json") if error.output is not None else None
            return TaskResult.failure(assignment, error.message, output=dumped)
        except ToolError as error:
            log.info("%s failed: %s", _attempt(assignment), error.message)
            return TaskResult.failure(assignment, error.message)
        except TimeoutError:
            if not deadline.expired():
                return self._crash(assignment)
            log.info("%s timed out after %gs", _attempt(assignment), assignment.timeout)
            return TaskResult.failure(
                assignment, f"timed out after {assignment.timeout:g}s (the task's timeout)"
            )
        except Exception:
            return self._crash(assignment)
        log.info("%s succeeded", _attempt(assignment))
        return TaskResult.success(assignment, output.model_dump(mode="json"))

    def _crash(self, assignment: TaskAssignment) -> TaskResult:
        log.exception("%s: tool %s crashed", _attempt(assignment), assignment.tool)
        error = sys.exception()
        return TaskResult.failure(
            assignment,
            f"tool {assignment.tool!r} crashed: {type(error).__name__}: {error}; "
            "this is a bug in the device, see its log",
        )

    def _progress(self, assignment: TaskAssignment, message: str, stream: str | None) -> None:
        if self._sink is None or _key(assignment) not in self._runs:
            return
        progress = TaskProgress(
            constellation_id=assignment.constellation_id,
            star_id=assignment.star_id,
            attempt=assignment.attempt,
            message=message[:_PROGRESS_CHARS],
            stream=stream,
        )
        try:
            self._sink.on_progress(progress)
        except Exception:
            log.exception("%s: the sink refused progress", _attempt(assignment))

    def _deliver(self, result: TaskResult) -> None:
        assert self._sink is not None
        try:
            self._sink.on_result(result)
        except Exception:
            log.exception(
                "%s/%s#%d: the sink refused the result",
                result.constellation_id,
                result.star_id,
                result.attempt,
            )
