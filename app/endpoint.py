"""`Endpoint`: a runtime served on a port, for devices (AIP) and scripts (control API).

    async with Endpoint(runtime, aip, host="127.0.0.1", port=8765, token=token) as ep:
        ep.url          # ws://127.0.0.1:8765/aip/v1   where devices dial in
        ep.control_url  # ws://127.0.0.1:8765/control/v1   where clients connect

Both live on one port. Leaving the block stops listening and closes every connection;
entering it again listens on the same port.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from agents.aip_dispatcher import AipDispatcher
from app.control.messages import CONTROL_PATH
from app.control.server import ControlServer
from app.runtime.core import Runtime
from protocol.transport import AIP_PATH, AipServer, serve_aip, server_ssl_context


class Endpoint:
    """See the module docstring. `token` is the control token (None: refuse everyone)."""

    def __init__(
        self,
        runtime: Runtime,
        aip: AipDispatcher,
        *,
        token: str | None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.runtime = runtime
        self.aip = aip
        self.control = ControlServer(runtime, token)
        self._host, self._port = host, port
        self._ssl = server_ssl_context(tls_cert, tls_key) if tls_cert and tls_key else None
        self._server: AipServer | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Where devices dial in: ws(s)://host:port/aip/v1."""
        scheme = "wss" if self._ssl else "ws"
        return f"{scheme}://{self._host}:{self._port}{AIP_PATH}"

    @property
    def control_url(self) -> str:
        """Where clients connect: ws(s)://host:port/control/v1."""
        return self.url.removesuffix(AIP_PATH) + CONTROL_PATH

    async def __aenter__(self) -> Self:
        self._server = await serve_aip(
            self.aip.handle,
            self._host,
            self._port,
            ssl=self._ssl,
            extra={CONTROL_PATH: self.control.handle},
        )
        self._port = self._server.port
        await self._server.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.__aexit__(None, None, None)
            self._server = None
        self.runtime.recorder.flush()
