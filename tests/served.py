"""A runtime served on 127.0.0.1 (AIP for devices, the control API for clients) over a
real SQLite store, in the test's own event loop: what `orrery serve` runs, with the
planner and the approval policy the test chooses."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from agents.aip_dispatcher import AipDispatcher
from agents.artifact_store import ArtifactStore
from agents.constellation import Constellation
from agents.dispatch import Dispatcher
from agents.events import EventStream, Listener
from agents.fleet_store import StoreKeys, StoreLedger
from app.control.token import ensure_token
from app.endpoint import Endpoint
from app.runtime import Planner, Runtime, ask_a_person
from app.runtime.approval_policy import ApprovalPolicy
from app.runtime.assembly import fleet_tools
from app.runtime.memory import RuntimeMemory
from app.runtime.proposals import ProposalBook
from memory import Store
from protocol.session import ServerConfig


class Served:
    """`async with Served(store, data_dir) as served:`; see the module docstring."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        *,
        config: ServerConfig | None = None,
        planner: Planner | None = None,
        approval_policy: ApprovalPolicy = ask_a_person,
        port: int = 0,
        extra: Iterable[Dispatcher] = (),
        memory: RuntimeMemory | None = None,
        proposals: ProposalBook | None = None,
    ) -> None:
        self.store = store
        self.data_dir = data_dir
        self.aip = AipDispatcher(
            keys=StoreKeys(store),
            ledger=StoreLedger(store),
            config=config,
            artifacts=ArtifactStore(data_dir / "artifacts"),
        )
        self.runtime = Runtime(
            store,
            [self.aip, *extra],
            planner=planner,
            approval_policy=approval_policy,
            fleet_tools=fleet_tools(),
            memory=memory,
            proposals=proposals,
        )
        self.endpoint = Endpoint(self.runtime, self.aip, token=ensure_token(data_dir), port=port)

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def control_url(self) -> str:
        return self.endpoint.control_url

    @property
    def stream(self) -> EventStream:
        return self.runtime.stream

    async def __aenter__(self) -> Self:
        await self.runtime.start()
        await self.endpoint.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.endpoint.__aexit__(None, None, None)
        await self.runtime.aclose()

    async def run(
        self, constellation: Constellation, listeners: Iterable[Listener] = ()
    ) -> Constellation:
        """Run one constellation to its end (recorded); `listeners` see its events."""
        stops = [self.stream.listen(listener) for listener in listeners]
        try:
            self.runtime.start_constellation(constellation)
            return await self.runtime.orchestrator.wait(constellation.id)
        finally:
            self.runtime.recorder.flush()
            for stop in stops:
                stop()

    async def wait_for_devices(self, count: int, within: float) -> list[str]:
        return await self.runtime.wait_for_devices(count, within)
