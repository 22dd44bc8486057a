"""The control API's messages: what scripts send to `orrery serve` and what it answers.

Every frame is one JSON object with a `type`. Requests carry an `id` (the client's choice)
that the server echoes in the reply, and in every `event` of a subscription. The spec is
docs/control-api.md; this module is its executable form (pydantic v2, discriminated on
`type`). It imports nothing of Orrery but `protocol.json_limits` (frames are read with
a bounded size and nesting), so a client loads it cheaply.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from protocol.json_limits import JsonRefused, load_json

CONTROL_PATH: Final = "/control/v1"
PROTOCOL: Final = "orrery.control/1"
MAX_PLAN_BYTES: Final = 1024 * 1024
"""The largest plan (UTF-8 bytes), as `agents.constellation.plan_file.MAX_PLAN_BYTES`."""
MAX_PLAN_CHARS: Final = MAX_PLAN_BYTES  # a plan of that many bytes has at most that many
MAX_REQUEST_CHARS: Final = 20_000
MAX_FRAME: Final = 4 * 1024 * 1024
MAX_AUTH_FRAME: Final = 4096
"""The largest first frame (the `auth` request) a connection may send before it is known."""

RequestId = Annotated[str, Field(min_length=1, max_length=64)]
ConstellationId = Annotated[str, Field(min_length=1, max_length=200)]
ProposalId = Annotated[str, Field(min_length=1, max_length=64)]


class ErrorCode(StrEnum):
    """Why a request was refused (the `code` of an `error`)."""

    UNAUTHORIZED = "unauthorized"  # missing or wrong token: the connection closes
    RATE_LIMITED = "rate_limited"  # too many failed logins from this address: wait, retry
    MALFORMED = "malformed"  # not JSON, or a field is missing or wrong (`field` names it)
    UNKNOWN_COMMAND = "unknown_command"  # a `type` the server does not know
    INVALID_PLAN = "invalid_plan"  # the plan text does not parse or validate
    PLAN_REJECTED = "plan_rejected"  # the planner could not turn the request into a plan
    NO_PLANNER = "no_planner"  # `submit {request}` on a server without a planner
    NO_CAPABLE_DEVICE = "no_capable_device"  # the planner found no device to plan for
    UNKNOWN_CONSTELLATION = "unknown_constellation"
    UNKNOWN_APPROVAL = "unknown_approval"
    UNKNOWN_STAR = "unknown_star"
    UNKNOWN_DEVICE = "unknown_device"  # `pin` to a device that is not connected or cannot
    # run the star
    NOT_EDITABLE = "not_editable"  # `pin` of a star that has started or finished
    NOT_RETRYABLE = "not_retryable"  # retry of a constellation that is still running, or
    # of a star that did not fail
    INTERRUPTED = "interrupted"  # the orchestrator running it stopped before it finished
    UNKNOWN_MEMORY = "unknown_memory"  # no remembered request by that id
    UNKNOWN_PROPOSAL = "unknown_proposal"  # `start`/`discard` of a proposal that is not
    # waiting: never made here, expired, dropped, discarded or started already
    MEMORY_UNAVAILABLE = "memory_unavailable"  # the recall index cannot be used here
    INTERNAL = "internal"  # a bug in the server; the message says what failed


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- requests


class AuthRequest(_Message):
    """The first frame of every connection: the local token (DATA_DIR/control.token)."""

    type: Literal["auth"] = "auth"
    id: RequestId
    token: str = Field(min_length=1, max_length=512)
    client: str = Field(default="", max_length=200, description="who is asking, for the logs")


class SubmitRequest(_Message):
    """Run a plan (YAML text) or a request in words (planned by the server's planner)."""

    type: Literal["submit"] = "submit"
    id: RequestId
    plan: str | None = Field(default=None, min_length=1, max_length=MAX_PLAN_CHARS)
    request: str | None = Field(
        default=None, min_length=1, max_length=MAX_REQUEST_CHARS, validate_default=True
    )
    source: str = Field(
        default="<submitted plan>", max_length=500, description="plan file name for errors"
    )

    @field_validator("request")
    @classmethod
    def _exactly_one(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (info.data.get("plan") is None) == (value is None):
            raise ValueError("give exactly one of 'plan' (YAML text) or 'request' (words)")
        return value


class ProposeRequest(_Message):
    """Plan a request in words without running it: the reply is a `proposal` that the
    server holds until `start` runs it or `discard` drops it (or it expires)."""

    type: Literal["propose"] = "propose"
    id: RequestId
    request: str = Field(min_length=1, max_length=MAX_REQUEST_CHARS)


class StartRequest(_Message):
    """Run a proposal (`proposal`'s id) as it was shown; the reply is `submitted`."""

    type: Literal["start"] = "start"
    id: RequestId
    proposal: ProposalId


class DiscardRequest(_Message):
    """Drop a proposal without running anything."""

    type: Literal["discard"] = "discard"
    id: RequestId
    proposal: ProposalId


class SubscribeRequest(_Message):
    """Stream events: those after `after_seq` first, then live ones. With `constellation`,
    that constellation's (ending after it finishes); without, the fleet-wide stream of every
    event (of `types` only, if given) until unsubscribed."""

    type: Literal["subscribe"] = "subscribe"
    id: RequestId
    constellation: ConstellationId | None = None
    after_seq: int = Field(default=0, ge=0)
    types: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=64
    )


class UnsubscribeRequest(_Message):
    """End the subscription to `constellation` (without it: the fleet-wide one)."""

    type: Literal["unsubscribe"] = "unsubscribe"
    id: RequestId
    constellation: ConstellationId | None = None


class CancelRequest(_Message):
    type: Literal["cancel"] = "cancel"
    id: RequestId
    constellation: ConstellationId
    reason: str = Field(default="cancelled through the control API", max_length=1000)


class CancelStarRequest(_Message):
    """Cancel one star of a running constellation (running, or not started yet)."""

    type: Literal["cancel_star"] = "cancel_star"
    id: RequestId
    constellation: ConstellationId
    star: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="cancelled through the control API", max_length=1000)


class RetryRequest(_Message):
    """Run a finished constellation again from where it failed: a new constellation in
    which the stars that succeeded keep their outputs and `star` (without it: every star
    that failed, was cancelled or skipped) and what depends on it run again."""

    type: Literal["retry"] = "retry"
    id: RequestId
    constellation: ConstellationId
    star: str | None = Field(default=None, min_length=1, max_length=200)


class PinRequest(_Message):
    """Run a star that has not started yet on one device (an edit of the constellation)."""

    type: Literal["pin"] = "pin"
    id: RequestId
    constellation: ConstellationId
    star: str = Field(min_length=1, max_length=200)
    device: str = Field(min_length=1, max_length=64)


class EnrollRequest(_Message):
    """Create (or rotate) a device's enrolment token; the reply carries it, once."""

    type: Literal["enroll"] = "enroll"
    id: RequestId
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")


class ApproveRequest(_Message):
    """Allow (or refuse) a tool call a device waits on (`approval.needed`'s `request`)."""

    type: Literal["approve"] = "approve"
    id: RequestId
    request: str = Field(min_length=1, max_length=200)
    approved: bool
    reason: str = Field(default="", max_length=1000)


class ApprovalsRequest(_Message):
    type: Literal["approvals"] = "approvals"
    id: RequestId


class DevicesRequest(_Message):
    type: Literal["devices"] = "devices"
    id: RequestId


class HistoryRequest(_Message):
    type: Literal["history"] = "history"
    id: RequestId
    limit: int = Field(default=20, ge=1, le=1000)
    status: str | None = Field(default=None, max_length=20)


class ConstellationRequest(_Message):
    type: Literal["constellation"] = "constellation"
    id: RequestId
    constellation: ConstellationId


class MemorySearchRequest(_Message):
    """The remembered requests nearest in meaning to `text` (semantic recall)."""

    type: Literal["memory_search"] = "memory_search"
    id: RequestId
    text: str = Field(min_length=1, max_length=MAX_REQUEST_CHARS)
    limit: int = Field(default=5, ge=1, le=50)


class MemoryShowRequest(_Message):
    """One remembered request's tree: `request` is its id (`r-...`), a unique prefix of
    it, or the id of a constellation that ran for it."""

    type: Literal["memory_show"] = "memory_show"
    id: RequestId
    request: str = Field(min_length=1, max_length=200)


class MemoryForgetRequest(_Message):
    """Take a remembered request out of recall for good (its record stays)."""

    type: Literal["memory_forget"] = "memory_forget"
    id: RequestId
    request: str = Field(min_length=1, max_length=200)


Request = Annotated[
    AuthRequest
    | SubmitRequest
    | ProposeRequest
    | StartRequest
    | DiscardRequest
    | SubscribeRequest
    | UnsubscribeRequest
    | CancelRequest
    | CancelStarRequest
    | RetryRequest
    | PinRequest
    | EnrollRequest
    | ApproveRequest
    | ApprovalsRequest
    | DevicesRequest
    | HistoryRequest
    | ConstellationRequest
    | MemorySearchRequest
    | MemoryShowRequest
    | MemoryForgetRequest,
    Field(discriminator="type"),
]
REQUEST_TYPES: Final = (
    "auth",
    "submit",
    "propose",
    "start",
    "discard",
    "subscribe",
    "unsubscribe",
    "cancel",
    "cancel_star",
    "retry",
    "pin",
    "enroll",
    "approve",
    "approvals",
    "devices",
    "history",
    "constellation",
    "memory_search",
    "memory_show",
    "memory_forget",
)


# --------------------------------------------------------------------------- server messages


class Authenticated(_Message):
    type: Literal["authenticated"] = "authenticated"
    id: str
    protocol: str = PROTOCOL


class Submitted(_Message):
    type: Literal["submitted"] = "submitted"
    id: str
    constellation: str
    name: str
    stars: int
    version: int
    rationale: str = ""


class ProposedStar(_Message):
    """One star of a proposal, as a person reviews it: `device` says where it would run
    (a device's name; `each of a, b` for a star that fans out over the devices matching
    now; `any device` when the plan leaves it open), `what` the command, code, path, URL
    or goal it is given ("" when its tool takes none of these), `after` the stars it
    waits for."""

    id: str
    title: str = ""
    device: str
    tool: str
    what: str = ""
    after: list[str] = Field(default_factory=list)


class Proposal(_Message):
    """A plan made from words that has not touched any device. `proposal` is its id for
    `start` and `discard`; `constellation` the id the run will have once started;
    `stars` the plan for review, `plan` the whole constellation (as a `snapshot`'s
    `constellation`, every star pending) to draw; `expires_in` the seconds it is held."""

    type: Literal["proposal"] = "proposal"
    id: str
    proposal: str
    request: str
    constellation: str
    name: str
    rationale: str
    stars: list[ProposedStar]
    plan: dict[str, Any]
    expires_in: float


class Discarded(_Message):
    """`discarded` is false when the proposal had ended already (discarded before, or
    expired): nothing ran either way."""

    type: Literal["discarded"] = "discarded"
    id: str
    proposal: str
    discarded: bool


class Subscribed(_Message):
    """The subscription is open; `status` is the constellation's status at this moment
    ("fleet" for the fleet-wide stream). `epoch` names this orchestrator process: sequence
    numbers are comparable only within one epoch. `last_seq` is the last event number at
    this moment; `truncated` says the replay could not reach back to `after_seq` (older
    fleet events are no longer kept: re-read devices, approvals and history)."""

    type: Literal["subscribed"] = "subscribed"
    id: str
    constellation: str | None
    status: str
    epoch: str = ""
    last_seq: int = 0
    truncated: bool = False


class EventMessage(_Message):
    """One event of a subscription (`id` is the subscribe's; `constellation` the event's,
    "" for fleet events such as `device.state`). A constellation's stream ends after its
    `constellation.finished` event, or with an `error` of code `interrupted`."""

    type: Literal["event"] = "event"
    id: str
    constellation: str
    seq: int
    event: dict[str, Any]


class Unsubscribed(_Message):
    type: Literal["unsubscribed"] = "unsubscribed"
    id: str
    constellation: str | None


class Cancelled(_Message):
    """The cancel was applied (or the constellation had already ended: see `status`)."""

    type: Literal["cancelled"] = "cancelled"
    id: str
    constellation: str
    status: str


class StarCancelled(_Message):
    """The star's status after the cancel (it may have finished before it arrived)."""

    type: Literal["star_cancelled"] = "star_cancelled"
    id: str
    constellation: str
    star: str
    status: str


class Pinned(_Message):
    """The star will run on `device`; `version` is the constellation's version after the edit."""

    type: Literal["pinned"] = "pinned"
    id: str
    constellation: str
    star: str
    device: str
    version: int


class Enrolled(_Message):
    """The new token of device `name` (only a derived key is kept: this is the one copy)."""

    type: Literal["enrolled"] = "enrolled"
    id: str
    name: str
    token: str


class Decided(_Message):
    type: Literal["decided"] = "decided"
    id: str
    request: str
    approved: bool


class PendingApprovalInfo(_Message):
    request: str
    constellation: str
    star: str
    attempt: int
    device: str
    tool: str
    summary: str


class ApprovalList(_Message):
    type: Literal["approval_list"] = "approval_list"
    id: str
    approvals: list[PendingApprovalInfo]


class DeviceEntry(_Message):
    """An enrolled device (`state` from the store), with capabilities while connected.
    `running` lists the attempts it runs now as `constellation/star#attempt`; `last_seen`
    is a unix time; `in_process` marks the orchestrator's own machine."""

    name: str
    state: str
    connected: bool
    labels: list[str] = Field(default_factory=list)
    last_seen: float | None = None
    platform: str | None = None
    tools: list[str] = Field(default_factory=list)
    gpu: bool = False
    vram_free_mb: int = 0
    max_tasks: int | None = None
    running: list[str] = Field(default_factory=list)
    in_process: bool = False
    heartbeat_age: float | None = None
    """Seconds since the device was last heard from (connected remote devices only)."""


class DeviceList(_Message):
    type: Literal["device_list"] = "device_list"
    id: str
    devices: list[DeviceEntry]


class HistoryEntry(_Message):
    id: str
    name: str
    status: str
    version: int
    stars: int
    created_at: float
    finished_at: float | None
    reason: str | None


class HistoryList(_Message):
    type: Literal["history_list"] = "history_list"
    id: str
    constellations: list[HistoryEntry]


class EditEntry(_Message):
    """One accepted edit batch: the version it made and why."""

    version: int
    rationale: str
    undo: bool = False
    edits: int = 0


class Snapshot(_Message):
    """One constellation now: `constellation` is its full state (stars, lines, attempts,
    outputs) as the orchestrator serialises it; `live` says whether it is still in memory."""

    type: Literal["snapshot"] = "snapshot"
    id: str
    name: str
    status: str
    version: int
    rationale: str
    reason: str | None
    live: bool
    constellation: dict[str, Any]
    edits: list[EditEntry] = Field(default_factory=list)
    constellation_id: str = ""
    created_at: float | None = None
    finished_at: float | None = None


class MemoryHit(_Message):
    """A remembered request found by meaning: `similarity` (cosine, -1..1), its text and
    status, when it ran, the constellation that ran last, its final plan in short
    (`plan`: each star's id, title, tool, device and what it waited for), the outcome in
    words, how many failures it had and how many of them were repaired, and the devices
    it ran on."""

    request: str
    similarity: float
    text: str
    status: str
    source: str
    created_at: float
    finished_at: float | None
    constellation: str | None
    plan: list[dict[str, Any]] = Field(default_factory=list)
    outcome: str = ""
    failures: int = 0
    repaired: int = 0
    fleet: list[str] = Field(default_factory=list)


class MemoryHits(_Message):
    type: Literal["memory_hits"] = "memory_hits"
    id: str
    hits: list[MemoryHit]


class MemoryRevisionInfo(_Message):
    """One revision of a memory node: `kind` is created, edited, removed, stale or
    finished; `detail` says what changed (bounded)."""

    revision: int
    ts: float
    kind: str
    detail: dict[str, Any] = Field(default_factory=dict)


class MemoryNodeInfo(_Message):
    """One node of a request's memory tree (`kind`: request, constellation, star or
    attempt). `output` is a bounded summary, never raw device text; times are unix
    seconds; `stale` marks a node downstream of a revised one."""

    id: str
    kind: str
    parent: str | None
    name: str
    status: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    revision: int = 1
    stale: bool = False
    revisions: list[MemoryRevisionInfo] = Field(default_factory=list)


class MemoryTree(_Message):
    """One remembered request: its record, its consolidated `summary` (what was asked,
    the plan that finally ran, the outcome, what failed and how it was repaired, the
    fleet; null while it runs) and every node under it, parents first."""

    type: Literal["memory_tree"] = "memory_tree"
    id: str
    request: str
    text: str
    status: str
    source: str
    created_at: float
    finished_at: float | None
    constellation: str | None
    forgotten: bool = False
    summary: dict[str, Any] | None = None
    nodes: list[MemoryNodeInfo] = Field(default_factory=list)


class MemoryForgotten(_Message):
    """`forgotten` is false when the request had been forgotten already."""

    type: Literal["memory_forgotten"] = "memory_forgotten"
    id: str
    request: str
    forgotten: bool


class ErrorReply(_Message):
    """A refused request. `id` is the request's (None if it could not be read), `field`
    the offending field (dotted path, as in `stars.0.tool`) when one is to blame."""

    type: Literal["error"] = "error"
    id: str | None
    code: ErrorCode
    message: str
    field: str | None = None


ServerMessage = Annotated[
    Authenticated
    | Submitted
    | Proposal
    | Discarded
    | Subscribed
    | EventMessage
    | Unsubscribed
    | Cancelled
    | StarCancelled
    | Pinned
    | Enrolled
    | Decided
    | ApprovalList
    | DeviceList
    | HistoryList
    | Snapshot
    | MemoryHits
    | MemoryTree
    | MemoryForgotten
    | ErrorReply,
    Field(discriminator="type"),
]

_REQUESTS: TypeAdapter[Request] = TypeAdapter(Request)
_SERVER_MESSAGES: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


class BadRequest(Exception):
    """A frame that is not a valid request; carries the `ErrorReply` to send back."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.message)
        self.reply = reply


def plan_text_problem(text: str, source: str) -> str | None:
    """What makes `text` no plan before it is parsed (empty, or larger than
    `MAX_PLAN_BYTES`), said as `orrery run` says it of a local file; None if neither."""
    if not text.strip():
        return f"{source}:1:1: plan file is empty; it needs 'name' and 'stars'"
    if len(text) > MAX_PLAN_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_PLAN_BYTES:
        return (
            f"{source}: plan file is larger than {MAX_PLAN_BYTES // 1024} KiB; split it or "
            "move large data into files the stars read"
        )
    return None


def parse_request(frame: str | bytes, *, max_bytes: int = MAX_FRAME) -> Request:
    """Read one request frame; `BadRequest` (with the reply naming the field) otherwise.
    The frame's size (at most `max_bytes`) and nesting are checked before it is parsed
    (`protocol.json_limits`), so no frame can raise anything else."""
    try:
        raw = load_json(frame, max_bytes=max_bytes)
    except JsonRefused as exc:
        raise BadRequest(
            ErrorReply(id=None, code=ErrorCode.MALFORMED, message=exc.message)
        ) from None
    if not isinstance(raw, dict):
        raise BadRequest(
            ErrorReply(
                id=None,
                code=ErrorCode.MALFORMED,
                message=f"a request is a JSON object, not {type(raw).__name__}",
            )
        )
    request_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    request_id = request_id[:64] if request_id else None
    try:
        return _REQUESTS.validate_python(raw)
    except ValidationError as exc:
        raise BadRequest(_describe(exc, raw, request_id)) from None


def _describe(exc: ValidationError, raw: dict[str, Any], request_id: str | None) -> ErrorReply:
    error = exc.errors(include_url=False)[0]
    kind = raw.get("type")
    if error["type"] == "union_tag_not_found":
        return ErrorReply(
            id=request_id,
            code=ErrorCode.MALFORMED,
            message=f"type: missing; a request names its command: one of {_known()}",
            field="type",
        )
    if error["type"] == "union_tag_invalid":
        return ErrorReply(
            id=request_id,
            code=ErrorCode.UNKNOWN_COMMAND,
            message=f"type: unknown command {kind!r}; known: {_known()}",
            field="type",
        )
    field = ".".join(str(part) for part in error["loc"][1:]) or None  # loc[0] is the tag
    if kind == "submit" and field == "plan" and isinstance(raw.get("plan"), str):
        source = raw.get("source") if isinstance(raw.get("source"), str) else "<submitted plan>"
        problem = plan_text_problem(raw["plan"], str(source)[:500])
        if problem is not None:
            return ErrorReply(
                id=request_id, code=ErrorCode.INVALID_PLAN, message=problem, field="plan"
            )
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = f"unknown field for {kind!r}"
    elif error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    return ErrorReply(
        id=request_id,
        code=ErrorCode.MALFORMED,
        message=f"{field}: {message}" if field else message,
        field=field,
    )


def _known() -> str:
    return ", ".join(t for t in REQUEST_TYPES)


def parse_server_message(frame: str | bytes) -> ServerMessage:
    """Read one frame from the server; raises `ValidationError` or `ValueError`."""
    return _SERVER_MESSAGES.validate_json(frame)


def dump(message: BaseModel) -> str:
    """A message as one compact JSON frame (defaults included, so replies are explicit)."""
    return message.model_dump_json()


__all__ = [
    "CONTROL_PATH",
    "MAX_FRAME",
    "PROTOCOL",
    "REQUEST_TYPES",
    "ApprovalList",
    "ApprovalsRequest",
    "ApproveRequest",
    "AuthRequest",
    "Authenticated",
    "BadRequest",
    "CancelRequest",
    "CancelStarRequest",
    "Cancelled",
    "ConstellationRequest",
    "Decided",
    "DeviceEntry",
    "DeviceList",
    "DevicesRequest",
    "DiscardRequest",
    "Discarded",
    "EditEntry",
    "EnrollRequest",
    "Enrolled",
    "ErrorCode",
    "ErrorReply",
    "EventMessage",
    "HistoryEntry",
    "HistoryList",
    "HistoryRequest",
    "MemoryForgetRequest",
    "MemoryForgotten",
    "MemoryHit",
    "MemoryHits",
    "MemoryNodeInfo",
    "MemoryRevisionInfo",
    "MemorySearchRequest",
    "MemoryShowRequest",
    "MemoryTree",
    "PendingApprovalInfo",
    "PinRequest",
    "Pinned",
    "Proposal",
    "ProposeRequest",
    "ProposedStar",
    "Request",
    "RetryRequest",
    "ServerMessage",
    "Snapshot",
    "StarCancelled",
    "StartRequest",
    "SubmitRequest",
    "Submitted",
    "SubscribeRequest",
    "Subscribed",
    "UnsubscribeRequest",
    "Unsubscribed",
    "dump",
    "parse_request",
    "parse_server_message",
]
