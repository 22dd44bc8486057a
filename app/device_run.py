"""`orrery device`: run this machine as a device agent until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from agents.models.manager import LazyModelManager, ModelManager
from agents.models.progress import PrepareProgress
from agents.models.vram import read_free_vram
from devices.agent import DeviceAgent
from devices.policy import DevicePolicy
from devices.tools import Tool, device_tools
from protocol.private import private_dir
from protocol.transport import client_ssl_context

POLICY_FILE = "device.toml"


def load_policy(data_dir: Path, explicit: Path | None) -> DevicePolicy:
    """`--policy FILE`, else `DATA_DIR/device.toml` if there is one, else the safe default.
    Raises `PolicyError` naming the file and the key at fault."""
    if explicit is not None:
        return DevicePolicy.load(explicit)
    default = data_dir / POLICY_FILE
    return DevicePolicy.load(default) if default.is_file() else DevicePolicy()


def device_models(data_dir: Path, *, progress: PrepareProgress | None = None) -> LazyModelManager:
    """The models of the `[models]` configuration (DATA_DIR/orrery.toml), found on first use;
    `progress` sees the first-use preparation of the embedded model (joining its pieces),
    from the worker thread that finds them (`app.models_cli.preparation_progress`)."""

    def make() -> ModelManager:
        from agents.models.registry import ModelRegistry
        from app.settings import load_model_config

        config = load_model_config(data_dir)
        registry = ModelRegistry.discover(
            data_dir=data_dir, paths=config.paths, default_name=config.default, progress=progress
        )
        return ModelManager(registry, config)

    return LazyModelManager(make)


async def run_device(
    *,
    server: str,
    name: str,
    token: str,
    data_dir: Path,
    labels: list[str],
    max_tasks: int,
    workspace: Path | None = None,
    tls_ca: Path | None = None,
    policy: DevicePolicy | None = None,
    shutdown_grace: float = 10.0,
    stop: asyncio.Event,
) -> None:
    """Connect (and reconnect) until `stop` is set; raises `DeviceRefused` if refused."""
    policy = policy or DevicePolicy()
    ssl = client_ssl_context(tls_ca) if server.startswith("wss") else None
    models = device_models(data_dir)
    async with contextlib.AsyncExitStack() as stack:
        extra: list[Tool[Any, Any]] = []
        unlisted: list[str] = []
        if policy.mcp.servers:  # the SDK is imported only for a device that uses it
            from devices.mcp import McpServers

            place = workspace if workspace is not None else data_dir / "workspace"
            private_dir(data_dir)
            place.mkdir(parents=True, exist_ok=True, mode=0o700)
            servers = McpServers(policy.mcp, workspace=place, log_dir=data_dir / "mcp")
            await stack.enter_async_context(servers)
            extra, unlisted = list(servers.tools()), servers.unlisted
        tools = device_tools(
            policy,
            lambda: models.backend("device"),
            free_vram=read_free_vram,
            extra=extra,
            unlisted=unlisted,
        )
        agent = DeviceAgent(
            server,
            name,
            token,
            data_dir=data_dir,
            workspace=workspace,
            labels=labels,
            max_tasks=max_tasks,
            ssl=ssl,
            tools=tools,
            needs_approval=policy.approval_rule if policy.approval.required else None,
            shutdown_grace=shutdown_grace,
            free_vram=read_free_vram,
        )
        try:
            await agent.run(stop)
        finally:
            await models.close()
