"""Batch frames: several envelopes in one text frame (docs/protocol.md, "Batches")."""

from __future__ import annotations

import json

import pytest

from protocol.messages import (
    MAX_BATCH,
    ErrorCode,
    Hello,
    ProtocolViolation,
    TaskAccept,
    TaskAssign,
    TaskResultMessage,
    encode_batch,
    parse_frame,
    parse_message,
)
from protocol.session import (
    AssignmentReceived,
    ResultReceived,
    ServerConfig,
    SessionState,
    TaskAccepted,
)
from tests.protocol.conftest import Kit


def envelope(aip: Kit, star: str, message_id: str) -> str:
    return aip.frame(TaskResultMessage(id=message_id, ts=1.0, body=aip.result(star)))


def test_a_batch_parses_to_its_envelopes_in_order(aip: Kit) -> None:
    frames = [envelope(aip, f"s{i}", f"m{i}") for i in range(3)]
    parsed = parse_frame(encode_batch(frames))
    assert [m.id for m in parsed if not isinstance(m, ProtocolViolation)] == ["m0", "m1", "m2"]
    assert parse_frame("  \n" + encode_batch(frames))[2] == parsed[2]  # leading whitespace


def test_a_single_envelope_is_not_wrapped() -> None:
    assert encode_batch(['{"a":1}']) == '{"a":1}'
    assert encode_batch(['{"a":1}', '{"b":2}']) == '[{"a":1},{"b":2}]'


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("[]", "batch of 0 envelopes"),
        ("[" + ",".join(["{}"] * (MAX_BATCH + 1)) + "]", f"batch of {MAX_BATCH + 1} envelopes"),
        ('[{"v": 1}, 3]', "batch[1] is not a JSON object"),
        ("[1, 2", "not JSON"),
    ],
)
def test_a_batch_refused_as_a_whole_names_why(frame: str, needle: str) -> None:
    with pytest.raises(ProtocolViolation) as refused:
        parse_frame(frame)
    assert refused.value.code is ErrorCode.MALFORMED
    assert needle in refused.value.message


def test_a_bad_element_is_refused_alone_and_names_its_place(aip: Kit) -> None:
    good = envelope(aip, "s1", "m-good")
    bad = json.dumps({"v": 1, "type": "task.result", "id": "m-bad", "body": {"status": "?"}})
    outcomes = parse_frame(f"[{good},{bad},{good}]")
    assert [type(o) for o in outcomes] == [TaskResultMessage, ProtocolViolation, TaskResultMessage]
    violation = outcomes[1]
    assert isinstance(violation, ProtocolViolation)
    assert violation.ref == "m-bad"
    assert violation.message.startswith("batch[1]: task.result: ")


def test_parse_message_still_takes_exactly_one_envelope(aip: Kit) -> None:
    with pytest.raises(ProtocolViolation):
        parse_message(encode_batch([envelope(aip, "s1", "a"), envelope(aip, "s2", "b")]))


def test_the_session_processes_a_batch_as_separate_frames(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    for star in ("s1", "s2"):
        link.server.assign(aip.assignment(star))
    link.pump()
    link.take()
    results = [envelope(aip, "s1", "r1"), envelope(aip, "nobody", "r2"), envelope(aip, "s2", "r3")]
    link.to_server_raw(encode_batch(results))
    server_events, _ = link.take()
    assert [e.message_id for e in aip.of(server_events, ResultReceived)] == ["r1", "r3"]
    (error,) = link.errors_from_server()
    assert (error.code, error.ref) == (ErrorCode.NOT_YOUR_TASK, "r2")
    assert error.message.startswith("batch[1]: task c1/nobody ")  # like a parse error's
    assert link.server.state is SessionState.ACTIVE


@pytest.mark.parametrize("batch", [True, False])
def test_every_refusal_of_an_element_names_its_place_in_the_batch(aip: Kit, batch: bool) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1"))
    link.pump()
    link.take()
    bad_ids = TaskResultMessage.model_construct(
        id="r-ids", ts=1.0, body=aip.result("s1").model_copy(update={"star_id": ""})
    )
    elements = [
        envelope(aip, "s1", "r-ok"),
        json.dumps({"v": 1, "type": "task.result", "id": "r-parse", "body": {}}),
        envelope(aip, "nobody", "r-fenced"),
        aip.frame(Hello(id="r-hello", body=aip.hello_body("dev-a"))),
        bad_ids.model_dump_json(),
    ]
    if batch:
        link.to_server_raw(encode_batch(elements))
    else:
        for element in elements:
            link.to_server_raw(element)
    errors = link.errors_from_server()
    assert [(e.code, e.ref) for e in errors] == [
        (ErrorCode.MALFORMED, "r-parse"),
        (ErrorCode.NOT_YOUR_TASK, "r-fenced"),
        (ErrorCode.UNEXPECTED, "r-hello"),
        (ErrorCode.MALFORMED, "r-ids"),
    ]
    prefixes = [e.message.split(" ")[0] for e in errors]
    if batch:
        assert prefixes == ["batch[1]:", "batch[2]:", "batch[3]:", "batch[4]:"]
    else:
        assert not any(e.message.startswith("batch[") for e in errors)


def test_a_rate_limited_element_names_its_place(aip: Kit) -> None:
    link = aip.link("dev-a", config=ServerConfig(rate=1e-9, burst=4), handshake=True)
    heartbeat = json.dumps({"v": 1, "type": "heartbeat", "id": "hb", "body": {}})
    link.to_server_raw(encode_batch([heartbeat] * 3))  # hello and proof took two tokens
    (error,) = link.errors_from_server()
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.message == "batch[2]: too many frames; slow down (envelope dropped)"


def test_a_fatal_element_ends_the_batch(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1"))
    link.pump()
    link.take()
    old = json.dumps({"v": 2, "type": "heartbeat", "id": "m-v2", "body": {}})
    link.to_server_raw(f"[{old},{envelope(aip, 's1', 'r1')}]")
    assert link.server.closed
    assert aip.of(link.take()[0], ResultReceived) == []
    assert [e.code for e in link.errors_from_server()] == [ErrorCode.UNSUPPORTED_VERSION]


def test_the_rate_limit_counts_every_envelope_of_a_batch(aip: Kit) -> None:
    link = aip.link("dev-a", config=ServerConfig(rate=1e-9, burst=20), handshake=True)
    for star in ("s1", "s2", "s3"):
        link.server.assign(aip.assignment(star))
    link.pump()
    link.take()
    spent = 2 + 3  # hello, proof, and the batch of three accepts
    heartbeat = json.dumps({"v": 1, "type": "heartbeat", "id": "hb", "body": {}})
    link.to_server_raw(encode_batch([heartbeat] * (20 - spent - 1)))  # all but one token
    link.to_server_raw(encode_batch([envelope(aip, s, f"r-{s}") for s in ("s1", "s2", "s3")]))
    (received,) = aip.of(link.take()[0], ResultReceived)
    assert received.message_id == "r-s1"
    assert [e.code for e in link.errors_from_server()] == [ErrorCode.RATE_LIMITED] * 2


def test_messages_queued_together_travel_as_one_frame(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True)
    link.server.assign(aip.assignment("s1"))
    (assign_frame,) = link.server.data_to_send()
    link.device.receive_frame(assign_frame)
    (assigned,) = link.device.events_received()
    assert isinstance(assigned, AssignmentReceived)
    link.device.send_result(aip.result("s1"))
    (frame,) = link.device.data_to_send()  # the accept and the result
    assert [type(m) for m in parse_frame(frame)] == [TaskAccept, TaskResultMessage]
    link.server.receive_frame(frame)
    events = link.server.events_received()
    assert [type(e) for e in events] == [TaskAccepted, ResultReceived]


def test_batches_respect_the_frame_limit_and_the_batch_size(aip: Kit) -> None:
    link = aip.link("dev-a", handshake=True, max_tasks=1024)
    link.server.config = ServerConfig(max_in_flight=1024)
    for index in range(MAX_BATCH + 5):
        link.server.assign(aip.assignment(f"s{index}"))
    frames = link.server.data_to_send()
    assert [len(parse_frame(f)) for f in frames] == [MAX_BATCH, 5]
    # A small frame limit splits by size instead; no frame goes over it.
    link.server.max_frame = 2_000
    for index in range(10):
        link.server.assign(aip.assignment(f"t{index}", args={"pad": "x" * 300}))
    frames = link.server.data_to_send()
    assert len(frames) > 1
    assert all(len(f.encode()) <= 2_000 for f in frames if isinstance(f, str))
    assert sum(len(parse_frame(f)) for f in frames) == 10
    assert all(isinstance(m, TaskAssign) for f in frames for m in parse_frame(f))
