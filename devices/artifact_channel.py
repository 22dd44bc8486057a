"""A device's artifact channel: upload files to the orchestrator, download them back.

`ArtifactChannel` is what the `artifact.put` and `artifact.get` tools call. It works over
the device agent's current AIP connection: an upload streams the file
(`protocol.artifact_stream.send_artifact`) and waits for the orchestrator's `ack` of its
`artifact.done` (sent once the orchestrator has verified and kept it); a download sends
`artifact.fetch` and receives the offer, chunks and done into a verified file. The agent
feeds it the session events (`on_event`); a lost connection fails what is pending.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocol.artifact_stream import send_artifact
from protocol.artifacts import ArtifactError, ArtifactReceiver
from protocol.messages import ProtocolViolation
from protocol.session import (
    ArtifactChunk,
    ArtifactFinished,
    ArtifactOffered,
    DeviceSession,
    MessageAcked,
    PeerError,
    SessionClosed,
    SessionEvent,
)
from protocol.transport import SessionDriver

log = logging.getLogger("orrery.device.artifacts")

DEFAULT_TIMEOUT = 600.0


class ArtifactTransferFailed(Exception):
    """An upload or download did not complete; the message says why."""


@dataclass(frozen=True)
class ArtifactInfo:
    """A stored artifact: its content hash (the id other devices fetch it by), name, size."""

    sha256: str
    name: str
    size: int


Connection = Callable[[], tuple[DeviceSession, SessionDriver] | None]
"""Returns the live, welcomed session and its driver, or None when disconnected."""


class ArtifactChannel:
    """Uploads and downloads over whatever connection `connection()` returns."""

    def __init__(
        self,
        connection: Connection,
        incoming: Path,
        *,
        max_size: int = 1 << 30,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._connection = connection
        self.timeout = timeout
        self._receiver = ArtifactReceiver(incoming, max_size=max_size)
        self._uploads: dict[str, asyncio.Future[None]] = {}  # offer and done ids -> waiter
        self._fetches: dict[str, asyncio.Future[Path]] = {}  # fetch id -> waiter
        self._transfers: dict[str, str] = {}  # transfer -> fetch id

    async def upload(self, path: Path, name: str) -> ArtifactInfo:
        """Send `path` to the orchestrator as `name`; returns once it is stored there.

        A refusal of the offer or of the done (too large, no store) fails it at once."""
        session, driver = self._live()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        refs: list[str] = []

        def sent(message_id: str) -> None:
            refs.append(message_id)
            self._uploads[message_id] = waiter

        try:
            try:
                offer, _ = await send_artifact(
                    session, driver, path, name, on_sent=sent, refused=waiter.done
                )
            except (ArtifactError, ProtocolViolation) as exc:
                refusal = waiter.exception() if waiter.done() else None
                if refusal is not None:  # the orchestrator said why: that is the reason
                    raise refusal from None
                raise ArtifactTransferFailed(f"cannot upload {path.name}: {exc.message}") from exc
            try:
                await asyncio.wait_for(waiter, self.timeout)
            except TimeoutError:
                raise ArtifactTransferFailed(
                    f"the orchestrator did not confirm {name} within {self.timeout:g}s"
                ) from None
        finally:
            for ref in refs:
                self._uploads.pop(ref, None)
        return ArtifactInfo(sha256=offer.sha256, name=offer.name, size=offer.size)

    async def download(self, sha256: str, dest: Path) -> ArtifactInfo:
        """Fetch artifact `sha256` into `dest` (replaced); verified before it appears."""
        session, driver = self._live()
        transfer = uuid.uuid4().hex
        waiter: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        try:
            fetch_id = session.fetch_artifact(sha256, transfer)
        except ProtocolViolation as exc:
            raise ArtifactTransferFailed(f"cannot fetch {sha256}: {exc.message}") from exc
        self._fetches[fetch_id] = waiter
        self._transfers[transfer] = fetch_id
        driver.flush()
        try:
            received = await asyncio.wait_for(waiter, self.timeout)
        except TimeoutError:
            self._receiver.abort(transfer, "timed out")
            raise ArtifactTransferFailed(
                f"artifact {sha256} did not arrive within {self.timeout:g}s"
            ) from None
        finally:
            self._fetches.pop(fetch_id, None)
            self._transfers.pop(transfer, None)
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = received.stat().st_size
        name = received.name
        os.replace(received, dest)
        return ArtifactInfo(sha256=sha256, name=name, size=size)

    def on_event(self, event: SessionEvent) -> None:
        """Feed every session event of the live connection here."""
        if isinstance(event, MessageAcked):
            waiter = self._uploads.get(event.ref)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(event, PeerError) and event.ref is not None:
            self._fail_ref(event.ref, f"the orchestrator refused it: {event.message}")
        elif isinstance(event, ArtifactOffered | ArtifactChunk | ArtifactFinished):
            self._incoming(event)
        elif isinstance(event, SessionClosed):
            self._fail_all(f"the connection was lost ({event.reason})")

    def close(self) -> None:
        self._fail_all("the device agent stopped")
        self._receiver.close()

    # -- internals

    def _live(self) -> tuple[DeviceSession, SessionDriver]:
        live = self._connection()
        if live is None:
            raise ArtifactTransferFailed("not connected to the orchestrator; try again later")
        return live

    def _incoming(self, event: ArtifactOffered | ArtifactChunk | ArtifactFinished) -> None:
        transfer: str | None = None
        try:
            if isinstance(event, ArtifactOffered):
                transfer = event.offer.body.transfer
                if transfer not in self._transfers:
                    raise ArtifactError("an artifact nobody asked for", transfer=transfer)
                self._receiver.on_offer(event.offer)
            elif isinstance(event, ArtifactChunk):
                self._receiver.on_chunk(event.data)
            else:
                transfer = event.done.body.transfer
                path = self._receiver.on_done(event.done)
                fetch = self._fetches.get(self._transfers.get(transfer, ""))
                if fetch is not None and not fetch.done():
                    fetch.set_result(path)
        except ArtifactError as exc:
            log.warning("artifact transfer refused: %s", exc.message)
            transfer = transfer or exc.transfer
            if transfer is not None and transfer in self._transfers:
                self._fail_ref(self._transfers[transfer], exc.message)

    def _fail_ref(self, ref: str, reason: str) -> None:
        upload = self._uploads.get(ref)
        if upload is not None and not upload.done():
            upload.set_exception(ArtifactTransferFailed(reason))
        fetch = self._fetches.get(ref)
        if fetch is not None and not fetch.done():
            fetch.set_exception(ArtifactTransferFailed(reason))

    def _fail_all(self, reason: str) -> None:
        waiters: list[asyncio.Future[None] | asyncio.Future[Path]] = [
            *self._uploads.values(),
            *self._fetches.values(),
        ]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ArtifactTransferFailed(reason))
        self._receiver.abort_all(reason)
