"""Sans-I/O artifact transfer: chunking, limits and sha256 verification.

An artifact moves as one `artifact.offer` text frame, zero or more binary chunk frames,
then one `artifact.done` text frame. Nothing here touches a socket: `ArtifactSender`
produces the messages and frames to send, `ArtifactReceiver` consumes them and writes the
file into a directory, and both raise `ArtifactError` (a `ProtocolViolation` with code
`ErrorCode.ARTIFACT`) for anything they refuse, so a session can answer with an `error`.

Binary chunk frame (all integers big-endian)::

    offset 0      2 bytes   H, the header length in bytes (1 ..= MAX_HEADER_SIZE)
    offset 2      H bytes   UTF-8 JSON object with exactly two keys:
                              "t": the transfer id (string of 1..64 characters)
                              "i": the chunk index (integer, 0 ..= 2**53 - 1)
    offset 2 + H  rest      the payload: bytes [i * chunk_size, min((i + 1) * chunk_size, size))
                            of the artifact

e.g. ``b'\\x00\\x10{"t":"ab","i":0}' + payload``. Chunks of one transfer are sent in order,
index 0, 1, 2, ...; every chunk but the last carries exactly `chunk_size` bytes and the last
carries the rest (an empty artifact has no chunks). The whole frame, header included, never
exceeds the peer's `max_frame`. A receiver refuses unknown transfers, duplicated, missing or
reordered indices, chunks of the wrong length and bytes beyond the offered size, and on
`artifact.done` checks the total size and the sha256 before it renames the file into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from protocol.messages import (
    DEFAULT_MAX_FRAME,
    MAX_OPEN_TRANSFERS,
    ArtifactDone,
    ArtifactDoneBody,
    ArtifactOffer,
    ArtifactOfferBody,
    ErrorCode,
    ProtocolViolation,
)
from protocol.private import private_dir

log = logging.getLogger("orrery.aip.artifacts")

DEFAULT_CHUNK_SIZE = 256 * 1024
HEADER_LENGTH_SIZE = 2  # the big-endian length prefix of the JSON header
MAX_HEADER_SIZE = 1024  # worst case: 64 astral characters escaped as \uXXXX\uXXXX is ~800
MAX_INDEX = 2**53 - 1  # exact in every JSON implementation
MAX_TRANSFER_LENGTH = 64  # as `ArtifactOfferBody.transfer`
MAX_NAME_BYTES = 255  # a file name component on common file systems
TEMP_PREFIX = ".artifact-"  # partial files in the destination directory; refused as names
TEMP_SUFFIX = ".part"
_FORBIDDEN_NAME_CHARS = frozenset("/\\:")  # separators on POSIX and Windows, drive letters


class ArtifactError(ProtocolViolation):
    """A refused artifact, offer or chunk; `transfer` names the transfer when known."""

    def __init__(self, message: str, *, transfer: str | None = None) -> None:
        text = f"transfer {transfer!r}: {message}" if transfer is not None else message
        super().__init__(ErrorCode.ARTIFACT, text)
        self.transfer = transfer
        self.reason = message  # the problem without the transfer prefix


# ------------------------------------------------------------------ wire format


def _header(transfer: str, index: int) -> bytes:
    text = json.dumps({"t": transfer, "i": index}, ensure_ascii=True, separators=(",", ":"))
    return text.encode("ascii")


def _transfer_problem(transfer: object) -> str | None:
    if not isinstance(transfer, str):
        return f"transfer id must be a string, not {type(transfer).__name__}"
    if not 1 <= len(transfer) <= MAX_TRANSFER_LENGTH:
        return f"transfer id must have 1 to {MAX_TRANSFER_LENGTH} characters, not {len(transfer)}"
    return None


def _index_problem(index: object) -> str | None:
    if type(index) is not int:
        return f"chunk index must be an integer, not {type(index).__name__}"
    if not 0 <= index <= MAX_INDEX:
        return f"chunk index {index} is outside 0..{MAX_INDEX}"
    return None


def frame_overhead(transfer: str) -> int:
    """The most bytes a chunk frame of `transfer` adds to its payload (at any index)."""
    return HEADER_LENGTH_SIZE + len(_header(transfer, MAX_INDEX))


def encode_chunk(transfer: str, index: int, payload: bytes | bytearray | memoryview) -> bytes:
    """One binary frame: 2-byte header length, JSON ``{"t": transfer, "i": index}``, payload."""
    problem = _transfer_problem(transfer) or _index_problem(index)
    if problem is not None:
        raise ArtifactError(f"cannot encode chunk: {problem}")
    header = _header(transfer, index)
    return len(header).to_bytes(HEADER_LENGTH_SIZE, "big") + header + bytes(payload)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def decode_chunk(frame: bytes | bytearray | memoryview) -> tuple[str, int, bytes]:
    """Split a binary frame into (transfer, index, payload); `ArtifactError` if malformed."""
    data = memoryview(frame).cast("B")  # no copy of the payload until the end
    if len(data) < HEADER_LENGTH_SIZE:
        raise ArtifactError(f"malformed chunk frame: {len(data)} bytes, shorter than its prefix")
    size = int.from_bytes(data[:HEADER_LENGTH_SIZE], "big")
    if not 1 <= size <= MAX_HEADER_SIZE:
        raise ArtifactError(
            f"malformed chunk frame: header length {size} is outside 1..{MAX_HEADER_SIZE}"
        )
    end = HEADER_LENGTH_SIZE + size
    if len(data) < end:
        raise ArtifactError(
            f"malformed chunk frame: header of {size} bytes but only "
            f"{len(data) - HEADER_LENGTH_SIZE} follow the prefix"
        )
    try:
        header = json.loads(
            bytes(data[HEADER_LENGTH_SIZE:end]), object_pairs_hook=_no_duplicate_keys
        )
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"malformed chunk frame: header is not JSON: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"t", "i"}:
        raise ArtifactError(
            'malformed chunk frame: header must be a JSON object with exactly the keys "t" and "i"'
        )
    transfer, index = header["t"], header["i"]
    problem = _transfer_problem(transfer) or _index_problem(index)
    if problem is not None:
        raise ArtifactError(f"malformed chunk frame: {problem}")
    return transfer, index, bytes(data[end:])


# ------------------------------------------------------------------ names


def name_problem(name: str) -> str | None:
    """Why `name` is not a safe plain file name for a received artifact, or None if it is."""
    if not name:
        return "name is empty"
    if name in (".", ".."):
        return f"unsafe name {name!r}: not a file name"
    if name.startswith(("/", "\\")) or (name[:1].isalpha() and name[1:2] == ":"):
        return f"unsafe name {name!r}: absolute paths are not allowed; send a plain file name"
    bad = sorted(_FORBIDDEN_NAME_CHARS.intersection(name))
    if bad:
        shown = " ".join(repr(char) for char in bad)
        return f"unsafe name {name!r}: contains {shown}; send a plain file name without a path"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return f"unsafe name {name!r}: contains control characters"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return f"unsafe name {name!r}: not valid Unicode"
    if len(encoded) > MAX_NAME_BYTES:
        return f"name of {len(encoded)} bytes exceeds the limit of {MAX_NAME_BYTES}"
    if name.startswith(TEMP_PREFIX):
        return f"unsafe name {name!r}: the prefix {TEMP_PREFIX!r} is reserved for partial files"
    return None


# ------------------------------------------------------------------ sending


class ArtifactSender:
    """The sending side of one transfer: `offer()`, every frame of `frames()`, then `done()`.

    `source` is a file path (read lazily, one chunk at a time) or the content itself.
    The effective `chunk_size` is the requested one, reduced so that a whole frame, header
    included, fits in the peer's `max_frame`.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes,
        name: str,
        *,
        transfer: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.transfer = transfer if transfer is not None else uuid.uuid4().hex
        problem = _transfer_problem(self.transfer) or name_problem(name)
        if problem is not None:
            raise ArtifactError(problem, transfer=self.transfer)
        if chunk_size < 1:
            raise ArtifactError(f"chunk_size must be positive, not {chunk_size}")
        room = max_frame - frame_overhead(self.transfer)
        if room < 1:
            raise ArtifactError(
                f"max_frame {max_frame} leaves no room for a payload after the chunk header",
                transfer=self.transfer,
            )
        self.name = name
        self.chunk_size = min(chunk_size, room, DEFAULT_MAX_FRAME)
        self._content = source if isinstance(source, bytes) else None
        self._path = None if isinstance(source, bytes) else Path(source)
        self._body: ArtifactOfferBody | None = None

    def offer(self) -> ArtifactOffer:
        """The `artifact.offer`; the first call hashes the content (streaming a file)."""
        return ArtifactOffer(body=self._describe())

    def _describe(self) -> ArtifactOfferBody:
        if self._body is None:
            digest = hashlib.sha256()
            size = 0
            if self._content is not None:
                digest.update(self._content)
                size = len(self._content)
            else:
                for block in self._read(self.chunk_size):
                    digest.update(block)
                    size += len(block)
            self._body = ArtifactOfferBody(
                transfer=self.transfer,
                name=self.name,
                size=size,
                sha256=digest.hexdigest(),
                chunk_size=self.chunk_size,
            )
        return self._body

    def _read(self, block_size: int) -> Iterator[bytes]:
        assert self._path is not None
        try:
            with self._path.open("rb") as file:
                while block := file.read(block_size):
                    yield block
        except OSError as exc:
            raise ArtifactError(f"cannot read {self._path}: {exc}", transfer=self.transfer) from exc

    def chunks(self) -> Iterator[bytes]:
        """The payloads, in order, read lazily; one chunk in memory at a time.

        Raises `ArtifactError` at the end if a file changed since `offer()` (send `abort()`).
        """
        body = self._describe()
        if self._content is not None:
            view = memoryview(self._content)
            for start in range(0, body.size, self.chunk_size):
                yield bytes(view[start : start + self.chunk_size])
            return
        digest = hashlib.sha256()
        sent = 0
        for block in self._read(self.chunk_size):
            if sent + len(block) > body.size:
                raise ArtifactError(
                    f"{self._path} grew beyond the {body.size} offered bytes while sending",
                    transfer=self.transfer,
                )
            digest.update(block)
            sent += len(block)
            yield block
        if sent != body.size or digest.hexdigest() != body.sha256:
            raise ArtifactError(f"{self._path} changed while sending", transfer=self.transfer)

    def frames(self) -> Iterator[bytes]:
        """The binary frames to send: `chunks()` wrapped by `encode_chunk`."""
        for index, payload in enumerate(self.chunks()):
            yield encode_chunk(self.transfer, index, payload)

    def done(self) -> ArtifactDone:
        """The closing `artifact.done` after every frame was sent."""
        return ArtifactDone(body=ArtifactDoneBody(transfer=self.transfer, ok=True))

    def abort(self, reason: str) -> ArtifactDone:
        """An `artifact.done` that tells the receiver to discard the transfer."""
        text = reason if len(reason) <= 2000 else reason[:1997] + "..."
        return ArtifactDone(body=ArtifactDoneBody(transfer=self.transfer, ok=False, message=text))


# ------------------------------------------------------------------ receiving


@dataclass(slots=True)
class _Incoming:
    offer: ArtifactOfferBody
    temp: Path
    file: IO[bytes]
    digest: hashlib._Hash
    chunks: int  # how many chunks the offered size takes
    next_index: int = 0
    received: int = 0


class ArtifactReceiver:
    """Receives artifacts into `dest_dir`: `on_offer`, `on_chunk` per frame, `on_done`.

    Each transfer writes straight to a temporary file ``.artifact-*.part`` in `dest_dir`
    (so memory holds at most the chunk being written) and hashes as it goes; `on_done`
    checks size and sha256 and atomically renames the file to ``dest_dir/name``,
    replacing a file of that name. Any refused chunk, and any failed `on_done`, aborts its
    transfer and deletes the partial file. Every refusal is an `ArtifactError`.
    """

    def __init__(
        self, dest_dir: Path, *, max_size: int, max_concurrent: int = MAX_OPEN_TRANSFERS
    ) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must not be negative, not {max_size}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        self.dest_dir = private_dir(Path(dest_dir))
        self.max_size = max_size
        self.max_concurrent = max_concurrent
        self._incoming: dict[str, _Incoming] = {}

    @property
    def active(self) -> tuple[str, ...]:
        """The transfers offered and not yet finished or aborted."""
        return tuple(self._incoming)

    def offer_of(self, transfer: str) -> ArtifactOfferBody:
        """The offer of an active transfer (raises `ArtifactError` for an unknown one)."""
        return self._get(transfer).offer

    def progress(self, transfer: str) -> tuple[int, int]:
        """(bytes received, bytes offered) of an active transfer."""
        incoming = self._get(transfer)
        return incoming.received, incoming.offer.size

    def on_offer(self, offer: ArtifactOffer | ArtifactOfferBody) -> None:
        body = offer.body if isinstance(offer, ArtifactOffer) else offer
        transfer = body.transfer
        if transfer in self._incoming:
            raise ArtifactError("duplicate transfer id: already receiving it", transfer=transfer)
        problem = name_problem(body.name)
        if problem is not None:
            raise ArtifactError(problem, transfer=transfer)
        if body.size > self.max_size:
            raise ArtifactError(
                f"artifact {body.name!r} of {body.size} bytes exceeds the limit of "
                f"{self.max_size} bytes",
                transfer=transfer,
            )
        if len(self._incoming) >= self.max_concurrent:
            raise ArtifactError(
                f"too many concurrent transfers: {len(self._incoming)} already open, the "
                f"limit is {self.max_concurrent}",
                transfer=transfer,
            )
        for other in self._incoming.values():
            if other.offer.name == body.name:
                raise ArtifactError(
                    f"name {body.name!r} is already being received by transfer "
                    f"{other.offer.transfer!r}",
                    transfer=transfer,
                )
        try:
            fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=self.dest_dir)
        except OSError as exc:
            raise ArtifactError(
                f"cannot create a file in {self.dest_dir}: {exc}", transfer=transfer
            ) from exc
        self._incoming[transfer] = _Incoming(
            offer=body,
            temp=Path(temp),
            file=os.fdopen(fd, "wb"),
            digest=hashlib.sha256(),
            chunks=math.ceil(body.size / body.chunk_size),
        )
        log.debug("receiving %r as %s (%d bytes)", body.name, transfer, body.size)

    def on_chunk(self, frame: bytes | bytearray | memoryview) -> None:
        transfer, index, payload = decode_chunk(frame)
        incoming = self._incoming.get(transfer)
        if incoming is None:
            raise ArtifactError(
                "chunk for unknown transfer (never offered, or already finished or aborted)",
                transfer=transfer,
            )
        problem = self._chunk_problem(incoming, index, len(payload))
        if problem is not None:
            self.abort(transfer, problem)
            raise ArtifactError(problem, transfer=transfer)
        try:
            incoming.file.write(payload)
            incoming.file.flush()  # to the OS now: nothing accumulates in memory
        except OSError as exc:
            self.abort(transfer, f"write failed: {exc}")
            raise ArtifactError(f"cannot write {incoming.temp}: {exc}", transfer=transfer) from exc
        incoming.digest.update(payload)
        incoming.received += len(payload)
        incoming.next_index += 1

    @staticmethod
    def _chunk_problem(incoming: _Incoming, index: int, length: int) -> str | None:
        offer = incoming.offer
        expected_index = incoming.next_index
        if index < expected_index:
            return f"duplicate chunk {index}: chunks up to {expected_index - 1} already received"
        if index >= incoming.chunks or incoming.received + length > offer.size:
            return (
                f"more data than offered: chunk {index} of {length} bytes would bring the total "
                f"to {incoming.received + length} bytes, the offer said {offer.size}"
            )
        if index > expected_index:
            return (
                f"out-of-order chunk: expected chunk {expected_index}, got {index} "
                f"(a chunk was dropped or reordered)"
            )
        expected_length = min(offer.chunk_size, offer.size - incoming.received)
        if length != expected_length:
            return (
                f"chunk {index} has {length} bytes, expected {expected_length} "
                f"(chunk_size {offer.chunk_size}, size {offer.size})"
            )
        return None

    def on_done(self, done: ArtifactDone | ArtifactDoneBody) -> Path:
        """Verify and move the file into place; returns ``dest_dir/name``.

        A `done` with ``ok`` false (the sender gave up) discards the transfer and raises.
        """
        body = done.body if isinstance(done, ArtifactDone) else done
        transfer = body.transfer
        incoming = self._get(transfer)
        offer = incoming.offer
        problem: str | None = None
        if not body.ok:
            problem = f"sender aborted the transfer: {body.message or 'no reason given'}"
        elif incoming.received != offer.size:
            problem = (
                f"incomplete: received {incoming.received} of {offer.size} bytes "
                f"(next expected chunk {incoming.next_index} of {incoming.chunks})"
            )
        else:
            actual = incoming.digest.hexdigest()
            if actual != offer.sha256:
                problem = f"sha256 mismatch: expected {offer.sha256} got {actual}"
        if problem is not None:
            self.abort(transfer, problem)
            raise ArtifactError(problem, transfer=transfer)
        target = self.dest_dir / offer.name
        try:
            incoming.file.flush()
            os.fsync(incoming.file.fileno())
            incoming.file.close()
            os.replace(incoming.temp, target)
        except OSError as exc:
            self.abort(transfer, f"cannot store: {exc}")
            raise ArtifactError(f"cannot store {target}: {exc}", transfer=transfer) from exc
        del self._incoming[transfer]
        log.info("received %r (%d bytes) as %s", offer.name, offer.size, target)
        return target

    def abort(self, transfer: str, reason: str) -> bool:
        """Drop a transfer and delete its partial file; False if it was not active."""
        incoming = self._incoming.pop(transfer, None)
        if incoming is None:
            return False
        log.info("artifact transfer %s (%r) aborted: %s", transfer, incoming.offer.name, reason)
        with contextlib.suppress(OSError):
            incoming.file.close()
        try:
            incoming.temp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot delete partial artifact %s: %s", incoming.temp, exc)
        return True

    def abort_all(self, reason: str) -> None:
        """Abort every active transfer (e.g. when the connection is gone)."""
        for transfer in list(self._incoming):
            self.abort(transfer, reason)

    def close(self) -> None:
        self.abort_all("receiver closed")

    def __enter__(self) -> ArtifactReceiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _get(self, transfer: str) -> _Incoming:
        incoming = self._incoming.get(transfer)
        if incoming is None:
            raise ArtifactError(
                "unknown transfer (never offered, or already finished or aborted)",
                transfer=transfer,
            )
        return incoming


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_HEADER_SIZE",
    "MAX_INDEX",
    "ArtifactError",
    "ArtifactReceiver",
    "ArtifactSender",
    "decode_chunk",
    "encode_chunk",
    "frame_overhead",
    "name_problem",
]
