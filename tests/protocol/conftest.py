"""Shared harness for the AIP tests: a fake clock, enrolled devices and wired session pairs.

`Link` joins a `ServerSession` and a `DeviceSession` with no socket in between: `pump()`
shuttles every frame each side queued to the other until both are quiet, and collects the
events of both. Time is a `FakeClock` the test moves by hand, so heartbeat and liveness
tests take microseconds.

Test modules get everything through the session-scoped `aip` fixture (a `Kit`) and import
the classes only for type checking (several test folders have a `conftest` module).
PBKDF2 at 100,000 iterations costs ~50 ms, so each device is enrolled once per test run
and the device side's key derivation is memoised for the tests of this folder.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args

import pytest
from pydantic import BaseModel

import protocol.session
from protocol.auth import DeviceKey, derive_key, enroll
from protocol.messages import (
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
    Resources,
    ResumeState,
    TaskAccept,
    TaskAcceptBody,
    TaskAssign,
    TaskCancel,
    TaskCancelBody,
    TaskProgressMessage,
    TaskRef,
    TaskResultMessage,
    ToolDescription,
    Welcome,
    WelcomeBody,
    parse_frame,
)
from protocol.session import (
    DeviceSession,
    ServerConfig,
    ServerSession,
    SessionEvent,
)
from protocol.tasks import TaskAssignment, TaskOutcome, TaskProgress, TaskResult

E = TypeVar("E")

DEVICES = ("dev-a", "dev-b", "dev-c")
START = 1000.0  # the fake clock's first reading; sums with it stay exact in binary floats

# Every message model, by its `type` tag (read from the `Message` union itself).
MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    model.model_fields["type"].default: model for model in get_args(get_args(Message)[0])
}


class FakeClock:
    """A clock that only moves when told to (`advance`, or assign `t`)."""

    def __init__(self, start: float = START) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass(frozen=True)
class Enrolled:
    device: str
    token: str
    key: DeviceKey


@functools.cache
def enrolled(device: str) -> Enrolled:
    """Enrol `device` once per test run (PBKDF2 is deliberately slow)."""
    token, key = enroll(device)
    return Enrolled(device=device, token=token, key=key)


def key_lookup(*devices: str) -> Callable[[str], DeviceKey | None]:
    """The orchestrator's key store: only `devices` are enrolled."""

    def lookup(device: str) -> DeviceKey | None:
        return enrolled(device).key if device in devices else None

    return lookup


def hello_body(device: str = "dev-a", **overrides: Any) -> HelloBody:
    fields: dict[str, Any] = {
        "device": device,
        "versions": [1],
        "platform": "linux",
        "labels": ["test"],
        "tools": [ToolDescription(name="shell.run", description="run a command")],
        "max_tasks": 4,
    }
    fields.update(overrides)
    return HelloBody(**fields)


def assignment(
    star: str = "s1",
    *,
    attempt: int = 1,
    device: str = "dev-a",
    constellation: str = "c1",
    args: dict[str, Any] | None = None,
) -> TaskAssignment:
    return TaskAssignment(
        constellation_id=constellation,
        star_id=star,
        attempt=attempt,
        device=device,
        tool="shell.run",
        args={"cmd": "echo hi"} if args is None else args,
        timeout=30.0,
    )


def ref(star: str = "s1", *, attempt: int = 1, constellation: str = "c1") -> TaskRef:
    return TaskRef(constellation_id=constellation, star_id=star, attempt=attempt)


def result(
    star: str = "s1", *, attempt: int = 1, constellation: str = "c1", output: Any = None
) -> TaskResult:
    return TaskResult(
        constellation_id=constellation,
        star_id=star,
        attempt=attempt,
        status=TaskOutcome.SUCCEEDED,
        output={"stdout": "hi\n"} if output is None else output,
    )


def progress(star: str = "s1", *, attempt: int = 1, constellation: str = "c1") -> TaskProgress:
    return TaskProgress(
        constellation_id=constellation,
        star_id=star,
        attempt=attempt,
        message="working",
        stream="stdout",
    )


def frame(message: BaseModel) -> str:
    return message.model_dump_json()


def raw(type_: str, body: Any = None, **envelope: Any) -> str:
    """An envelope built by hand, to send what the models would never produce."""
    data: dict[str, Any] = {"v": 1, "type": type_, "id": "m-raw", "ts": 0.0}
    if body is not None:
        data["body"] = body
    data.update(envelope)
    return json.dumps(data)


def sample_messages() -> dict[str, BaseModel]:
    """One fully populated instance of every message type (every optional field set)."""
    task = ref("fetch", attempt=2, constellation="c-42")
    return {
        "hello": Hello(
            id="m-hello",
            ts=1.5,
            body=HelloBody(
                device="laptop.home-1",
                versions=[1, 2],
                platform="darwin",
                labels=["mac", "gpu"],
                tools=[
                    ToolDescription(
                        name="shell.run",
                        description="Run a shell command",
                        args_schema={"type": "object", "properties": {"cmd": {"type": "string"}}},
                    )
                ],
                resources=Resources(cpus=8, memory_mb=16384, gpu=True, vram_free_mb=8000),
                max_tasks=3,
                resume=ResumeState(running=[task], unacked=[ref("old", attempt=1)]),
            ),
        ),
        "challenge": Challenge(
            id="m-challenge", ts=2.0, body=ChallengeBody(nonce="ab" * 32, salt="cd" * 16, version=1)
        ),
        "proof": Proof(
            id="m-proof",
            ts=2.5,
            body=ProofBody(device="laptop.home-1", nonce="ab" * 32, mac="0f" * 32),
        ),
        "welcome": Welcome(
            id="m-welcome",
            ts=3.0,
            body=WelcomeBody(
                session="5e55",
                version=1,
                heartbeat_interval=5.0,
                heartbeat_misses=3,
                max_frame=1_048_576,
                max_in_flight=3,
                known_unacked=[ref("old", attempt=1)],
            ),
        ),
        "heartbeat": Heartbeat(
            id="m-heartbeat",
            ts=4.0,
            body=HeartbeatBody(load=Load(running=2, cpu_percent=37.5, memory_percent=61.0)),
        ),
        "task.assign": TaskAssign(
            id="m-assign",
            ts=5.0,
            body=TaskAssignment(
                constellation_id="c-42",
                star_id="fetch",
                attempt=2,
                device="laptop.home-1",
                tool="http.get",
                args={"url": "https://example.org", "headers": {"accept": "text/html"}},
                timeout=60.0,
            ),
        ),
        "task.accept": TaskAccept(id="m-accept", ts=5.1, body=TaskAcceptBody(**task.model_dump())),
        "task.progress": TaskProgressMessage(
            id="m-progress",
            ts=5.2,
            body=TaskProgress(
                constellation_id="c-42",
                star_id="fetch",
                attempt=2,
                message="200 OK",
                stream="stderr",
            ),
        ),
        "task.result": TaskResultMessage(
            id="m-result",
            ts=5.3,
            body=TaskResult(
                constellation_id="c-42",
                star_id="fetch",
                attempt=2,
                status=TaskOutcome.FAILED,
                output={"status": 500, "body": ["a", 1, None, 2.5, True]},
                error="server error",
            ),
        ),
        "task.cancel": TaskCancel(
            id="m-cancel",
            ts=6.0,
            body=TaskCancelBody(**task.model_dump(), reason="user stopped it"),
        ),
        "ack": Ack(id="m-ack", ts=6.1, body=AckBody(ref="m-result", task=task)),
        "artifact.offer": ArtifactOffer(
            id="m-offer",
            ts=7.0,
            body=ArtifactOfferBody(
                transfer="t-1", name="report.pdf", size=70_000, sha256="e3" * 32, chunk_size=65_536
            ),
        ),
        "artifact.done": ArtifactDone(
            id="m-done",
            ts=7.5,
            body=ArtifactDoneBody(transfer="t-1", ok=False, message="disk full"),
        ),
        "artifact.fetch": ArtifactFetch(
            id="m-fetch",
            ts=7.75,
            body=ArtifactFetchBody(artifact="ab" * 32, transfer="t-2"),
        ),
        "approval.request": ApprovalRequest(
            id="m-approve?",
            ts=7.8,
            body=ApprovalRequestBody(
                **task.model_dump(), request="r-1", tool="shell.run", summary="run 'rm x'"
            ),
        ),
        "approval.decision": ApprovalDecision(
            id="m-approved",
            ts=7.9,
            body=ApprovalDecisionBody(request="r-1", approved=False, by="alice", reason="no"),
        ),
        "error": Error(
            id="m-error",
            ts=8.0,
            body=ErrorBody(code=ErrorCode.NOT_YOUR_TASK, message="not yours", ref="m-result"),
        ),
        "bye": Bye(id="m-bye", ts=9.0, body=ByeBody(reason="shutting down")),
    }


@dataclass
class Link:
    """A `ServerSession` and a `DeviceSession` wired back to back, with logs of both ways."""

    server: ServerSession
    device: DeviceSession
    clock: FakeClock
    server_events: list[SessionEvent] = field(default_factory=list)
    device_events: list[SessionEvent] = field(default_factory=list)
    to_server: list[str | bytes] = field(default_factory=list)  # every frame the device sent
    to_device: list[str | bytes] = field(default_factory=list)  # every frame the server sent

    def pump(self) -> None:
        """Deliver queued frames both ways until neither side has anything left to send."""
        while True:
            moved = False
            for item in self.device.data_to_send():
                moved = True
                self.to_server.append(item)
                self.server.receive_frame(item, binary=isinstance(item, bytes))
            self.server_events += self.server.events_received()
            for item in self.server.data_to_send():
                moved = True
                self.to_device.append(item)
                self.device.receive_frame(item, binary=isinstance(item, bytes))
            self.device_events += self.device.events_received()
            if not moved:
                return

    def handshake(self, known_unacked: list[TaskRef] | None = None) -> None:
        """hello → challenge → proof, then the orchestrator's `welcome` → active both ways."""
        self.device.start()
        self.pump()
        self.server.welcome(known_unacked)
        self.pump()

    def to_server_raw(self, data: str | bytes, *, binary: bool = False) -> None:
        """Feed the server a frame the device did not make, then pump the replies."""
        self.to_server.append(data)
        self.server.receive_frame(data, binary=binary)
        self.pump()

    def to_device_raw(self, data: str | bytes, *, binary: bool = False) -> None:
        self.to_device.append(data)
        self.device.receive_frame(data, binary=binary)
        self.pump()

    def take(self) -> tuple[list[SessionEvent], list[SessionEvent]]:
        """The (server, device) events collected so far; clears both lists."""
        taken = (self.server_events, self.device_events)
        self.server_events, self.device_events = [], []
        return taken

    def sent_by_server(self) -> list[Message]:
        """The text frames that went to the device, parsed (injected garbage left out)."""
        return _parsed(self.to_device)

    def sent_by_device(self) -> list[Message]:
        return _parsed(self.to_server)

    def errors_from_server(self) -> list[ErrorBody]:
        return [m.body for m in self.sent_by_server() if isinstance(m, Error)]

    def errors_from_device(self) -> list[ErrorBody]:
        return [m.body for m in self.sent_by_device() if isinstance(m, Error)]


def _parsed(frames: list[str | bytes]) -> list[Message]:
    messages = []
    for item in frames:
        if isinstance(item, str):
            with contextlib.suppress(ProtocolViolation):
                outcomes = parse_frame(item, max_frame=len(item.encode()) + 1)
                messages += [m for m in outcomes if not isinstance(m, ProtocolViolation)]
    return messages


def of(events: list[SessionEvent], kind: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, kind)]


class Kit:
    """What the AIP tests build from: links, clocks, enrolled devices, sample messages."""

    DEVICES = DEVICES
    START = START
    MESSAGE_MODELS = MESSAGE_MODELS
    assignment = staticmethod(assignment)
    ref = staticmethod(ref)
    result = staticmethod(result)
    progress = staticmethod(progress)
    hello_body = staticmethod(hello_body)
    frame = staticmethod(frame)
    raw = staticmethod(raw)
    of = staticmethod(of)
    sample_messages = staticmethod(sample_messages)
    enrolled = staticmethod(enrolled)
    key_lookup = staticmethod(key_lookup)

    @staticmethod
    def clock(start: float = START) -> FakeClock:
        return FakeClock(start)

    @staticmethod
    def server(
        clock: FakeClock,
        *,
        enrolled_devices: tuple[str, ...] = DEVICES,
        config: ServerConfig | None = None,
        owns: Callable[[str, tuple[str, str, int]], bool] | None = None,
    ) -> ServerSession:
        return ServerSession(
            keys=key_lookup(*enrolled_devices),
            now=clock,
            config=config or ServerConfig(),
            owns=owns,
        )

    @staticmethod
    def device(
        clock: FakeClock, device: str = "dev-a", *, token: str | None = None, **hello: Any
    ) -> DeviceSession:
        secret = token if token is not None else enrolled(device).token
        return DeviceSession(hello=hello_body(device, **hello), token=secret, now=clock)

    @classmethod
    def link(
        cls,
        device: str = "dev-a",
        *,
        clock: FakeClock | None = None,
        token: str | None = None,
        enrolled_devices: tuple[str, ...] = DEVICES,
        config: ServerConfig | None = None,
        owns: Callable[[str, tuple[str, str, int]], bool] | None = None,
        handshake: bool = False,
        **hello: Any,
    ) -> Link:
        clock = clock or FakeClock()
        link = Link(
            server=cls.server(clock, enrolled_devices=enrolled_devices, config=config, owns=owns),
            device=cls.device(clock, device, token=token, **hello),
            clock=clock,
        )
        if handshake:
            link.handshake()
            link.take()
        return link


@functools.cache
def _memoised_derive_key(token: str, salt: str) -> bytes:
    return derive_key(token, salt)


@pytest.fixture(scope="module", autouse=True)
def _fast_device_keys() -> Iterator[None]:
    """Each `DeviceSession` derives its key (~50 ms); the same token and salt give the same key."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol.session, "derive_key", _memoised_derive_key)
        yield


@pytest.fixture(scope="session")
def aip() -> Kit:
    return Kit()
