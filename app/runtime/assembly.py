"""Building a runtime from a data dir: the one place the parts are wired together.

    options = RuntimeOptions(data_dir, this_machine=ThisMachine(), accept_devices=True)
    async with open_runtime(options) as parts:
        run = await parts.runtime.submit(Path("plan.yaml"))

`open_runtime` opens the store (`DATA_DIR/orrery.db`) and the task memory (the tree in
the store; semantic recall in `DATA_DIR/recall`, opened on first use), makes this machine
an in-process device (`this_machine`), accepts devices over AIP (`accept_devices`; serve
them with `app.endpoint.Endpoint`), loads the planner settings (the model itself loads on
the first request in words; the planner recalls past plans from the memory) and shares
one model manager between the planner and this machine's `agent.do`. Every front end
(CLI, desktop app, `orrery serve`) builds its runtime here, so they all run the same thing.

Errors: `StoreError` (the database), `ConfigError` (`orrery.toml`), `PolicyError`
(the device policy file); each message names the file and what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from agents.aip_dispatcher import AipDispatcher
from agents.artifact_store import ArtifactStore
from agents.dispatch import Dispatcher
from agents.fleet_dispatcher import merged_tool_schemas
from agents.fleet_store import StoreKeys, StoreLedger
from agents.models.manager import LazyModelManager
from agents.models.progress import PrepareProgress
from app.config import workspace_dir
from app.runtime.approval_policy import ApprovalPolicy, ask_a_person
from app.runtime.core import Planner, Runtime
from app.runtime.memory import RECALL_DIR, RuntimeMemory
from app.runtime.this_machine import InProcessDevice
from memory import Store
from protocol.private import private_dir
from protocol.session import ServerConfig

STORE_FILE = "orrery.db"
POLICY_FILE = "device.toml"


@dataclass(frozen=True, slots=True)
class ThisMachine:
    """This machine as an in-process device: its name, workspace (default
    DATA_DIR/workspace), how many stars it runs at once, its labels, and the policy file
    that restricts its tools (default DATA_DIR/device.toml if there is one; without one,
    every built-in tool: file tools confined to the workspace, shell.run and python.run
    unconfined)."""

    name: str = "local"
    workspace: Path | None = None
    max_tasks: int = 4
    labels: tuple[str, ...] = ()
    policy: Path | None = None


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """What `open_runtime` builds (see the module docstring)."""

    data_dir: Path
    this_machine: ThisMachine | None = None
    accept_devices: bool = False
    heartbeat: float | None = None
    """Seconds between device heartbeats (3 missed: lost); None: the protocol default."""
    planner: bool = True
    approval_policy: ApprovalPolicy = ask_a_person
    extra_dispatchers: tuple[Dispatcher, ...] = field(default=())
    """More dispatchers to join the fleet (after this machine and AIP)."""
    model_progress: PrepareProgress | None = None
    """Told the steps of the first-use preparation of the embedded model (any thread)."""
    edit_policy: str | None = None
    """The planner's edit policy, over `[planner] edit_policy` of orrery.toml."""
    recall: bool = True
    """Semantic recall over the task memory (DATA_DIR/recall); the tree is kept anyway."""


@dataclass(slots=True)
class RuntimeParts:
    """An assembled runtime and the parts a front end may need to reach."""

    runtime: Runtime
    store: Store
    data_dir: Path
    aip: AipDispatcher | None
    this_machine: InProcessDevice | None
    models: LazyModelManager | None = None


def open_store(data_dir: Path) -> Store:
    """The data dir's store (`StoreError` naming the file if it cannot be opened)."""
    return Store.open_path(data_dir / STORE_FILE)


def fleet_tools() -> frozenset[str]:
    """The tools every `orrery device` offers (plans may name them before any device is up)."""
    from devices.tools import default_tools

    return frozenset(default_tools().names()) | {"agent.do"}


@contextlib.asynccontextmanager
async def open_runtime(options: RuntimeOptions) -> AsyncIterator[RuntimeParts]:
    """Open the store, build the runtime, start it; stop and close everything on exit."""
    data = private_dir(options.data_dir)  # 0700: the store, tokens and outputs live here
    with open_store(data) as store:
        models = None
        dispatchers: list[Dispatcher] = []
        this_machine = None
        if options.this_machine is not None:
            from app.device_run import device_models

            models = device_models(data, progress=options.model_progress)
            this_machine = in_process_device(data, options.this_machine, models)
            dispatchers.append(this_machine)
        aip = None
        if options.accept_devices:
            config = (
                ServerConfig(heartbeat_interval=options.heartbeat) if options.heartbeat else None
            )
            aip = AipDispatcher(
                keys=StoreKeys(store),
                ledger=StoreLedger(store),
                config=config,
                artifacts=ArtifactStore(data / "artifacts"),
            )
            dispatchers.append(aip)
        dispatchers.extend(options.extra_dispatchers)
        memory = RuntimeMemory(store, data / RECALL_DIR if options.recall else None)
        planner: Planner | None = None
        if options.planner:
            from app.planning import RequestPlanner
            from app.settings import load_planner_settings

            if models is None:
                from app.device_run import device_models

                models = device_models(data, progress=options.model_progress)
            settings = load_planner_settings(data)
            if options.edit_policy is not None:
                settings = type(settings).model_validate(
                    {**settings.model_dump(), "edit_policy": options.edit_policy}
                )
            planner = RequestPlanner(
                models, lambda: merged_tool_schemas(dispatchers), settings, memory=memory
            )
        runtime = Runtime(
            store,
            dispatchers,
            planner=planner,
            approval_policy=options.approval_policy,
            fleet_tools=fleet_tools() if aip is not None else (),
            memory=memory,
        )
        if this_machine is not None or aip is not None:
            memory.index_if_behind()  # runs other processes recorded while one wrote the index
        try:
            async with runtime:
                if aip is not None:  # its devices can report what they ran meanwhile
                    runtime.recover(aip.config.heartbeat_interval * aip.config.heartbeat_misses)
                yield RuntimeParts(runtime, store, data, aip, this_machine, models)
        finally:
            if models is not None and planner is None:
                await models.close()


def in_process_device(data: Path, spec: ThisMachine, models: LazyModelManager) -> InProcessDevice:
    """This machine's device: its tools (under its policy, with `agent.do` on `models`)."""
    from agents.models.vram import read_free_vram
    from devices.policy import DevicePolicy
    from devices.tools import default_tools, device_tools

    workspace = workspace_dir(data, spec.workspace)
    policy_file = spec.policy or (data / POLICY_FILE)
    if spec.policy is not None or policy_file.is_file():
        policy = DevicePolicy.load(policy_file)
        from devices.tools.sandbox import sandbox_for

        sandbox_for(policy, workspace, (data,))  # a [sandbox] that cannot run: refused now
        tools = device_tools(policy, lambda: models.backend("device"), free_vram=read_free_vram)
        rule = policy.approval_rule if policy.approval.required else None
    else:
        tools = default_tools(read_free_vram)
        from devices.tools.agent_do import AgentDoTool

        unattended = default_tools(read_free_vram)
        tools.register(AgentDoTool(lambda: unattended, lambda: models.backend("device")))
        rule = None
    return InProcessDevice(
        workspace,
        name=spec.name,
        max_tasks=spec.max_tasks,
        labels=spec.labels,
        tools=tools,
        needs_approval=rule,
        private=(data,),  # a [sandbox] hides the orchestrator's data dir from its tools
    )
