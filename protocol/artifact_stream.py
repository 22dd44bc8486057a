"""Sending a whole artifact over a live session without holding it in memory.

`send_artifact` queues the `artifact.offer`, then each chunk frame, then the
`artifact.done`, flushing as it goes and waiting for the connection to drain every few
frames, so memory holds a handful of chunks whatever the file's size. Both the
orchestrator (answering `artifact.fetch`) and a device (`artifact.put`) use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from protocol.artifacts import ArtifactError, ArtifactSender
from protocol.messages import ArtifactDoneBody, ArtifactOfferBody

DRAIN_EVERY = 8
"""Chunk frames queued before waiting for the socket to take them."""


class _Session(Protocol):
    max_frame: int

    def send_artifact_offer(self, body: ArtifactOfferBody) -> str: ...

    def send_artifact_chunk(self, frame: bytes) -> None: ...

    def send_artifact_done(self, body: ArtifactDoneBody) -> str: ...


class _Driver(Protocol):
    def flush(self) -> None: ...

    async def drained(self) -> None: ...


async def send_artifact(
    session: _Session,
    driver: _Driver,
    path: Path,
    name: str,
    *,
    transfer: str | None = None,
    on_sent: Callable[[str], None] | None = None,
    refused: Callable[[], bool] | None = None,
) -> tuple[ArtifactOfferBody, str]:
    """Stream `path` as artifact `name`; returns its offer and the `artifact.done` message id.

    `on_sent` hears the id of the offer and of the done as each is queued (so a refusal
    naming either can be matched while chunks still go out); once `refused()` is true the
    transfer is abandoned with an aborting done instead of sending the rest.
    Raises `ArtifactError` if the file cannot be read (or changes while it is sent: the
    receiver is then told to discard it), `ProtocolViolation` if the session is not active.
    """
    sender = ArtifactSender(path, name, transfer=transfer, max_frame=session.max_frame)
    offer = (await asyncio.to_thread(sender.offer)).body  # hashes the file off the loop
    offer_id = session.send_artifact_offer(offer)
    if on_sent is not None:
        on_sent(offer_id)
    driver.flush()
    try:
        for index, frame in enumerate(sender.frames()):
            if refused is not None and refused():
                raise ArtifactError("the receiver refused the transfer", transfer=offer.transfer)
            session.send_artifact_chunk(frame)
            driver.flush()
            if index % DRAIN_EVERY == DRAIN_EVERY - 1:
                await driver.drained()
    except ArtifactError as exc:
        session.send_artifact_done(sender.abort(exc.message).body)
        driver.flush()
        raise
    done_id = session.send_artifact_done(sender.done().body)
    if on_sent is not None:
        on_sent(done_id)
    driver.flush()
    return offer, done_id
