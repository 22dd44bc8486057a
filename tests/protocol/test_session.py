"""The sans-I/O AIP sessions, wired back to back with no socket: handshake, refusals,
fencing, limits, the task round trip, heartbeats and liveness, artifacts and closing."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from protocol.artifacts import ArtifactReceiver
from protocol.messages import (
    Ack,
    ArtifactDone,
    ArtifactDoneBody,
    ArtifactOffer,
    ArtifactOfferBody,
    Challenge,
    Error,
    ErrorBody,
    ErrorCode,
    Heartbeat,
    Hello,
    Load,
    Proof,
    ProtocolViolation,
    TaskAccept,
    TaskAssign,
    TaskProgressMessage,
    TaskResultMessage,
    Welcome,
)
from protocol.session import (
    MAX_OPEN_TRANSFERS,
    ArtifactChunk,
    ArtifactFinished,
    ArtifactOffered,
    AssignmentReceived,
    CancelRequested,
    DeviceAuthenticated,
    HeartbeatReceived,
    MessageAcked,
    PeerError,
    ProgressReceived,
    ResultAcked,
    ResultReceived,
    ServerConfig,
    SessionClosed,
    SessionState,
    TaskAccepted,
    Welcomed,
)

if TYPE_CHECKING:
    from conftest import Kit


def codes(errors: list[ErrorBody]) -> list[ErrorCode]:
    return [error.code for error in errors]


def types(messages: list[Any]) -> list[str]:
    return [message.type for message in messages]


def closed_events(events: list[Any]) -> list[SessionClosed]:
    return [event for event in events if isinstance(event, SessionClosed)]


# ------------------------------------------------------------------ handshake


def test_full_handshake(aip: Kit) -> None:
    link = aip.link("dev-a", max_tasks=3)
    assert link.server.state is SessionState.AWAIT_HELLO
    assert link.device.state is SessionState.AWAIT_CHALLENGE

    link.device.start()
    link.pump()
    assert types(link.sent_by_device()) == ["hello", "proof"]
    assert types(link.sent_by_server()) == ["challenge"]
    assert link.server.state is SessionState.ACTIVE
    assert link.device.state is SessionState.AWAIT_WELCOME
    (authenticated,) = aip.of(link.server_events, DeviceAuthenticated)
    assert authenticated.device == "dev-a"
    assert authenticated.hello == link.device.hello
    assert link.server.device == "dev-a"

    link.server.welcome()
    link.pump()
    assert link.device.state is SessionState.ACTIVE
    (welcomed,) = aip.of(link.device_events, Welcomed)
    assert welcomed.session == link.server.session_id == link.device.session_id
    assert welcomed.known_unacked == []
    welcome = link.sent_by_server()[-1]
    assert isinstance(welcome, Welcome)
    assert welcome.body.version == 1
    assert welcome.body.max_in_flight == 3  # min(config 64, hello.max_tasks 3)
    assert welcome.body.heartbeat_interval == 5.0
    assert welcome.body.heartbeat_misses == 3
    assert welcome.body.max_frame == 1_048_576
    assert link.device.max_in_flight == 3
    assert not link.errors_from_server()
    assert not link.errors_from_device()


def test_proof_mac_is_the_documented_construction(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.device.start()
    link.pump()
    challenge = next(m for m in link.sent_by_server() if isinstance(m, Challenge))
    proof = next(m for m in link.sent_by_device() if isinstance(m, Proof))
    token = aip.enrolled("dev-a").token
    key = hashlib.pbkdf2_hmac("sha256", token.encode(), bytes.fromhex(challenge.body.salt), 100_000)
    assert key.hex() == aip.enrolled("dev-a").key.key
    expected = hmac.new(key, f"aip1|dev-a|{challenge.body.nonce}".encode(), "sha256").hexdigest()
    assert proof.body.mac == expected
    assert proof.body.nonce == challenge.body.nonce
    assert challenge.body.salt == aip.enrolled("dev-a").key.salt
    assert len(challenge.body.nonce) == 64


def test_every_challenge_has_a_fresh_nonce(aip: Kit) -> None:
    nonces = set()
    for _ in range(5):
        link = aip.link("dev-a")
        link.device.start()
        link.pump()
        nonces.add(next(m for m in link.sent_by_server() if isinstance(m, Challenge)).body.nonce)
    assert len(nonces) == 5


def test_known_unacked_reaches_the_device(aip: Kit) -> None:
    link = aip.link("dev-a")
    stored = [aip.ref("s1"), aip.ref("s2", attempt=3)]
    link.handshake(known_unacked=stored)
    (welcomed,) = aip.of(link.device_events, Welcomed)
    assert welcomed.known_unacked == stored


def test_wrong_token_is_refused_with_bad_proof(aip: Kit) -> None:
    link = aip.link("dev-a", token=aip.enrolled("dev-b").token)
    link.device.start()
    link.pump()
    assert codes(link.errors_from_server()) == [ErrorCode.BAD_PROOF]
    assert "token" in link.errors_from_server()[0].message
    assert link.server.closed
    assert link.device.closed  # an error before `welcome` ends the device's attempt
    assert not aip.of(link.server_events, DeviceAuthenticated)
    assert link.server.device is None
    (closed,) = closed_events(link.server_events)
    assert not closed.lost
    assert aip.of(link.device_events, PeerError)[0].code is ErrorCode.BAD_PROOF
    assert types(link.sent_by_server()) == ["challenge", "error"]


def test_unknown_device_is_refused(aip: Kit) -> None:
    link = aip.link("dev-z", enrolled_devices=("dev-a",))
    link.device.start()
    link.pump()
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.UNKNOWN_DEVICE
    assert "orrery devices enroll dev-z" in error.message
    assert link.server.closed
    assert link.device.closed
    assert types(link.sent_by_server()) == ["error"]  # no challenge: nothing to probe


def test_hello_without_a_common_version_is_refused(aip: Kit) -> None:
    link = aip.link("dev-a", versions=[2, 3])
    link.device.start()
    link.pump()
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.UNSUPPORTED_VERSION
    assert "[2, 3]" in error.message
    assert link.server.closed
    assert link.device.closed


def test_hello_listing_several_versions_including_1_is_accepted(aip: Kit) -> None:
    link = aip.link("dev-a", versions=[3, 2, 1])
    link.handshake()
    assert link.server.state is SessionState.ACTIVE
    assert link.device.state is SessionState.ACTIVE


@pytest.mark.parametrize("version", [2, 0, None])
def test_envelope_with_another_version_is_refused_and_closes(aip: Kit, version: Any) -> None:
    link = aip.link("dev-a")
    hello = json.loads(aip.frame(Hello(id="h-1", body=aip.hello_body("dev-a"))))
    hello["v"] = version
    link.to_server_raw(json.dumps(hello))
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.UNSUPPORTED_VERSION
    assert error.ref == "h-1"
    assert link.server.closed


def test_envelope_with_another_version_closes_an_active_session_too(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(json.dumps({"v": 2, "type": "heartbeat", "id": "x", "body": {}}))
    assert codes(link.errors_from_server()) == [ErrorCode.UNSUPPORTED_VERSION]
    assert link.server.closed


def test_device_refuses_another_version_from_the_orchestrator(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_device_raw(json.dumps({"v": 7, "type": "heartbeat", "id": "x", "body": {}}))
    assert codes(link.errors_from_device()) == [ErrorCode.UNSUPPORTED_VERSION]
    assert link.device.closed


def test_replayed_proof_is_refused(aip: Kit) -> None:
    # Session A: a normal handshake, whose proof frame an eavesdropper captures.
    first = aip.link("dev-a", handshake=True)
    captured = next(f for f in first.to_server if '"type":"proof"' in str(f))

    # Session B: the attacker says hello as dev-a, gets its own challenge, replays A's proof.
    clock = aip.clock()
    second = aip.server(clock)
    second.receive_frame(aip.frame(Hello(body=aip.hello_body("dev-a"))))
    sent = second.data_to_send()
    assert json.loads(sent[0])["type"] == "challenge"
    assert json.loads(sent[0])["body"]["nonce"] != json.loads(captured)["body"]["nonce"]
    second.receive_frame(captured)
    (error,) = [json.loads(f) for f in second.data_to_send()]
    assert error["type"] == "error"
    assert error["body"]["code"] == "bad_proof"
    assert second.closed
    assert not any(isinstance(e, DeviceAuthenticated) for e in second.events_received())


def test_proof_replayed_into_its_own_active_session_closes_it(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    captured = next(f for f in link.to_server if '"type":"proof"' in str(f))
    link.to_server_raw(captured)
    assert codes(link.errors_from_server()) == [ErrorCode.UNEXPECTED]
    assert link.server.closed


def test_proof_with_right_mac_for_another_device_name_is_refused(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.device.start()
    hello = link.device.data_to_send()
    link.server.receive_frame(hello[0])
    challenge = json.loads(link.server.data_to_send()[0])
    link.device.receive_frame(json.dumps(challenge))
    proof = json.loads(link.device.data_to_send()[0])
    proof["body"]["device"] = "dev-b"
    link.server.receive_frame(json.dumps(proof))
    (error,) = [json.loads(f) for f in link.server.data_to_send()]
    assert error["body"]["code"] == "bad_proof"
    assert link.server.closed


def test_proof_with_tampered_mac_is_refused(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.device.start()
    link.server.receive_frame(link.device.data_to_send()[0])
    link.device.receive_frame(link.server.data_to_send()[0])
    proof = json.loads(link.device.data_to_send()[0])
    proof["body"]["mac"] = ("0" if proof["body"]["mac"][0] != "0" else "1") + proof["body"]["mac"][
        1:
    ]
    link.server.receive_frame(json.dumps(proof))
    (error,) = [json.loads(f) for f in link.server.data_to_send()]
    assert error["body"]["code"] == "bad_proof"
    assert link.server.closed


def test_proof_before_hello_is_unexpected_and_closes(aip: Kit) -> None:
    link = aip.link("dev-a")
    proof = Proof(body={"device": "dev-a", "nonce": "a" * 64, "mac": "b" * 64})  # type: ignore[arg-type]
    link.to_server_raw(aip.frame(proof))
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.UNEXPECTED
    assert error.ref == proof.id
    assert link.server.closed
    assert closed_events(link.server_events)


def test_second_hello_during_the_handshake_is_refused_but_not_fatal(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.device.start()
    hello = link.device.data_to_send()[0]
    link.server.receive_frame(hello)
    link.server.data_to_send()
    link.server.receive_frame(hello)
    (error,) = [json.loads(f) for f in link.server.data_to_send()]
    assert error["body"]["code"] == "unexpected"
    assert error["body"]["message"] == (
        "a second hello while the challenge is unanswered; answer the challenge already "
        "sent with proof (it stays valid)"
    )
    assert link.server.state is SessionState.AWAIT_PROOF


def test_hello_after_the_handshake_is_refused_but_not_fatal(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(aip.frame(Hello(body=aip.hello_body("dev-b"))))
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.UNEXPECTED
    assert error.message.startswith(
        "hello after the handshake: this connection is already authenticated as 'dev-a'"
    )
    assert link.server.state is SessionState.ACTIVE
    assert link.server.device == "dev-a"


def before_handshake_messages(aip: Kit) -> list[Any]:
    samples = aip.sample_messages()
    return [
        samples[kind]
        for kind in (
            "heartbeat",
            "task.accept",
            "task.progress",
            "task.result",
            "ack",
            "artifact.offer",
            "artifact.done",
            "error",
            "bye",
            "task.assign",
            "welcome",
        )
    ]


@pytest.mark.parametrize("stage", ["await_hello", "await_proof"])
@pytest.mark.parametrize(
    "kind",
    [
        "heartbeat",
        "task.accept",
        "task.progress",
        "task.result",
        "ack",
        "artifact.offer",
        "artifact.done",
        "error",
        "bye",
        "task.assign",
        "welcome",
        "challenge",
    ],
)
def test_any_other_message_before_the_handshake_is_unexpected_and_closes(
    aip: Kit, stage: str, kind: str
) -> None:
    link = aip.link("dev-a")
    if stage == "await_proof":
        link.device.start()
        link.server.receive_frame(link.device.data_to_send()[0])
        link.server.data_to_send()
        assert link.server.state is SessionState.AWAIT_PROOF
    message = aip.sample_messages()[kind]
    link.to_server_raw(aip.frame(message))
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.UNEXPECTED
    assert error.ref == message.id  # type: ignore[attr-defined]
    assert link.server.closed
    assert not [e for e in link.server_events if not isinstance(e, SessionClosed)]


def test_malformed_frame_during_the_handshake_closes(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.to_server_raw("this is not json")
    assert codes(link.errors_from_server()) == [ErrorCode.MALFORMED]
    assert link.server.closed


def test_oversized_frame_during_the_handshake_is_refused_but_not_fatal(aip: Kit) -> None:
    link = aip.link("dev-a", config=ServerConfig(max_frame=2048))
    link.server.receive_frame(" " * 4096)
    (error,) = [json.loads(f) for f in link.server.data_to_send()]  # kept from the device
    assert error["body"]["code"] == "too_large"
    assert link.server.state is SessionState.AWAIT_HELLO
    link.handshake()
    assert link.server.state is SessionState.ACTIVE


@pytest.mark.parametrize("kind", ["task.assign", "task.cancel", "ack", "heartbeat"])
def test_device_refuses_work_before_welcome(aip: Kit, kind: str) -> None:
    link = aip.link("dev-a")
    link.device.start()
    link.device.data_to_send()
    message = aip.sample_messages()[kind]
    link.to_device_raw(aip.frame(message))
    assert codes(link.errors_from_device()) == [ErrorCode.UNEXPECTED]
    assert link.device.closed
    assert not aip.of(link.device_events, AssignmentReceived)


def test_device_refuses_welcome_without_a_proof(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.device.start()
    link.device.data_to_send()
    link.to_device_raw(aip.frame(aip.sample_messages()["welcome"]))
    assert codes(link.errors_from_device()) == [ErrorCode.UNEXPECTED]
    assert link.device.closed


def test_device_refuses_a_challenge_whose_salt_is_not_hex(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.device.start()
    link.device.data_to_send()
    challenge = {"nonce": "a" * 64, "salt": "not hex, not at all", "version": 1}
    link.to_device_raw(aip.raw("challenge", challenge))
    assert codes(link.errors_from_device()) == [ErrorCode.MALFORMED]
    assert "body.salt" in link.errors_from_device()[0].message


def test_device_refuses_a_second_challenge(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_device_raw(aip.frame(aip.sample_messages()["challenge"]))
    assert codes(link.errors_from_device()) == [ErrorCode.UNEXPECTED]
    assert link.device.closed


# ------------------------------------------------------------------ fencing


def foreign(aip: Kit, kind: str, star: str = "s9", attempt: int = 1) -> Any:
    """A device message about a task this connection was not assigned."""
    if kind == "task.accept":
        return TaskAccept(body=aip.ref(star, attempt=attempt).model_dump())  # type: ignore[arg-type]
    if kind == "task.progress":
        return TaskProgressMessage(body=aip.progress(star, attempt=attempt))
    return TaskResultMessage(body=aip.result(star, attempt=attempt))


@pytest.mark.parametrize("kind", ["task.accept", "task.progress", "task.result"])
def test_message_about_a_task_not_assigned_here_is_refused(aip: Kit, kind: str) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1"))
    link.pump()
    link.take()
    message = foreign(aip, kind)
    link.to_server_raw(aip.frame(message))
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.NOT_YOUR_TASK
    assert error.ref == message.id
    assert "c1/s9" in error.message
    assert "dev-a" in error.message
    assert link.server.state is SessionState.ACTIVE  # the connection stays open
    server_events, _ = link.take()
    assert server_events == []  # and nothing reaches the orchestrator
    assert list(link.server.in_flight) == [("c1", "s1", 1)]


@pytest.mark.parametrize("kind", ["task.accept", "task.progress", "task.result"])
def test_stale_attempt_is_fenced(aip: Kit, kind: str) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1", attempt=2))
    link.pump()
    link.take()
    link.to_server_raw(aip.frame(foreign(aip, kind, star="s1", attempt=1)))
    assert codes(link.errors_from_server()) == [ErrorCode.NOT_YOUR_TASK]
    assert link.take()[0] == []


def test_result_for_another_devices_task_is_refused(aip: Kit) -> None:
    clock = aip.clock()
    a = aip.link("dev-a", clock=clock, handshake=True)
    b = aip.link("dev-b", clock=clock, handshake=True)
    b.server.assign(aip.assignment("s-b", device="dev-b"))
    b.pump()
    b.take()
    a.to_server_raw(aip.frame(TaskResultMessage(body=aip.result("s-b"))))
    assert codes(a.errors_from_server()) == [ErrorCode.NOT_YOUR_TASK]
    assert a.take()[0] == []
    assert b.server.in_flight  # dev-b's task is untouched


def test_owns_callback_decides_ownership(aip: Kit) -> None:
    calls: list[tuple[str, tuple[str, str, int]]] = []
    owned = {("c1", "resumed", 1)}

    def owns(device: str, key: tuple[str, str, int]) -> bool:
        calls.append((device, key))
        return key in owned

    link = aip.link("dev-a", owns=owns, handshake=True)
    # Nothing was assigned on this connection, but the orchestrator says dev-a owns it
    # (it was assigned before a reconnect): accepted.
    message_id = link.device.send_result(aip.result("resumed"))
    link.pump()
    (received,) = aip.of(link.server_events, ResultReceived)
    assert received.message_id == message_id
    assert calls == [("dev-a", aip.ref("resumed").key)]
    # Assigned on this connection, but the orchestrator no longer counts it as dev-a's
    # (cancelled and reassigned elsewhere, say): the callback wins over `in_flight`.
    link.server.assign(aip.assignment("s1"))
    link.pump()
    link.take()
    link.device.send_result(aip.result("s1"))
    link.pump()
    assert link.take()[0] == []
    assert codes(link.errors_from_server())[-2:] == [ErrorCode.NOT_YOUR_TASK] * 2  # accept, result


def test_result_with_ids_no_task_ref_takes_is_malformed_not_a_crash(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    for star in ["", "x" * 65]:
        body = aip.result("s1").model_dump(mode="json") | {"star_id": star}
        link.to_server_raw(aip.raw("task.result", body))
    assert codes(link.errors_from_server()) == [ErrorCode.MALFORMED] * 2
    assert "star_id" in link.errors_from_server()[0].message
    assert link.server.state is SessionState.ACTIVE
    assert link.take()[0] == []


def test_assignment_with_ids_no_task_ref_takes_is_refused_by_the_device(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    body = aip.assignment("s1").model_dump(mode="json") | {"star_id": "x" * 65}
    link.to_device_raw(aip.raw("task.assign", body))
    assert codes(link.errors_from_device()) == [ErrorCode.MALFORMED]
    assert link.take()[1] == []  # no AssignmentReceived for a task it cannot accept
    assert link.device.state is SessionState.ACTIVE


# ------------------------------------------------------------------ limits


def test_assign_beyond_max_in_flight_is_refused(aip: Kit) -> None:
    link = aip.link("dev-a", max_tasks=2, handshake=True)
    assert link.server.max_in_flight == 2
    link.server.assign(aip.assignment("s1"))
    link.server.assign(aip.assignment("s2"))
    with pytest.raises(ProtocolViolation) as caught:
        link.server.assign(aip.assignment("s3"))
    assert caught.value.code is ErrorCode.TOO_MANY_TASKS
    assert "limit 2" in caught.value.message
    link.pump()
    assert types(link.sent_by_server()).count("task.assign") == 2  # nothing sent for s3
    assert ("c1", "s3", 1) not in link.server.in_flight
    # A stored result frees the slot.
    link.device.send_result(aip.result("s1"))
    link.pump()
    (received,) = aip.of(link.server_events, ResultReceived)
    link.server.ack_result(received.result, received.message_id)
    link.server.assign(aip.assignment("s3"))


def test_orchestrator_limit_caps_the_device_limit(aip: Kit) -> None:
    link = aip.link("dev-a", max_tasks=10, config=ServerConfig(max_in_flight=1), handshake=True)
    assert link.server.max_in_flight == link.device.max_in_flight == 1
    link.server.assign(aip.assignment("s1"))
    with pytest.raises(ProtocolViolation, match="limit 1"):
        link.server.assign(aip.assignment("s2"))


def test_cancel_frees_a_slot(aip: Kit) -> None:
    link = aip.link("dev-a", max_tasks=1, handshake=True)
    link.server.assign(aip.assignment("s1"))
    link.server.cancel(aip.ref("s1"), "no longer needed")
    link.server.assign(aip.assignment("s2"))


def test_assign_before_the_handshake_is_refused(aip: Kit) -> None:
    link = aip.link("dev-a")
    with pytest.raises(ProtocolViolation) as caught:
        link.server.assign(aip.assignment())
    assert caught.value.code is ErrorCode.UNEXPECTED


def test_rate_limit_drops_frames_but_keeps_the_connection(aip: Kit) -> None:
    link = aip.link("dev-a", config=ServerConfig(rate=10.0, burst=5.0), handshake=True)
    link.clock.advance(10.0)  # the bucket refills to its burst of 5
    for _ in range(7):
        link.device.send_heartbeat(Load(running=1))
    link.pump()
    assert len(aip.of(link.server_events, HeartbeatReceived)) == 5
    assert codes(link.errors_from_server()) == [ErrorCode.RATE_LIMITED] * 2
    assert "slow down" in link.errors_from_server()[0].message
    assert link.server.state is SessionState.ACTIVE
    link.take()
    link.clock.advance(0.1)  # one token at 10 per second
    link.device.send_heartbeat(Load())
    link.device.send_heartbeat(Load())
    link.pump()
    assert len(aip.of(link.server_events, HeartbeatReceived)) == 1
    assert codes(link.errors_from_server()) == [ErrorCode.RATE_LIMITED] * 3


def test_rate_limit_counts_handshake_frames(aip: Kit) -> None:
    link = aip.link("dev-a", config=ServerConfig(rate=1.0, burst=1.0))
    link.device.start()
    link.pump()  # hello takes the only token; the proof is dropped
    assert codes(link.errors_from_server()) == [ErrorCode.RATE_LIMITED]
    assert link.server.state is SessionState.AWAIT_PROOF
    assert link.device.closed  # the device gives up on any error before welcome


def test_oversized_frame_after_the_handshake_is_refused_and_survived(aip: Kit) -> None:
    link = aip.link("dev-a", config=ServerConfig(max_frame=4096), handshake=True)
    assert link.device.max_frame == 4096  # learnt from welcome
    link.to_server_raw(json.dumps({"v": 1, "type": "bye", "body": {"reason": "x" * 5000}}))
    assert codes(link.errors_from_server()) == [ErrorCode.TOO_LARGE]
    assert link.server.state is SessionState.ACTIVE
    link.to_device_raw(" " * 5000)
    assert codes(link.errors_from_device()) == [ErrorCode.TOO_LARGE]
    assert link.device.state is SessionState.ACTIVE


# ------------------------------------------------------------------ the work


def test_task_round_trip(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    job = aip.assignment("s1", args={"cmd": "uname -a"})
    assign_id = link.server.assign(job)
    link.pump()
    server_events, device_events = link.take()
    # The device is told, and accepts on its own.
    assert [type(e) for e in device_events] == [AssignmentReceived]
    assert device_events[0].assignment == job  # type: ignore[union-attr]
    assert server_events == [TaskAccepted(task=aip.ref("s1"))]
    assign = next(m for m in link.sent_by_server() if isinstance(m, TaskAssign))
    assert assign.id == assign_id
    # Progress, then the result.
    link.device.send_progress(aip.progress("s1"))
    result_id = link.device.send_result(aip.result("s1"))
    link.pump()
    server_events, _ = link.take()
    assert [type(e) for e in server_events] == [ProgressReceived, ResultReceived]
    received = server_events[1]
    assert isinstance(received, ResultReceived)
    assert received.result == aip.result("s1")
    assert received.message_id == result_id
    assert ("c1", "s1", 1) in link.server.in_flight  # until stored and acked
    # Stored: ack. The device may forget it.
    link.server.ack_result(received.result, received.message_id)
    link.pump()
    _, device_events = link.take()
    assert device_events == [ResultAcked(task=aip.ref("s1"))]
    ack = link.sent_by_server()[-1]
    assert isinstance(ack, Ack)
    assert ack.body.ref == result_id
    assert ack.body.task == aip.ref("s1")
    assert link.server.in_flight == {}
    assert not link.errors_from_server()
    assert not link.errors_from_device()


def test_result_resent_before_the_ack_is_delivered_again(aip: Kit) -> None:
    """At least once: the orchestrator stores by (task, attempt) and acks each copy."""
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1"))
    first = link.device.send_result(aip.result("s1"))
    second = link.device.send_result(aip.result("s1"))
    link.pump()
    received = aip.of(link.server_events, ResultReceived)
    assert [r.message_id for r in received] == [first, second]
    for item in received:
        link.server.ack_result(item.result, item.message_id)
    link.pump()
    assert aip.of(link.device_events, ResultAcked) == [ResultAcked(task=aip.ref("s1"))] * 2


def test_result_resent_after_the_ack_is_fenced_without_an_owns_callback(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1"))
    link.device.send_result(aip.result("s1"))
    link.pump()
    (received,) = aip.of(link.server_events, ResultReceived)
    link.server.ack_result(received.result, received.message_id)
    link.device.send_result(aip.result("s1"))
    link.pump()
    assert len(aip.of(link.server_events, ResultReceived)) == 1
    assert codes(link.errors_from_server()) == [ErrorCode.NOT_YOUR_TASK]


def test_several_tasks_interleave(aip: Kit) -> None:
    link = aip.link("dev-a", max_tasks=4, handshake=True)
    for star in ("a", "b", "c"):
        link.server.assign(aip.assignment(star))
    link.pump()
    for star in ("c", "a", "b"):
        link.device.send_result(aip.result(star))
    link.pump()
    received = aip.of(link.server_events, ResultReceived)
    assert [r.result.star_id for r in received] == ["c", "a", "b"]
    for item in received:
        link.server.ack_result(item.result, item.message_id)
    link.pump()
    assert [e.task.star_id for e in aip.of(link.device_events, ResultAcked)] == ["c", "a", "b"]
    assert link.server.in_flight == {}


def test_cancel(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1", attempt=2))
    link.pump()
    link.take()
    link.server.cancel(aip.ref("s1", attempt=2), "the user cancelled the constellation")
    link.pump()
    _, device_events = link.take()
    assert device_events == [
        CancelRequested(
            task=aip.ref("s1", attempt=2), reason="the user cancelled the constellation"
        )
    ]
    assert link.server.in_flight == {}
    # A result that crosses the cancel on the wire is fenced.
    link.device.send_result(aip.result("s1", attempt=2))
    link.pump()
    assert codes(link.errors_from_server()) == [ErrorCode.NOT_YOUR_TASK]
    assert link.take()[0] == []


def test_cancel_of_an_unknown_task_still_reaches_the_device(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.cancel(aip.ref("ghost"), "stop")
    link.pump()
    assert aip.of(link.device_events, CancelRequested) == [
        CancelRequested(task=aip.ref("ghost"), reason="stop")
    ]


def test_ack_without_a_task_confirms_the_message_it_names(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_device_raw(aip.raw("ack", {"ref": "m-1"}))
    assert link.take() == ([], [MessageAcked(ref="m-1")])  # no result is forgotten
    assert not link.errors_from_device()


def test_acks_from_the_device_are_ignored(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(aip.raw("ack", {"ref": "whatever"}))
    assert link.take() == ([], [])
    assert not link.errors_from_server()


@pytest.mark.parametrize("kind", ["challenge", "welcome", "task.assign", "task.cancel"])
def test_orchestrator_only_messages_from_a_device_are_refused_not_fatal(
    aip: Kit, kind: str
) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(aip.frame(aip.sample_messages()[kind]))
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.UNEXPECTED
    assert "not sent by devices" in error.message
    assert link.server.state is SessionState.ACTIVE


@pytest.mark.parametrize("kind", ["hello", "proof", "task.accept", "task.progress", "task.result"])
def test_device_only_messages_from_the_orchestrator_are_refused_not_fatal(
    aip: Kit, kind: str
) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_device_raw(aip.frame(aip.sample_messages()[kind]))
    (error,) = link.errors_from_device()
    assert error.code is ErrorCode.UNEXPECTED
    assert link.device.state is SessionState.ACTIVE


def test_error_from_the_device_is_an_event_not_a_close(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(
        aip.frame(Error(body=ErrorBody(code=ErrorCode.INTERNAL, message="tool crashed")))
    )
    assert link.take()[0] == [PeerError(code=ErrorCode.INTERNAL, message="tool crashed")]
    assert link.server.state is SessionState.ACTIVE
    assert not link.errors_from_server()  # errors are never answered


def test_error_from_the_orchestrator_after_welcome_is_an_event_not_a_close(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_device_raw(aip.frame(Error(body=ErrorBody(code=ErrorCode.ARTIFACT, message="bad"))))
    assert link.take()[1] == [PeerError(code=ErrorCode.ARTIFACT, message="bad")]
    assert link.device.state is SessionState.ACTIVE


# ------------------------------------------------------------------ heartbeats and liveness


def test_heartbeats_keep_the_session_alive(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    assert not link.device.heartbeat_due()
    for _ in range(100):
        link.clock.advance(1.0)
        if link.device.heartbeat_due():
            link.device.send_heartbeat(Load(running=2, cpu_percent=12.5))
            link.pump()
        assert link.server.check_liveness()
    beats = aip.of(link.server_events, HeartbeatReceived)
    assert len(beats) == 20  # every 5 s for 100 s
    assert beats[0].load == Load(running=2, cpu_percent=12.5)
    assert not closed_events(link.server_events)


def test_device_heartbeat_interval_comes_from_welcome(aip: Kit) -> None:
    link = aip.link("dev-a", config=ServerConfig(heartbeat_interval=2.0), handshake=True)
    assert link.device.heartbeat_interval == 2.0
    link.clock.advance(1.5)
    assert not link.device.heartbeat_due()
    link.clock.advance(0.5)
    assert link.device.heartbeat_due()


def test_no_heartbeat_before_welcome(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.device.start()
    link.clock.advance(60.0)
    assert not link.device.heartbeat_due()


def test_silence_is_lost_exactly_after_interval_times_misses(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)  # last frame from the device at START
    deadline = aip.START + 5.0 * 3
    link.clock.t = deadline
    assert link.server.check_liveness()  # exactly at the boundary: still alive
    assert not link.server.closed
    link.clock.t = math.nextafter(deadline, math.inf)
    assert not link.server.check_liveness()
    assert link.server.closed
    (closed,) = closed_events(link.server.events_received())
    assert closed.lost
    assert not closed.dropped
    assert "3 missed" in closed.reason
    assert not link.server.data_to_send()  # nothing is said to a silent peer
    assert not link.server.check_liveness()  # and it stays lost


def test_liveness_uses_the_configured_interval_and_misses(aip: Kit) -> None:
    config = ServerConfig(heartbeat_interval=0.5, heartbeat_misses=4)
    link = aip.link("dev-a", config=config, handshake=True)
    link.clock.advance(1.5)
    link.device.send_heartbeat(Load())
    link.pump()
    link.clock.advance(2.0)
    assert link.server.check_liveness()
    link.clock.advance(0.001)
    assert not link.server.check_liveness()


def test_any_frame_counts_as_a_sign_of_life(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.clock.advance(14.0)
    link.to_server_raw("garbage, but from a living peer")
    link.clock.advance(14.0)
    assert link.server.check_liveness()


def test_a_silent_handshake_is_lost_too(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.device.start()
    link.device.data_to_send()  # the hello never arrives
    link.clock.advance(15.001)
    assert not link.server.check_liveness()
    assert closed_events(link.server.events_received())[0].lost


def test_connection_lost_is_dropped_not_lost(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.connection_lost("socket reset")
    link.device.connection_lost()
    link.pump()
    server_events, device_events = link.take()
    assert server_events == [SessionClosed(reason="socket reset", dropped=True)]
    assert device_events == [SessionClosed(reason="connection lost", dropped=True)]
    assert link.server.closed
    assert link.device.closed


# ------------------------------------------------------------------ garbage and binary


@pytest.mark.parametrize(
    "garbage",
    [
        "not json",
        "[1, 2, 3]",
        '{"v": 1, "type": "nope", "id": "g"}',
        '{"v": 1, "type": "task.result", "id": "g", "body": {"status": "maybe"}}',
        '{"v": 1, "type": "heartbeat", "id": "g", "body": {}, "extra": 1}',
        "[" * 5000,
    ],
)
def test_garbage_after_the_handshake_gets_an_error_and_the_session_survives(
    aip: Kit, garbage: str
) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(garbage)
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.MALFORMED
    assert link.server.state is SessionState.ACTIVE
    link.device.send_heartbeat(Load())
    link.pump()
    assert aip.of(link.server_events, HeartbeatReceived)


def test_envelope_without_a_version_closes_even_after_the_handshake(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw("{}")
    assert codes(link.errors_from_server()) == [ErrorCode.UNSUPPORTED_VERSION]
    assert link.server.closed


def test_error_text_is_cut_to_what_an_error_body_holds(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(json.dumps({"v": 1, "type": "x" * 5000, "id": "long"}))
    link.to_server_raw(aip.raw("heartbeat", {"k" * 5000: 1}))
    errors = link.errors_from_server()
    assert codes(errors) == [ErrorCode.MALFORMED] * 2
    assert all(len(error.message) == 4000 for error in errors)
    assert errors[0].message.startswith("unknown message type 'xxx")
    assert errors[0].ref == "long"
    assert link.server.state is SessionState.ACTIVE


def test_garbage_to_the_device_gets_an_error_and_the_session_survives(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_device_raw("{{{")
    assert codes(link.errors_from_device()) == [ErrorCode.MALFORMED]
    assert link.device.state is SessionState.ACTIVE


def test_binary_frame_outside_an_artifact_offer_is_refused(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(b"\x00\x01chunk", binary=True)
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.BINARY_UNEXPECTED
    assert "artifact.offer" in error.message
    assert link.server.state is SessionState.ACTIVE
    assert link.take()[0] == []


def test_binary_frame_before_the_handshake_is_refused_not_fatal(aip: Kit) -> None:
    link = aip.link("dev-a")
    link.to_server_raw(b"\x00", binary=True)
    assert codes(link.errors_from_server()) == [ErrorCode.BINARY_UNEXPECTED]
    assert link.server.state is SessionState.AWAIT_HELLO


def offer(transfer: str = "t-1") -> ArtifactOffer:
    return ArtifactOffer(
        body=ArtifactOfferBody(
            transfer=transfer, name="out.bin", size=8, sha256="0" * 64, chunk_size=4
        )
    )


def test_binary_frames_inside_an_artifact_offer_are_chunks(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    announced = offer()
    link.to_server_raw(aip.frame(announced))
    link.to_server_raw(b"abcd", binary=True)
    link.to_server_raw(b"efgh", binary=True)
    done = ArtifactDone(body=ArtifactDoneBody(transfer="t-1"))
    link.to_server_raw(aip.frame(done))
    server_events, _ = link.take()
    assert server_events == [
        ArtifactOffered(offer=announced),
        ArtifactChunk(data=b"abcd"),
        ArtifactChunk(data=b"efgh"),
        ArtifactFinished(done=done),
    ]
    assert not link.errors_from_server()
    link.to_server_raw(b"late", binary=True)  # the transfer is over
    assert codes(link.errors_from_server()) == [ErrorCode.BINARY_UNEXPECTED]


def test_overlapping_transfers_keep_their_chunks(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(aip.frame(offer("t-1")))
    link.to_server_raw(aip.frame(offer("t-2")))
    link.to_server_raw(aip.frame(ArtifactDone(body=ArtifactDoneBody(transfer="t-1"))))
    link.take()
    link.to_server_raw(b"chunk of t-2", binary=True)
    assert not link.errors_from_server()
    assert link.take()[0] == [ArtifactChunk(data=b"chunk of t-2")]
    link.to_server_raw(aip.frame(ArtifactDone(body=ArtifactDoneBody(transfer="t-2"))))
    link.to_server_raw(b"late", binary=True)
    assert codes(link.errors_from_server()) == [ErrorCode.BINARY_UNEXPECTED]


def test_the_session_and_the_artifact_layer_allow_the_same_open_transfers(
    tmp_path: Path,
) -> None:
    assert MAX_OPEN_TRANSFERS == 4
    assert ArtifactReceiver(tmp_path, max_size=1).max_concurrent == MAX_OPEN_TRANSFERS


def test_too_many_open_transfers_are_refused_not_fatal(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    for index in range(MAX_OPEN_TRANSFERS):
        link.to_server_raw(aip.frame(offer(f"t-{index}")))
    assert not link.errors_from_server()
    link.to_server_raw(aip.frame(offer("one-too-many")))
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.ARTIFACT
    assert link.server.state is SessionState.ACTIVE
    offered = aip.of(link.server_events, ArtifactOffered)
    assert [o.offer.body.transfer for o in offered][-1] == f"t-{MAX_OPEN_TRANSFERS - 1}"
    link.to_server_raw(aip.frame(ArtifactDone(body=ArtifactDoneBody(transfer="t-0"))))
    link.to_server_raw(aip.frame(offer("now-fits")))
    assert len(link.errors_from_server()) == 1


def test_artifact_chunks_reach_the_device_too(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_device_raw(aip.frame(offer()))
    link.to_device_raw(b"abcd", binary=True)
    assert [type(e) for e in link.take()[1]] == [ArtifactOffered, ArtifactChunk]


def test_oversized_artifact_chunk_is_refused(aip: Kit) -> None:
    link = aip.link("dev-a", config=ServerConfig(max_frame=2048), handshake=True)
    link.to_server_raw(aip.frame(offer()))
    link.take()
    link.to_server_raw(b"x" * 2049, binary=True)
    assert codes(link.errors_from_server()) == [ErrorCode.TOO_LARGE]
    assert link.take()[0] == []
    link.to_server_raw(b"x" * 2048, binary=True)
    assert link.take()[0] == [ArtifactChunk(data=b"x" * 2048)]


# ------------------------------------------------------------------ closing


def test_bye_from_the_device_closes(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.device.close("shutting down")
    link.pump()
    server_events, device_events = link.take()
    assert server_events == [SessionClosed(reason="shutting down", left=True)]  # it said bye
    assert device_events == [SessionClosed(reason="shutting down")]
    assert link.server.closed
    assert link.device.closed
    assert types(link.sent_by_server()) == ["challenge", "welcome"]  # no bye back
    assert link.server.close_reason == "shutting down"


def test_bye_from_the_orchestrator_closes(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.close("orchestrator stopping")
    link.pump()
    server_events, device_events = link.take()
    assert server_events == [SessionClosed(reason="orchestrator stopping")]
    assert device_events == [SessionClosed(reason="orchestrator stopping", left=True)]


def test_empty_bye_gets_a_default_reason(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw(aip.raw("bye", {}))
    assert link.take()[0] == [SessionClosed(reason="device said goodbye", left=True)]


def test_close_is_idempotent(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.close("one")
    link.server.close("two")
    link.server.connection_lost()
    frames = link.server.data_to_send()
    assert [json.loads(f)["type"] for f in frames] == ["bye"]
    assert link.server.events_received() == [SessionClosed(reason="one")]


def test_frames_after_close_are_ignored(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1"))
    link.pump()
    link.device.close("done")
    link.pump()
    link.take()
    seen = link.server.last_seen
    link.clock.advance(1.0)
    for item in (
        aip.frame(Heartbeat()),
        aip.frame(TaskResultMessage(body=aip.result("s1"))),
        "garbage",
        aip.frame(Hello(body=aip.hello_body())),
    ):
        link.server.receive_frame(item)
    link.server.receive_frame(b"bytes", binary=True)
    assert link.server.data_to_send() == []
    assert link.server.events_received() == []
    assert link.server.last_seen == seen
    link.device.receive_frame(aip.frame(TaskAssign(body=aip.assignment("s2"))))
    assert link.device.data_to_send() == []
    assert link.device.events_received() == []


def test_calls_after_close(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1"))
    link.server.close()
    link.server.data_to_send()
    with pytest.raises(ProtocolViolation):
        link.server.assign(aip.assignment("s2"))
    link.server.cancel(aip.ref("s1"), "x")  # forgets it, sends nothing
    link.server.ack_result(aip.result("s1"), "m")
    assert link.server.data_to_send() == []
    assert link.server.in_flight == {}
    assert not link.server.check_liveness()
