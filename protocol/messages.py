"""AIP messages: the versioned JSON envelope and every message type, as pydantic models.

Every text frame is one envelope ``{"v": 1, "type": ..., "id": ..., "ts": ..., "body": {...}}``;
`parse_message` turns a frame into the right model or raises `ProtocolViolation` naming
what is wrong. docs/protocol.md is the normative description of each type.
"""

from __future__ import annotations

import itertools
import secrets
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from protocol.json_limits import JsonRefused, load_json
from protocol.tasks import TaskAssignment, TaskProgress, TaskResult

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
DEFAULT_MAX_FRAME = 1_048_576  # bytes

DeviceName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class ErrorCode(StrEnum):
    """Why a peer refused a frame or a connection (the `code` of an `error` message)."""

    MALFORMED = "malformed"  # not JSON, not an envelope, or a body that does not validate
    UNSUPPORTED_VERSION = "unsupported_version"
    UNEXPECTED = "unexpected"  # a valid message at the wrong moment
    UNKNOWN_DEVICE = "unknown_device"
    BAD_PROOF = "bad_proof"
    ALREADY_CONNECTED = "already_connected"  # another live connection holds the device name
    NOT_YOUR_TASK = "not_your_task"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_TASKS = "too_many_tasks"
    BINARY_UNEXPECTED = "binary_unexpected"
    ARTIFACT = "artifact"
    ARTIFACT_UNEXPECTED = "artifact_unexpected"  # an upload from a device with no star to make it
    QUOTA_EXCEEDED = "quota_exceeded"  # the orchestrator's artifact quota would be exceeded
    INTERNAL = "internal"


class ProtocolViolation(Exception):
    """A frame the receiver refuses; `fatal` ones end the connection after the error reply."""

    def __init__(
        self, code: ErrorCode, message: str, *, ref: str | None = None, fatal: bool = False
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.fatal = fatal


_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


def new_message_id() -> str:
    """Unique per process and across processes (a random prefix, then a counter)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ bodies


class ToolDescription(_Body):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=2000)
    args_schema: dict[str, Any] = Field(default_factory=dict)


class Resources(_Body):
    cpus: int = Field(default=1, ge=1)
    memory_mb: int = Field(default=0, ge=0)
    gpu: bool = False
    vram_free_mb: int = Field(default=0, ge=0)


class ResumeState(_Body):
    """What a reconnecting device still holds: attempts it is running, results not yet acked."""

    running: list[TaskRef] = Field(default_factory=list, max_length=1024)
    unacked: list[TaskRef] = Field(default_factory=list, max_length=65536)


class TaskRef(_Body):
    constellation_id: str = Field(min_length=1, max_length=64)
    star_id: str = Field(min_length=1, max_length=64)
    attempt: int = Field(ge=1)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.constellation_id, self.star_id, self.attempt)


ResumeState.model_rebuild()


class HelloBody(_Body):
    device: DeviceName
    versions: list[int] = Field(min_length=1, max_length=16)
    platform: str = Field(default="linux", max_length=32)
    labels: list[str] = Field(default_factory=list, max_length=64)
    tools: list[ToolDescription] = Field(default_factory=list, max_length=256)
    resources: Resources = Field(default_factory=Resources)
    max_tasks: int = Field(default=4, ge=1, le=1024)
    resume: ResumeState = Field(default_factory=ResumeState)


class ChallengeBody(_Body):
    nonce: str = Field(min_length=32, max_length=128)
    salt: str = Field(min_length=16, max_length=128, pattern=r"^(?:[0-9a-fA-F]{2})+$")  # hex
    version: int


class ProofBody(_Body):
    device: DeviceName
    nonce: str = Field(min_length=32, max_length=128)
    mac: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")


class WelcomeBody(_Body):
    session: str
    version: int
    heartbeat_interval: float = Field(gt=0)
    heartbeat_misses: int = Field(ge=1)
    max_frame: int = Field(ge=1024)
    max_in_flight: int = Field(ge=1)
    known_unacked: list[TaskRef] = Field(
        default_factory=list, description="Unacked results the orchestrator already stored."
    )


class Load(_Body):
    running: int = Field(default=0, ge=0)
    cpu_percent: float = Field(default=0.0, ge=0)
    memory_percent: float = Field(default=0.0, ge=0)


class HeartbeatBody(_Body):
    load: Load = Field(default_factory=Load)


TaskAcceptBody = TaskRef
"""`task.accept` names the attempt it accepts, nothing else."""


class TaskCancelBody(TaskRef):
    reason: str = Field(default="cancelled", max_length=2000)


class AckBody(_Body):
    ref: str = Field(description="The id of the message acknowledged.")
    task: TaskRef | None = None


class ErrorBody(_Body):
    code: ErrorCode
    message: str = Field(max_length=4000)
    ref: str | None = None


class ByeBody(_Body):
    reason: str = Field(default="", max_length=2000)


class ArtifactOfferBody(_Body):
    transfer: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    chunk_size: int = Field(ge=1, le=DEFAULT_MAX_FRAME)


class ArtifactDoneBody(_Body):
    transfer: str = Field(min_length=1, max_length=64)
    ok: bool = True
    message: str = ""


class ApprovalRequestBody(TaskRef):
    """A device asks a person, through the orchestrator, to allow one risky tool call."""

    request: str = Field(min_length=1, max_length=64, description="the device's id for it")
    tool: str = Field(min_length=1, max_length=64)
    summary: str = Field(max_length=2000, description="what would run, for the person")


class ApprovalDecisionBody(_Body):
    request: str = Field(min_length=1, max_length=64)
    approved: bool
    by: str = Field(default="", max_length=200)
    reason: str = Field(default="", max_length=2000)


class ArtifactFetchBody(_Body):
    """A device asks the orchestrator for a stored artifact, by content hash."""

    artifact: str = Field(pattern=r"^[0-9a-f]{64}$", description="its sha256")
    transfer: str = Field(min_length=1, max_length=64, description="id for the offer back")


# ------------------------------------------------------------------ envelopes


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: Annotated[int, Field(strict=True)] = PROTOCOL_VERSION
    id: str = Field(default_factory=new_message_id, min_length=1, max_length=64)
    ts: float = 0.0


class Hello(Envelope):
    type: Literal["hello"] = "hello"
    body: HelloBody


class Challenge(Envelope):
    type: Literal["challenge"] = "challenge"
    body: ChallengeBody


class Proof(Envelope):
    type: Literal["proof"] = "proof"
    body: ProofBody


class Welcome(Envelope):
    type: Literal["welcome"] = "welcome"
    body: WelcomeBody


class Heartbeat(Envelope):
    type: Literal["heartbeat"] = "heartbeat"
    body: HeartbeatBody = Field(default_factory=HeartbeatBody)


class TaskAssign(Envelope):
    type: Literal["task.assign"] = "task.assign"
    body: TaskAssignment


class TaskAccept(Envelope):
    type: Literal["task.accept"] = "task.accept"
    body: TaskAcceptBody


class TaskProgressMessage(Envelope):
    type: Literal["task.progress"] = "task.progress"
    body: TaskProgress


class TaskResultMessage(Envelope):
    type: Literal["task.result"] = "task.result"
    body: TaskResult


class TaskCancel(Envelope):
    type: Literal["task.cancel"] = "task.cancel"
    body: TaskCancelBody


class Ack(Envelope):
    type: Literal["ack"] = "ack"
    body: AckBody


class ArtifactOffer(Envelope):
    type: Literal["artifact.offer"] = "artifact.offer"
    body: ArtifactOfferBody


class ArtifactDone(Envelope):
    type: Literal["artifact.done"] = "artifact.done"
    body: ArtifactDoneBody


class ApprovalRequest(Envelope):
    type: Literal["approval.request"] = "approval.request"
    body: ApprovalRequestBody


class ApprovalDecision(Envelope):
    type: Literal["approval.decision"] = "approval.decision"
    body: ApprovalDecisionBody


class ArtifactFetch(Envelope):
    type: Literal["artifact.fetch"] = "artifact.fetch"
    body: ArtifactFetchBody


class Error(Envelope):
    type: Literal["error"] = "error"
    body: ErrorBody


class Bye(Envelope):
    type: Literal["bye"] = "bye"
    body: ByeBody = Field(default_factory=ByeBody)


Message = Annotated[
    Hello
    | Challenge
    | Proof
    | Welcome
    | Heartbeat
    | TaskAssign
    | TaskAccept
    | TaskProgressMessage
    | TaskResultMessage
    | TaskCancel
    | Ack
    | ArtifactOffer
    | ArtifactDone
    | ArtifactFetch
    | ApprovalRequest
    | ApprovalDecision
    | Error
    | Bye,
    Field(discriminator="type"),
]

MESSAGE_TYPES: tuple[str, ...] = (
    "hello",
    "challenge",
    "proof",
    "welcome",
    "heartbeat",
    "task.assign",
    "task.accept",
    "task.progress",
    "task.result",
    "task.cancel",
    "ack",
    "artifact.offer",
    "artifact.done",
    "artifact.fetch",
    "approval.request",
    "approval.decision",
    "error",
    "bye",
)

_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


MAX_BATCH = 64
"""The most envelopes one batch frame (a JSON array of envelopes) may carry."""

MAX_OPEN_TRANSFERS = 4
"""The most artifact transfers one peer may have open at once on one connection (offered
and not yet ended with `artifact.done`); a receiver refuses a further offer."""

_BATCH_ADAPTER: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


def _check_size(frame: str | bytes, max_frame: int) -> None:
    size = len(frame)
    if isinstance(frame, str) and size <= max_frame < 4 * size:
        size = len(frame.encode("utf-8", "surrogatepass"))  # the limit is in bytes
    if size > max_frame:
        raise ProtocolViolation(
            ErrorCode.TOO_LARGE, f"frame of {size} bytes exceeds the limit of {max_frame}"
        )


def _supported(message: Message) -> bool:
    return "v" in message.model_fields_set and message.v in SUPPORTED_VERSIONS


def parse_message(frame: str | bytes, *, max_frame: int = DEFAULT_MAX_FRAME) -> Message:
    """Decode one text frame holding a single envelope into its message model.

    Raises `ProtocolViolation` with `TOO_LARGE`, `MALFORMED` or `UNSUPPORTED_VERSION`;
    the message names the field at fault.
    """
    _check_size(frame, max_frame)
    return _parse_envelope(frame)


def _parse_envelope(frame: str | bytes) -> Message:
    # Fast path: parse and validate in one go. Anything it refuses takes the slow path,
    # which finds the precise reason to report.
    try:
        message = _ADAPTER.validate_json(frame)
    except (ValidationError, ValueError, RecursionError):
        pass
    else:
        if _supported(message):
            return message
    return _explain(_load(frame))


def parse_frame(
    frame: str | bytes, *, max_frame: int = DEFAULT_MAX_FRAME
) -> list[Message | ProtocolViolation]:
    """Decode one text frame: a single envelope or a batch (a JSON array of 1..MAX_BATCH
    envelopes). Returns, in order, each message or the `ProtocolViolation` that refuses it.

    Raises `ProtocolViolation` when the frame as a whole is refused (too large, not JSON,
    neither an envelope nor a batch, a batch of the wrong length).
    """
    _check_size(frame, max_frame)
    if not is_batch(frame):
        return [_parse_envelope(frame)]
    try:
        messages = _BATCH_ADAPTER.validate_json(frame)
    except (ValidationError, ValueError, RecursionError):
        pass
    else:
        if 0 < len(messages) <= MAX_BATCH and all(_supported(m) for m in messages):
            return list(messages)
    data = _load(frame)
    if not isinstance(data, list):
        return [_explain(data)]
    if not 0 < len(data) <= MAX_BATCH:
        raise ProtocolViolation(
            ErrorCode.MALFORMED,
            f"batch of {len(data)} envelopes; a batch carries 1 to {MAX_BATCH}",
        )
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ProtocolViolation(
                ErrorCode.MALFORMED,
                f"batch[{index}] is not a JSON object; a batch is an array of envelopes",
            )
    outcomes: list[Message | ProtocolViolation] = []
    for index, item in enumerate(data):
        try:
            outcomes.append(_explain(item, where=f"batch[{index}]: "))
        except ProtocolViolation as violation:
            outcomes.append(violation)
    return outcomes


def is_batch(frame: str | bytes) -> bool:
    """Whether a text frame is a batch: its first non-whitespace character is `[`."""
    head = frame[:1]
    if head.isspace():  # rare: only then is the whole frame scanned
        head = frame.lstrip()[:1]
    return head in ("[", b"[")


def _load(frame: str | bytes) -> Any:
    """The JSON of a frame whose size was checked, read with bounded nesting."""
    try:
        return load_json(frame, max_bytes=_CHECKED)
    except JsonRefused as exc:
        raise ProtocolViolation(ErrorCode.MALFORMED, f"frame is {exc.message}") from None


_CHECKED = 1 << 62  # `_check_size` has held the frame to `max_frame` already


def _explain(data: Any, where: str = "") -> Message:
    """Validate one decoded envelope, or raise the `ProtocolViolation` naming its fault."""
    if not isinstance(data, dict):
        raise ProtocolViolation(ErrorCode.MALFORMED, "frame is not a JSON object (an envelope)")
    ref = data.get("id") if isinstance(data.get("id"), str) else None
    version = data.get("v")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ProtocolViolation(
            ErrorCode.UNSUPPORTED_VERSION,
            f"{where}protocol version {version!r} is not supported; this peer speaks "
            f"{sorted(SUPPORTED_VERSIONS)}",
            ref=ref,
        )
    kind = data.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolViolation(
            ErrorCode.MALFORMED, f"{where}unknown message type {kind!r}", ref=ref
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(part) for part in error["loc"][1:]) or "envelope"
        raise ProtocolViolation(
            ErrorCode.MALFORMED, f"{where}{kind}: {loc}: {error['msg']}", ref=ref
        ) from None


def encode_batch(encoded: list[str]) -> str:
    """One frame for several encoded envelopes: the envelope itself when there is one."""
    return encoded[0] if len(encoded) == 1 else "[" + ",".join(encoded) + "]"


def encode_message(message: BaseModel) -> str:
    return message.model_dump_json()


def _spec(envelope: type[Envelope]) -> tuple[str, type]:
    spec = _SPECS.get(envelope)
    if spec is None:
        fields = envelope.model_fields
        body_type = fields["body"].annotation
        assert isinstance(body_type, type)
        spec = _SPECS[envelope] = (fields["type"].default, body_type)
    return spec


_SPECS: dict[type[Envelope], tuple[str, type]] = {}


def envelope_kind(envelope: type[Envelope]) -> str:
    """The `type` an envelope class carries (`TaskAssign` -> "task.assign")."""
    return _spec(envelope)[0]


def encode_envelope(
    envelope: type[Envelope], body: BaseModel, *, message_id: str, ts: float
) -> str:
    """The frame `envelope(id=message_id, ts=ts, body=body).model_dump_json()` would give,
    without building the envelope: `body` is already a validated model of the right type."""
    kind, body_type = _spec(envelope)
    if type(body) is not body_type and not isinstance(body, body_type):
        raise TypeError(f"{envelope.__name__} carries {body_type.__name__}, not {body!r}")
    return (
        f'{{"v":{PROTOCOL_VERSION},"id":"{message_id}","ts":{float(ts)!r},'
        f'"type":"{kind}","body":{body.__pydantic_serializer__.to_json(body).decode()}}}'
    )
