"""The sans-I/O AIP session state machines: one for the orchestrator's side of a
connection (`ServerSession`), one for the device's (`DeviceSession`).

They never touch a socket. Feed them frames (`receive_frame`) and calls (`assign`,
`send_result`, ...); then take what to send (`data_to_send`) and what happened
(`events_received`). After each call the caller must send every frame returned by
`data_to_send()` in order, and close the connection once `closed` is true.
"""

from __future__ import annotations

import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from protocol.auth import DeviceKey, derive_key, new_nonce, proof_mac, verify_proof
from protocol.messages import (
    DEFAULT_MAX_FRAME,
    MAX_BATCH,
    MAX_OPEN_TRANSFERS,
    PROTOCOL_VERSION,
    Ack,
    AckBody,
    ApprovalDecision,
    ApprovalDecisionBody,
    ApprovalRequest,
    ApprovalRequestBody,
    ArtifactDone,
    ArtifactDoneBody,
    ArtifactFetch,
    ArtifactFetchBody,
    ArtifactOffer,
    ArtifactOfferBody,
    Bye,
    ByeBody,
    Challenge,
    ChallengeBody,
    Envelope,
    Error,
    ErrorBody,
    ErrorCode,
    Heartbeat,
    HeartbeatBody,
    Hello,
    HelloBody,
    Load,
    Message,
    Proof,
    ProofBody,
    ProtocolViolation,
    TaskAccept,
    TaskAcceptBody,
    TaskAssign,
    TaskCancel,
    TaskCancelBody,
    TaskProgressMessage,
    TaskRef,
    TaskResultMessage,
    Welcome,
    WelcomeBody,
    encode_batch,
    encode_envelope,
    is_batch,
    new_message_id,
    parse_frame,
)
from protocol.tasks import TaskAssignment, TaskProgress, TaskResult

log = logging.getLogger("orrery.aip")

Now = Callable[[], float]


class SessionState(StrEnum):
    AWAIT_HELLO = "await_hello"
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_PROOF = "await_proof"
    AWAIT_WELCOME = "await_welcome"
    ACTIVE = "active"
    CLOSED = "closed"


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class DeviceAuthenticated:
    device: str
    hello: HelloBody


@dataclass(frozen=True, slots=True)
class TaskAccepted:
    task: TaskRef


@dataclass(frozen=True, slots=True)
class ProgressReceived:
    progress: TaskProgress


@dataclass(frozen=True, slots=True)
class ResultReceived:
    """A result to store; once it is durably stored, call `ServerSession.ack_result`."""

    result: TaskResult
    message_id: str


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    load: Load


@dataclass(frozen=True, slots=True)
class PeerError:
    code: ErrorCode
    message: str
    ref: str | None = None  # the id of our message the peer refused, when it says


@dataclass(frozen=True, slots=True)
class SessionClosed:
    reason: str
    lost: bool = False  # the peer went silent: heartbeats missed
    dropped: bool = False  # the transport reported the socket gone without a goodbye
    left: bool = False  # the peer said goodbye (`bye`): it closed on purpose


@dataclass(frozen=True, slots=True)
class Welcomed:
    session: str
    known_unacked: list[TaskRef]


@dataclass(frozen=True, slots=True)
class AssignmentReceived:
    assignment: TaskAssignment


@dataclass(frozen=True, slots=True)
class CancelRequested:
    task: TaskRef
    reason: str


@dataclass(frozen=True, slots=True)
class ResultAcked:
    task: TaskRef


@dataclass(frozen=True, slots=True)
class ArtifactOffered:
    offer: ArtifactOffer


@dataclass(frozen=True, slots=True)
class ArtifactChunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class ArtifactFinished:
    done: ArtifactDone


@dataclass(frozen=True, slots=True)
class ArtifactRequested:
    """A device asked for a stored artifact (`artifact.fetch`); answer with `send_artifact_*`
    using `transfer`, or refuse with `refuse(ErrorCode.ARTIFACT, ..., ref=message_id)`."""

    artifact: str
    transfer: str
    message_id: str


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """A device waits for a person's decision on one tool call; answer with `decide`."""

    task: TaskRef
    request: str
    tool: str
    summary: str


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    request: str
    approved: bool
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class MessageAcked:
    """The peer acknowledged one of our messages that is not a task result (`ref`)."""

    ref: str


SessionEvent = (
    DeviceAuthenticated
    | TaskAccepted
    | ProgressReceived
    | ResultReceived
    | HeartbeatReceived
    | PeerError
    | SessionClosed
    | Welcomed
    | AssignmentReceived
    | CancelRequested
    | ResultAcked
    | ArtifactOffered
    | ArtifactChunk
    | ArtifactFinished
    | ArtifactRequested
    | ApprovalRequested
    | ApprovalDecided
    | MessageAcked
)


def ref_of(item: TaskAssignment | TaskResult | TaskProgress | TaskRef) -> TaskRef:
    """The plain reference to the attempt `item` is about (a body with more fields too)."""
    return TaskRef(
        constellation_id=item.constellation_id, star_id=item.star_id, attempt=item.attempt
    )


# ------------------------------------------------------------------ common machinery


@dataclass(slots=True)
class _RateLimit:
    """A token bucket: `rate` frames a second, bursts up to `burst`."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def allow(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Session(ABC):
    def __init__(self, now: Now, max_frame: int) -> None:
        self._now = now
        self.max_frame = max_frame
        self.state = SessionState.AWAIT_HELLO
        self.close_reason: str | None = None
        self._to_send: list[str | bytes] = []
        self._events: list[SessionEvent] = []
        self.last_seen = now()
        self._open_transfers: set[str] = set()  # artifact transfers between offer and done

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    def data_to_send(self) -> list[str | bytes]:
        """Frames to send, in order (text frames as str). Call after every input.

        Messages queued since the last call travel together: up to `MAX_BATCH` envelopes
        per frame, as a batch (a JSON array), within the peer's frame limit.
        """
        pending = self._to_send
        if not pending:
            return []
        self._to_send = []
        if len(pending) == 1:
            return [pending[0]]
        frames: list[str | bytes] = []
        batch: list[str] = []
        size = 1
        for encoded in pending:
            if isinstance(encoded, bytes):  # a binary chunk: never batched, order kept
                if batch:
                    frames.append(encode_batch(batch))
                    batch, size = [], 1
                frames.append(encoded)
                continue
            length = len(encoded)
            if 4 * length > self.max_frame:
                length = len(encoded.encode("utf-8", "surrogatepass"))
            if batch and (len(batch) == MAX_BATCH or size + length + 1 > self.max_frame):
                frames.append(encode_batch(batch))
                batch, size = [], 1
            batch.append(encoded)
            size += length + 1
        if batch:
            frames.append(encode_batch(batch))
        return frames

    def events_received(self) -> list[SessionEvent]:
        events = list(self._events)
        self._events.clear()
        return events

    def _send(self, envelope: type[Envelope], body: BaseModel) -> str:
        """Queue one message; returns its id."""
        message_id = new_message_id()
        self._to_send.append(encode_envelope(envelope, body, message_id=message_id, ts=self._now()))
        return message_id

    # -- artifacts we send (either side)

    def send_artifact_offer(self, body: ArtifactOfferBody) -> str:
        """Queue `artifact.offer`; then every chunk frame, then `send_artifact_done`."""
        self._require_active("artifact.offer")
        return self._send(ArtifactOffer, body)

    def send_artifact_chunk(self, frame: bytes) -> None:
        """Queue one binary chunk frame (from `protocol.artifacts.encode_chunk`)."""
        self._require_active("artifact chunk")
        self._to_send.append(bytes(frame))

    def send_artifact_done(self, body: ArtifactDoneBody) -> str:
        self._require_active("artifact.done")
        return self._send(ArtifactDone, body)

    def refuse(
        self, code: ErrorCode, text: str, *, ref: str | None = None, fatal: bool = False
    ) -> None:
        """Send an `error` about one of the peer's messages (`ref`); a `fatal` one closes
        the session after it (the caller flushes, and the transport closes the socket)."""
        if not self.closed:
            self._error(code, text, ref=ref, fatal=fatal)

    def _require_active(self, what: str) -> None:
        if self.state is not SessionState.ACTIVE:
            raise ProtocolViolation(ErrorCode.UNEXPECTED, f"cannot send {what}: not connected")

    def _error(
        self, code: ErrorCode, text: str, *, ref: str | None = None, fatal: bool = False
    ) -> None:
        text = text if len(text) <= 4000 else text[:3997] + "..."  # ErrorBody.message's limit
        log.info("aip error %s: %s%s", code, text, " (closing)" if fatal else "")
        self._send(Error, ErrorBody(code=code, message=text, ref=ref))
        if fatal:
            self._close(text)

    def _close(
        self, reason: str, *, lost: bool = False, dropped: bool = False, left: bool = False
    ) -> None:
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self.close_reason = reason
        self._events.append(SessionClosed(reason=reason, lost=lost, dropped=dropped, left=left))

    def close(self, reason: str = "closing") -> None:
        """Say goodbye and close; the caller sends the `bye` and closes the socket."""
        if self.state is SessionState.CLOSED:
            return
        self._send(Bye, ByeBody(reason=reason))
        self._close(reason)

    def connection_lost(self, reason: str = "connection lost") -> None:
        """The transport reports the socket is gone."""
        self._close(reason, dropped=True)

    def receive_frame(self, frame: str | bytes, *, binary: bool = False) -> None:
        """Take one frame from the peer. Never raises for anything the peer sent."""
        if self.state is SessionState.CLOSED:
            return
        self.last_seen = self._now()
        if binary:
            self._receive_binary(bytes(frame) if not isinstance(frame, str) else frame.encode())
            return
        if not self._admit():  # before parsing: a flood costs little
            return
        try:
            outcomes = parse_frame(frame, max_frame=self.max_frame)
        except ProtocolViolation as violation:
            self._refuse(violation)
            return
        batch = len(outcomes) > 1 or is_batch(frame)
        for index, outcome in enumerate(outcomes):
            if self.closed:  # an earlier envelope of the batch closed the session
                return
            # Every error about one element of a batch says which (parse errors already do).
            where = f"batch[{index}]: " if batch else ""
            if index and not self._admit(where):  # each envelope of a batch counts
                continue
            if isinstance(outcome, ProtocolViolation):
                self._refuse(outcome)
                continue
            try:
                self._receive(outcome)
            except ProtocolViolation as violation:
                text = where + violation.message
                self._error(violation.code, text, ref=outcome.id, fatal=violation.fatal)
            except ValidationError as exc:  # task ids a `TaskRef` refuses (empty, over 64 chars)
                field = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "body"
                text = f"{where}{outcome.type}: body.{field}: {exc.errors()[0]['msg']}"
                self._error(ErrorCode.MALFORMED, text, ref=outcome.id)

    def _refuse(self, violation: ProtocolViolation) -> None:
        """Answer a frame or envelope that did not parse."""
        fatal = violation.fatal or violation.code is ErrorCode.UNSUPPORTED_VERSION
        if self.state in (SessionState.AWAIT_HELLO, SessionState.AWAIT_PROOF):
            fatal = fatal or violation.code is not ErrorCode.TOO_LARGE
        self._error(violation.code, violation.message, ref=violation.ref, fatal=fatal)

    def _admit(self, where: str = "") -> bool:
        """Whether the rate limit lets one more envelope in (each of a batch counts);
        `where` names the element of a batch in the refusal."""
        return True

    def _receive_binary(self, data: bytes) -> None:
        if not self._open_transfers or self.state is not SessionState.ACTIVE:
            self._error(
                ErrorCode.BINARY_UNEXPECTED,
                "binary frame outside an artifact transfer; send `artifact.offer` first",
            )
            return
        if len(data) > self.max_frame:
            self._error(ErrorCode.TOO_LARGE, f"chunk of {len(data)} bytes exceeds {self.max_frame}")
            return
        self._events.append(ArtifactChunk(data=data))

    @abstractmethod
    def _receive(self, message: Message) -> None:
        """Handle one parsed message; raise `ProtocolViolation` to refuse it."""

    def _on_error(self, message: Error) -> None:
        body = message.body
        self._events.append(PeerError(code=body.code, message=body.message, ref=body.ref))

    def _artifact(self, message: ArtifactOffer | ArtifactDone) -> None:
        if self.state is not SessionState.ACTIVE:
            raise ProtocolViolation(ErrorCode.UNEXPECTED, f"{message.type} before the handshake")
        if isinstance(message, ArtifactOffer):
            if len(self._open_transfers) >= MAX_OPEN_TRANSFERS:
                raise ProtocolViolation(
                    ErrorCode.ARTIFACT,
                    f"{MAX_OPEN_TRANSFERS} artifact transfers are already open; finish one "
                    "with artifact.done first",
                )
            self._open_transfers.add(message.body.transfer)
            self._events.append(ArtifactOffered(offer=message))
        else:
            self._open_transfers.discard(message.body.transfer)
            self._events.append(ArtifactFinished(done=message))


# ------------------------------------------------------------------ orchestrator side


@dataclass(frozen=True, slots=True)
class ServerConfig:
    heartbeat_interval: float = 5.0
    heartbeat_misses: int = 3
    max_frame: int = DEFAULT_MAX_FRAME
    max_in_flight: int = 64
    rate: float = 500.0  # frames per second, sustained
    burst: float = 1000.0


KeyLookup = Callable[[str], DeviceKey | None]
Ownership = Callable[[str, tuple[str, str, int]], bool]
"""Whether a device may report on a task, by (constellation, star, attempt)."""


class ServerSession(_Session):
    """The orchestrator's end of one device connection."""

    def __init__(
        self,
        *,
        keys: KeyLookup,
        now: Now,
        config: ServerConfig = ServerConfig(),
        owns: Ownership | None = None,
    ) -> None:
        super().__init__(now, config.max_frame)
        self.config = config
        self._keys = keys
        self._owns = owns
        self.session_id = secrets.token_hex(8)
        self.device: str | None = None
        self.hello: HelloBody | None = None
        self._nonce: str | None = None
        self._record: DeviceKey | None = None
        self.in_flight: dict[tuple[str, str, int], TaskAssignment] = {}
        self._limit = _RateLimit(config.rate, config.burst)

    # -- calls from the orchestrator

    def assign(self, assignment: TaskAssignment) -> str:
        """Queue `task.assign`; raises `ProtocolViolation` if not active or over the limit."""
        if self.state is not SessionState.ACTIVE:
            raise ProtocolViolation(ErrorCode.UNEXPECTED, "device is not connected")
        if len(self.in_flight) >= self.max_in_flight:
            raise ProtocolViolation(
                ErrorCode.TOO_MANY_TASKS,
                f"device {self.device!r} already runs {len(self.in_flight)} tasks "
                f"(limit {self.max_in_flight})",
            )
        self.in_flight[assignment.key] = assignment
        return self._send(TaskAssign, assignment)

    def cancel(self, task: TaskRef, reason: str) -> None:
        self.in_flight.pop(task.key, None)
        if self.state is SessionState.ACTIVE:
            self._send(TaskCancel, TaskCancelBody(**task.model_dump(), reason=reason))

    def ack_result(self, result: TaskResult, message_id: str) -> None:
        """Acknowledge a result once it is durably stored; the device may then forget it."""
        self.in_flight.pop(result.key, None)
        if self.state is SessionState.ACTIVE:
            self._send(Ack, AckBody(ref=message_id, task=ref_of(result)))

    def decide(self, request: str, approved: bool, *, by: str = "", reason: str = "") -> None:
        """Answer a device's `approval.request`."""
        if self.state is SessionState.ACTIVE:
            body = ApprovalDecisionBody(request=request, approved=approved, by=by, reason=reason)
            self._send(ApprovalDecision, body)

    def ack(self, message_id: str) -> None:
        """Acknowledge a device message that is not a result (an `artifact.done` stored)."""
        if self.state is SessionState.ACTIVE:
            self._send(Ack, AckBody(ref=message_id))

    @property
    def max_in_flight(self) -> int:
        limit = self.config.max_in_flight
        return min(limit, self.hello.max_tasks) if self.hello else limit

    def check_liveness(self) -> bool:
        """Close as lost when heartbeats stopped; returns True while the device is alive."""
        if self.state is SessionState.CLOSED:
            return False
        deadline = self.config.heartbeat_interval * self.config.heartbeat_misses
        silent = self._now() - self.last_seen
        if silent > deadline:
            self._close(
                f"no heartbeat for {silent:.1f}s ({self.config.heartbeat_misses} missed)",
                lost=True,
            )
            return False
        return True

    # -- frames from the device

    def _admit(self, where: str = "") -> bool:
        if self._limit.allow(self._now()):
            return True
        dropped = "envelope" if where else "frame"
        self._error(
            ErrorCode.RATE_LIMITED, f"{where}too many frames; slow down ({dropped} dropped)"
        )
        return False

    def _receive(self, message: Message) -> None:
        kind = type(message)
        if self.state is not SessionState.ACTIVE and kind is not Hello and kind is not Proof:
            raise ProtocolViolation(
                ErrorCode.UNEXPECTED,
                f"{message.type} before the handshake finished; send hello first",
                fatal=True,
            )
        handler = _SERVER_HANDLERS.get(kind)
        if handler is None:
            raise ProtocolViolation(ErrorCode.UNEXPECTED, f"{message.type} is not sent by devices")
        handler(self, message)

    def _on_hello(self, message: Hello) -> None:
        if self.state is SessionState.AWAIT_PROOF:
            raise ProtocolViolation(
                ErrorCode.UNEXPECTED,
                "a second hello while the challenge is unanswered; answer the challenge "
                "already sent with proof (it stays valid)",
            )
        if self.state is not SessionState.AWAIT_HELLO:
            raise ProtocolViolation(
                ErrorCode.UNEXPECTED,
                f"hello after the handshake: this connection is already authenticated as "
                f"{self.device!r}; send hello only as the first frame of a connection",
            )
        self._hello(message)

    def _on_proof(self, message: Proof) -> None:
        if self.state is not SessionState.AWAIT_PROOF:
            raise ProtocolViolation(ErrorCode.UNEXPECTED, "proof without a challenge", fatal=True)
        self._proof(message)

    def _on_heartbeat(self, message: Heartbeat) -> None:
        self._events.append(HeartbeatReceived(load=message.body.load))

    def _on_accept(self, message: TaskAccept) -> None:
        self._check_owner(message.body.key)
        self._events.append(TaskAccepted(task=message.body))

    def _on_progress(self, message: TaskProgressMessage) -> None:
        self._check_owner(message.body.key)
        self._events.append(ProgressReceived(progress=message.body))

    def _on_result(self, message: TaskResultMessage) -> None:
        self._check_owner(message.body.key)
        self._events.append(ResultReceived(result=message.body, message_id=message.id))

    def _on_bye(self, message: Bye) -> None:
        self._close(message.body.reason or "device said goodbye", left=True)

    def _on_ack(self, message: Ack) -> None:
        pass  # devices may ack orchestrator messages; nothing waits for them

    def _on_approval_request(self, message: ApprovalRequest) -> None:
        body = message.body
        self._check_owner(body.key)
        self._events.append(ApprovalRequested(ref_of(body), body.request, body.tool, body.summary))

    def _on_fetch(self, message: ArtifactFetch) -> None:
        body = message.body
        self._events.append(ArtifactRequested(body.artifact, body.transfer, message.id))

    def _check_owner(self, key: tuple[str, str, int]) -> None:
        assert self.device is not None
        owned = self._owns(self.device, key) if self._owns is not None else key in self.in_flight
        if owned:
            return
        constellation, star, attempt = key
        raise ProtocolViolation(
            ErrorCode.NOT_YOUR_TASK,
            f"task {constellation}/{star} attempt {attempt} was not assigned to device "
            f"{self.device!r}",
        )

    def _hello(self, message: Hello) -> None:
        body = message.body
        if PROTOCOL_VERSION not in body.versions:
            raise ProtocolViolation(
                ErrorCode.UNSUPPORTED_VERSION,
                f"device speaks versions {body.versions}; this orchestrator speaks "
                f"{PROTOCOL_VERSION}",
                fatal=True,
            )
        record = self._keys(body.device)
        if record is None:
            raise ProtocolViolation(
                ErrorCode.UNKNOWN_DEVICE,
                f"device {body.device!r} is not enrolled; run `orrery devices enroll "
                f"{body.device}` on the orchestrator and start the device with that token",
                fatal=True,
            )
        self.hello, self._record = body, record
        self._nonce = new_nonce()
        self.state = SessionState.AWAIT_PROOF
        self._send(
            Challenge,
            ChallengeBody(nonce=self._nonce, salt=record.salt, version=PROTOCOL_VERSION),
        )

    def _proof(self, message: Proof) -> None:
        body = message.body
        assert self._record is not None
        assert self.hello is not None
        if body.device != self.hello.device or body.nonce != self._nonce:
            raise ProtocolViolation(
                ErrorCode.BAD_PROOF, "proof does not answer this session's challenge", fatal=True
            )
        if not verify_proof(self._record, nonce=body.nonce, version=PROTOCOL_VERSION, mac=body.mac):
            raise ProtocolViolation(
                ErrorCode.BAD_PROOF,
                f"proof for device {body.device!r} is wrong; check the device's token or "
                "enrol it again",
                fatal=True,
            )
        self._nonce = None  # a nonce answers once
        self.device = body.device
        self.state = SessionState.ACTIVE
        self._events.append(DeviceAuthenticated(device=body.device, hello=self.hello))

    def welcome(self, known_unacked: list[TaskRef] | None = None) -> None:
        """Finish the handshake (after `DeviceAuthenticated`): tell the device the limits."""
        self._send(
            Welcome,
            (
                WelcomeBody(
                    session=self.session_id,
                    version=PROTOCOL_VERSION,
                    heartbeat_interval=self.config.heartbeat_interval,
                    heartbeat_misses=self.config.heartbeat_misses,
                    max_frame=self.config.max_frame,
                    max_in_flight=self.max_in_flight,
                    known_unacked=known_unacked or [],
                )
            ),
        )


# ------------------------------------------------------------------ device side


class DeviceSession(_Session):
    """The device's end of its connection to the orchestrator."""

    def __init__(self, *, hello: HelloBody, token: str, now: Now) -> None:
        super().__init__(now, DEFAULT_MAX_FRAME)
        self.hello = hello
        self._token = token
        self._keys: dict[str, bytes] = {}
        self.state = SessionState.AWAIT_CHALLENGE
        self.heartbeat_interval = 5.0
        self.max_in_flight = hello.max_tasks
        self.session_id: str | None = None
        self._last_heartbeat = now()

    def start(self) -> None:
        """Queue `hello`; call once the socket is open."""
        self._send(Hello, self.hello)

    def send_result(self, result: TaskResult) -> str:
        """Queue `task.result`; returns its message id (the `ack` will name the task)."""
        return self._send(TaskResultMessage, result)

    def send_progress(self, progress: TaskProgress) -> None:
        self._send(TaskProgressMessage, progress)

    def heartbeat_due(self) -> bool:
        return (
            self.state is SessionState.ACTIVE
            and self._now() - self._last_heartbeat >= self.heartbeat_interval
        )

    def send_heartbeat(self, load: Load) -> None:
        self._last_heartbeat = self._now()
        self._send(Heartbeat, HeartbeatBody(load=load))

    def _receive(self, message: Message) -> None:
        kind = type(message)
        handler = _DEVICE_HANDLERS.get(kind)
        if handler is not None and self.state is SessionState.ACTIVE:
            handler(self, message)
        elif kind is Challenge:
            self._on_challenge(message)  # type: ignore[arg-type]
        elif kind is Welcome:
            self._on_welcome(message)  # type: ignore[arg-type]
        elif kind is Error:
            self._on_error(message)  # type: ignore[arg-type]
        elif kind is Bye:
            self._on_bye(message)  # type: ignore[arg-type]
        elif self.state is not SessionState.ACTIVE:
            raise ProtocolViolation(
                ErrorCode.UNEXPECTED, f"{message.type} before the handshake finished", fatal=True
            )
        else:
            raise ProtocolViolation(
                ErrorCode.UNEXPECTED, f"{message.type} is not sent by orchestrators"
            )

    def _on_challenge(self, message: Challenge) -> None:
        if self.state is not SessionState.AWAIT_CHALLENGE:
            raise ProtocolViolation(ErrorCode.UNEXPECTED, "second challenge", fatal=True)
        challenge = message.body
        key = self._keys.get(challenge.salt)
        if key is None:
            key = self._keys[challenge.salt] = derive_key(self._token, challenge.salt)
        mac = proof_mac(
            key, device=self.hello.device, nonce=challenge.nonce, version=challenge.version
        )
        self.state = SessionState.AWAIT_WELCOME
        self._send(Proof, ProofBody(device=self.hello.device, nonce=challenge.nonce, mac=mac))

    def _on_welcome(self, message: Welcome) -> None:
        if self.state is not SessionState.AWAIT_WELCOME:
            raise ProtocolViolation(ErrorCode.UNEXPECTED, "welcome without a proof", fatal=True)
        welcome = message.body
        self.state = SessionState.ACTIVE
        self.session_id = welcome.session
        self.heartbeat_interval = welcome.heartbeat_interval
        self.max_frame = welcome.max_frame
        self.max_in_flight = welcome.max_in_flight
        self._last_heartbeat = self._now()
        self._events.append(Welcomed(session=welcome.session, known_unacked=welcome.known_unacked))

    def _on_error(self, message: Error) -> None:
        super()._on_error(message)
        if self.state is not SessionState.ACTIVE:
            self._close(f"refused by the orchestrator: {message.body.message}")

    def _on_bye(self, message: Bye) -> None:
        self._close(message.body.reason or "orchestrator said goodbye", left=True)

    def _on_assign(self, message: TaskAssign) -> None:
        assignment = message.body
        accept = TaskAcceptBody(  # may refuse the ids
            constellation_id=assignment.constellation_id,
            star_id=assignment.star_id,
            attempt=assignment.attempt,
        )
        self._events.append(AssignmentReceived(assignment=assignment))
        self._send(TaskAccept, accept)

    def _on_cancel(self, message: TaskCancel) -> None:
        cancel = message.body
        self._events.append(CancelRequested(task=ref_of(cancel), reason=cancel.reason))

    def request_approval(self, task: TaskRef, request: str, tool: str, summary: str) -> str:
        """Queue `approval.request` for a tool call of `task`; the answer arrives as
        `ApprovalDecided` with the same `request` id."""
        self._require_active("approval.request")
        summary = summary if len(summary) <= 2000 else summary[:1997] + "..."
        body = ApprovalRequestBody(**task.model_dump(), request=request, tool=tool, summary=summary)
        return self._send(ApprovalRequest, body)

    def _on_decision(self, message: ApprovalDecision) -> None:
        body = message.body
        self._events.append(ApprovalDecided(body.request, body.approved, body.by, body.reason))

    def fetch_artifact(self, artifact: str, transfer: str) -> str:
        """Queue `artifact.fetch`: ask for a stored artifact by sha256; it arrives as an
        offer with `transfer`, chunks and a done (or an `error` naming this message)."""
        self._require_active("artifact.fetch")
        return self._send(ArtifactFetch, ArtifactFetchBody(artifact=artifact, transfer=transfer))

    def _on_ack(self, message: Ack) -> None:
        if message.body.task is not None:
            self._events.append(ResultAcked(task=message.body.task))
        else:
            self._events.append(MessageAcked(ref=message.body.ref))

    def _on_heartbeat(self, message: Heartbeat) -> None:
        pass


Handler = Callable[[Any, Any], None]

_SERVER_HANDLERS: dict[type, Handler] = {
    Hello: ServerSession._on_hello,
    Proof: ServerSession._on_proof,
    Heartbeat: ServerSession._on_heartbeat,
    TaskAccept: ServerSession._on_accept,
    TaskProgressMessage: ServerSession._on_progress,
    TaskResultMessage: ServerSession._on_result,
    ArtifactOffer: ServerSession._artifact,
    ArtifactDone: ServerSession._artifact,
    ArtifactFetch: ServerSession._on_fetch,
    ApprovalRequest: ServerSession._on_approval_request,
    Error: ServerSession._on_error,
    Bye: ServerSession._on_bye,
    Ack: ServerSession._on_ack,
}
"""What the orchestrator does with each message a device may send."""

_DEVICE_HANDLERS: dict[type, Handler] = {
    TaskAssign: DeviceSession._on_assign,
    TaskCancel: DeviceSession._on_cancel,
    ApprovalDecision: DeviceSession._on_decision,
    Ack: DeviceSession._on_ack,
    Heartbeat: DeviceSession._on_heartbeat,
    ArtifactOffer: DeviceSession._artifact,
    ArtifactDone: DeviceSession._artifact,
}
"""What a device does with each message of an active session (the handshake's and
`error`/`bye` are handled in any state)."""


__all__ = [
    "MAX_OPEN_TRANSFERS",
    "ApprovalDecided",
    "ApprovalRequested",
    "ArtifactChunk",
    "ArtifactFinished",
    "ArtifactOffered",
    "ArtifactRequested",
    "AssignmentReceived",
    "CancelRequested",
    "DeviceAuthenticated",
    "DeviceSession",
    "HeartbeatReceived",
    "MessageAcked",
    "PeerError",
    "ProgressReceived",
    "ResultAcked",
    "ResultReceived",
    "ServerConfig",
    "ServerSession",
    "SessionClosed",
    "SessionEvent",
    "SessionState",
    "TaskAccepted",
    "Welcomed",
    "ref_of",
]
