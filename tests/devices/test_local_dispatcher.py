"""LocalDispatcher: devices, assignment, progress, results, cancellation and shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ConfigDict

from devices.host import platform_name
from devices.local import LocalDispatcher
from devices.registry import DeviceInfo, canonical_platform
from devices.tools import Tool, ToolContext, ToolRegistry
from protocol.tasks import TaskAssignment, TaskOutcome, TaskProgress, TaskResult

if TYPE_CHECKING:
    from conftest import FakeSink, Pids


def assignment(star: str, tool: str = "shell.run", **args: Any) -> TaskAssignment:
    return TaskAssignment(
        constellation_id="c1", star_id=star, attempt=1, device="local", tool=tool, args=args
    )


async def settle(dispatcher: LocalDispatcher) -> None:
    """Stop the dispatcher and let already-scheduled deliveries run."""
    await dispatcher.aclose()
    await asyncio.sleep(0)


def test_platform_names() -> None:
    assert platform_name("linux") == "linux"
    assert platform_name("darwin") == "macos"
    assert platform_name("win32") == "windows"
    assert platform_name("freebsd14") == "freebsd14"


def test_the_orchestrators_view_of_a_device_reads_platform_aliases() -> None:
    assert canonical_platform("Darwin") == "macos"
    assert canonical_platform("linux2") == "linux"
    assert canonical_platform("cygwin") == "windows"
    mac = DeviceInfo(name="m", platform="darwin", tools=frozenset({"shell.run"}))
    assert mac.platform == "macos"
    assert mac.mismatch(tool="shell.run", platform="macos") is None
    assert mac.mismatch(tool="shell.run", platform="darwin") is None
    assert mac.mismatch(tool="shell.run", platform="linux") == "runs macos, not linux"


async def test_describes_one_device(tmp_path: Path) -> None:
    workspace = tmp_path / "not" / "yet"
    local = LocalDispatcher(workspace, name="box", max_tasks=2, labels=["gpu-less"])
    assert workspace.is_dir()
    [device] = local.devices()
    assert device.name == "box"
    assert device.platform == platform_name()
    assert device.labels == {"gpu-less", platform_name()}
    assert {"fs.list", "fs.read", "fs.write", "python.run", "shell.run"} <= device.tools
    assert {"artifact.put", "artifact.get"} <= device.tools
    assert device.max_tasks == 2
    assert device.mismatch(tool="shell.run", labels=["gpu-less"]) is None


async def test_success_reports_progress_then_one_result(
    dispatcher: LocalDispatcher, sink: FakeSink
) -> None:
    task = assignment("hello", cmd="echo hi; echo there")
    dispatcher.assign(task)
    result = await sink.result("hello")
    assert result.status is TaskOutcome.SUCCEEDED
    assert result.error is None
    assert result.output["stdout"] == "hi\nthere\n"
    assert result.output["returncode"] == 0
    assert result.output.keys() == {"returncode", "stdout", "stderr", "truncated", "duration"}
    messages = [(p.message, p.stream) for p in sink.progress.items]
    assert messages == [("hi", "stdout"), ("there", "stdout")]
    assert all(
        (p.constellation_id, p.star_id, p.attempt) == ("c1", "hello", 1)
        for p in sink.progress.items
    )
    await settle(dispatcher)
    assert sink.results.items == [result]


async def test_failure_carries_exit_code_and_output(
    dispatcher: LocalDispatcher, sink: FakeSink
) -> None:
    dispatcher.assign(assignment("bad", cmd="echo out; echo nope >&2; exit 2"))
    result = await sink.result("bad")
    assert result.status is TaskOutcome.FAILED
    assert result.error == "command exited with code 2: nope"
    assert result.output["returncode"] == 2
    assert result.output["stdout"] == "out\n"


async def test_invalid_arguments_fail_naming_the_star_and_the_field(
    dispatcher: LocalDispatcher, sink: FakeSink
) -> None:
    dispatcher.assign(assignment("args", command="ls"))
    result = await sink.result("args")
    assert result.status is TaskOutcome.FAILED
    assert result.error is not None
    assert result.error.startswith(
        "star 'args': invalid arguments for shell.run: cmd: Field required; "
    )
    assert "command: Extra inputs are not permitted" in result.error
    assert result.output is None


async def test_unknown_tool_fails_listing_the_offer(
    dispatcher: LocalDispatcher, sink: FakeSink
) -> None:
    dispatcher.assign(assignment("what", tool="mail.send", to="x"))
    result = await sink.result("what")
    assert result.status is TaskOutcome.FAILED
    assert result.error == (
        "device 'local' has no tool 'mail.send'; it offers: artifact.get, artifact.put, "
        "fs.list, fs.read, fs.write, http.get, python.run, shell.run, sys.info"
    )


async def test_other_tools_run_in_the_workspace(
    dispatcher: LocalDispatcher, sink: FakeSink, workspace: Path
) -> None:
    dispatcher.assign(assignment("w", tool="fs.write", path="out/r.txt", content="42"))
    assert (await sink.result("w")).output == {"path": "out/r.txt", "bytes_written": 2}
    dispatcher.assign(assignment("r", tool="python.run", code="print(open('out/r.txt').read())"))
    assert (await sink.result("r")).output["stdout"] == "42\n"
    dispatcher.assign(assignment("x", tool="fs.read", path="../secret"))
    assert "outside the workspace" in ((await sink.result("x")).error or "")


async def test_assignment_timeout(dispatcher: LocalDispatcher, sink: FakeSink) -> None:
    task = assignment("slow", cmd="sleep 30").model_copy(update={"timeout": 0.3})
    dispatcher.assign(task)
    result = await sink.result("slow")
    assert result.status is TaskOutcome.FAILED
    assert result.error == "timed out after 0.3s (the task's timeout)"


async def test_tool_timeout_keeps_partial_output(
    dispatcher: LocalDispatcher, sink: FakeSink
) -> None:
    dispatcher.assign(assignment("slow", cmd="echo begun; sleep 30", timeout=0.3))
    result = await sink.result("slow")
    assert result.error == "timed out after 0.3s"
    assert result.output["stdout"] == "begun\n"


async def test_cancel_kills_the_process_and_reports_nothing(
    dispatcher: LocalDispatcher, sink: FakeSink, pids: Pids
) -> None:
    task = assignment("long", cmd="sleep 30 & echo $! > child.pid; echo ready; wait")
    dispatcher.assign(task)
    await sink.line("ready")
    child = pids.read("child.pid")
    dispatcher.cancel(task, "the plan changed")
    await pids.gone(child)
    dispatcher.assign(assignment("next", cmd="true"))  # the slot is free again
    assert (await sink.result("next")).status is TaskOutcome.SUCCEEDED
    await settle(dispatcher)
    assert [result.star_id for result in sink.results.items] == ["next"]


async def test_cancel_of_unknown_attempt_is_harmless(
    dispatcher: LocalDispatcher, sink: FakeSink
) -> None:
    dispatcher.cancel(assignment("never"), "nothing")
    await settle(dispatcher)
    assert sink.results.items == []


async def test_aclose_stops_everything_without_results(
    dispatcher: LocalDispatcher, sink: FakeSink, pids: Pids
) -> None:
    for star in ("one", "two"):
        dispatcher.assign(assignment(star, cmd=f"echo $$ > {star}.pid; echo {star}; sleep 30"))
    await sink.line("one")
    await sink.line("two")
    await asyncio.wait_for(dispatcher.aclose(), 15)
    await asyncio.sleep(0)
    for star in ("one", "two"):
        await pids.gone(pids.read(f"{star}.pid"))
    assert sink.results.items == []
    dispatcher.assign(assignment("late", cmd="true"))
    assert (await sink.result("late")).error == "device 'local' is shut down"


async def test_refusals(dispatcher: LocalDispatcher, sink: FakeSink) -> None:
    elsewhere = assignment("far").model_copy(update={"device": "laptop"})
    dispatcher.assign(elsewhere)
    assert (await sink.result("far")).error == (
        "task.assign names device 'laptop', but this is device 'local'; not run"
    )
    for n in range(3):
        dispatcher.assign(assignment(f"busy{n}", cmd=f"echo go{n}; sleep 30"))
    dispatcher.assign(assignment("fourth", cmd="true"))
    result = await sink.result("fourth")
    assert result.error == "device 'local' is busy: it already runs 3 of at most 3 tasks"


async def test_repeated_assignment_runs_once(dispatcher: LocalDispatcher, sink: FakeSink) -> None:
    task = assignment("twice", cmd="echo once")
    dispatcher.assign(task)
    dispatcher.assign(task)
    await sink.result("twice")
    await settle(dispatcher)
    assert len(sink.results.items) == 1
    assert [p.message for p in sink.progress.items] == ["once"]


async def test_assign_needs_a_sink(workspace: Path) -> None:
    local = LocalDispatcher(workspace)
    with pytest.raises(RuntimeError, match="attach"):
        local.assign(assignment("x", cmd="true"))


async def test_results_are_plain_json(dispatcher: LocalDispatcher, sink: FakeSink) -> None:
    dispatcher.assign(assignment("j", tool="fs.list"))
    result = await sink.result("j")
    assert TaskResult.model_validate_json(result.model_dump_json()) == result


class Nothing(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stubborn(Tool[Nothing, Nothing]):
    """Swallows its cancellation and returns anyway."""

    name = "test.stubborn"
    args_model = Nothing
    result_model = Nothing

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.swallowed = asyncio.Event()

    async def run(self, args: Nothing, context: ToolContext) -> Nothing:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.swallowed.set()
        return Nothing()


class Broken(Tool[Nothing, Nothing]):
    name = "test.broken"
    args_model = Nothing
    result_model = Nothing

    async def run(self, args: Nothing, context: ToolContext) -> Nothing:
        context.progress("about to break", None)
        raise RuntimeError("boom")


async def test_custom_tools_crashes_and_swallowed_cancellation(
    workspace: Path, sink: FakeSink
) -> None:
    stubborn = Stubborn()
    local = LocalDispatcher(workspace, tools=ToolRegistry([stubborn, Broken()]))
    local.attach(sink)
    assert local.devices()[0].tools == {"test.stubborn", "test.broken"}

    local.assign(assignment("broken", tool="test.broken"))
    result = await sink.result("broken")
    assert result.error == (
        "tool 'test.broken' crashed: RuntimeError: boom; this is a bug in the device, see its log"
    )
    assert [p.message for p in sink.progress.items] == ["about to break"]

    task = assignment("stubborn", tool="test.stubborn")
    local.assign(task)
    await asyncio.wait_for(stubborn.started.wait(), 15)
    local.cancel(task, "no longer needed")
    await asyncio.wait_for(stubborn.swallowed.wait(), 15)
    await settle(local)
    assert [r.star_id for r in sink.results.items] == ["broken"]


async def test_a_failing_sink_does_not_break_the_run(
    workspace: Path, sink: FakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(progress: TaskProgress) -> None:
        raise ValueError("no progress, thanks")

    monkeypatch.setattr(sink, "on_progress", refuse)
    local = LocalDispatcher(workspace)
    local.attach(sink)
    local.assign(assignment("g", cmd="seq 1 3"))
    assert (await sink.result("g")).output["stdout"] == "1\n2\n3\n"
    await local.aclose()
