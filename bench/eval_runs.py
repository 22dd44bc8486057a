"""The planner evaluation's execution mode: does a plan run and do what was asked?

`run_plan` runs one valid plan on a fleet of real tools: one `InProcessDevice` per device
of the case's fleet, named as there, offering the tools the fleet lists for it, each in a
temporary workspace seeded with the files and folders the request mentions (a few lines
of sample text; CSV files get a header and two rows), artifacts kept in one shared folder
by checksum. `shell.run` and `python.run` run
inside bubblewrap without network (`[sandbox] mode = "bwrap"`), so a command the model
made up can only touch the workspace. The internet is not reached: `http.get` answers
the URLs the request mentions with a small JSON body and refuses any other.

A run succeeds when the constellation finishes `succeeded` and no star's arguments name a
file or folder the request never mentioned (`agents.planner.evaluation.unmentioned_names`);
either failure is reported with its reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.constellation.model import PlanSpec
from agents.planner.evaluation import EvalCase, EvalDevice, unmentioned_names
from agents.planner.steps import mentioned_files, mentioned_folders, mentioned_urls
from app.errors import RequestRejected
from app.runtime import InProcessDevice, Runtime, approve_all
from devices.tools import default_tools
from devices.tools.base import ToolContext, ToolRegistry
from devices.tools.errors import ToolFailed
from devices.tools.http_get import HttpGetArgs, HttpGetResult, HttpGetTool
from devices.tools.policy import DevicePolicy, SandboxPolicy, ToolsPolicy
from devices.tools.policy_registry import apply_policy
from memory import Store

RUN_SECONDS = 60.0


@dataclass(frozen=True)
class RunOutcome:
    ok: bool
    reason: str | None = None


class OfflineHttpGet(HttpGetTool):
    """http.get that answers the request's own URLs without the network."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = {url.rstrip("/") for url in urls}

    async def run(self, args: HttpGetArgs, context: ToolContext) -> HttpGetResult:
        del context
        if args.url.rstrip("/") not in self.urls:
            raise ToolFailed(f"{args.url} is not a URL the request mentions")
        body = json.dumps({"url": args.url, "ok": True})
        return HttpGetResult(
            url=args.url,
            status=200,
            reason="OK",
            headers={"content-type": "application/json"},
            body=body,
            truncated=False,
            bytes=len(body),
        )


@dataclass(frozen=True)
class ArtifactInfo:
    sha256: str
    name: str
    size: int


class FolderArtifacts:
    """The fleet's artifacts, kept as files by checksum in one folder: what an
    orchestrator's artifact store does for connected devices, for in-process ones."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: dict[str, str] = {}
        folder.mkdir(parents=True, exist_ok=True)

    async def upload(self, path: Path, name: str) -> ArtifactInfo:
        data = await asyncio.to_thread(path.read_bytes)
        sha256 = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread((self.folder / sha256).write_bytes, data)
        self.names[sha256] = name
        return ArtifactInfo(sha256, name, len(data))

    async def download(self, sha256: str, dest: Path) -> ArtifactInfo:
        kept = self.folder / sha256
        if not kept.is_file():
            raise ToolFailed(f"no artifact {sha256[:12]} was uploaded")
        data = await asyncio.to_thread(kept.read_bytes)
        await asyncio.to_thread(dest.write_bytes, data)
        return ArtifactInfo(sha256, self.names.get(sha256, dest.name), len(data))


def seed(workspace: Path, request: str) -> None:
    """The files and folders `request` mentions, with sample content, in `workspace`."""
    workspace.mkdir(parents=True, exist_ok=True)
    for name in mentioned_folders(request):
        if name.startswith(("/", "~")):
            continue  # outside the workspace: the system's own, or nothing
        folder = workspace / name.rstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sample.txt").write_text("sample\n", encoding="utf-8")
    for name in mentioned_files(request):
        if name.startswith(("/", "~")):
            continue
        path = workspace / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            text = "name,value\na,1\nb,2\n"
        elif path.suffix == ".json":
            text = "{}\n"
        elif path.suffix == ".py":
            text = "print('ok')\n"
        else:
            text = "sample\n"
        path.write_text(text, encoding="utf-8")


def device_tools(device: EvalDevice, urls: Sequence[str]) -> ToolRegistry:
    builtin = default_tools()
    registry = ToolRegistry(
        [
            OfflineHttpGet(urls) if name == "http.get" else builtin.get(name)
            for name in builtin.names()
        ]
    )
    policy = DevicePolicy(
        tools=ToolsPolicy(enabled=tuple(device.tools)),
        sandbox=SandboxPolicy(mode="bwrap", network=False),
    )
    return apply_policy(policy, registry)


def plan_text(spec: PlanSpec) -> str:
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    return json.dumps(data)


async def run_plan(
    case: EvalCase, spec: PlanSpec, fleet: Sequence[EvalDevice], *, seconds: float = RUN_SECONDS
) -> RunOutcome:
    """Run `spec` for `case` on in-process devices named as `fleet`; see the module."""
    unmentioned = unmentioned_names(case.request, spec, [device.name for device in fleet])
    urls = mentioned_urls(case.request)
    with tempfile.TemporaryDirectory(prefix="orrery-eval-run-") as home:
        root = Path(home)
        artifacts = FolderArtifacts(root / "artifacts")
        devices = []
        for device in fleet:
            workspace = root / "devices" / device.name
            seed(workspace, case.request)
            devices.append(
                InProcessDevice(
                    workspace,
                    name=device.name,
                    labels=device.labels,
                    tools=device_tools(device, urls),
                    artifacts=artifacts,
                )
            )
        with Store.open_path(root / "orrery.db") as store:
            async with Runtime(store, devices, approval_policy=approve_all("eval")) as runtime:
                try:
                    run = await runtime.submit(plan_text=plan_text(spec), source=case.id)
                except RequestRejected as exc:
                    return RunOutcome(False, f"refused: {exc}")
                try:
                    result = await asyncio.wait_for(run.wait(), seconds)
                except TimeoutError:
                    await runtime.cancel(run.id)
                    return RunOutcome(False, f"still running after {seconds:.0f}s")
    if not result.succeeded:
        where = f" at {result.failed_star}" if result.failed_star else ""
        return RunOutcome(False, f"{result.status}{where}: {result.reason or ''}".strip())
    if unmentioned:
        return RunOutcome(False, f"names what the request never mentioned: {unmentioned}")
    return RunOutcome(True)
