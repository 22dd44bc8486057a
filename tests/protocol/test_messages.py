"""The AIP envelope and message models: round trips, and the refusals of `parse_message`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from protocol.messages import (
    DEFAULT_MAX_FRAME,
    MESSAGE_TYPES,
    ErrorCode,
    Heartbeat,
    ProtocolViolation,
    encode_message,
    parse_message,
)

if TYPE_CHECKING:
    from conftest import Kit


def refusal(frame: str | bytes, **kwargs: Any) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as caught:
        parse_message(frame, **kwargs)
    return caught.value


def envelope(type_: str, body: Any, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"v": 1, "type": type_, "id": "m-1", "ts": 1.0, "body": body}
    data.update(fields)
    return data


VALID_HELLO_BODY = {"device": "dev-a", "versions": [1]}


# ------------------------------------------------------------------ round trips


def test_samples_cover_every_message_type(aip: Kit) -> None:
    assert sorted(aip.sample_messages()) == sorted(MESSAGE_TYPES)
    assert sorted(aip.MESSAGE_MODELS) == sorted(MESSAGE_TYPES)


@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_every_message_type_round_trips(aip: Kit, kind: str) -> None:
    message = aip.sample_messages()[kind]
    frame = encode_message(message)
    parsed = parse_message(frame)
    assert type(parsed) is aip.MESSAGE_MODELS[kind]
    assert parsed == message
    assert json.loads(frame)["type"] == kind
    assert encode_message(parsed) == frame


@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_round_trip_from_bytes(aip: Kit, kind: str) -> None:
    message = aip.sample_messages()[kind]
    assert parse_message(encode_message(message).encode()) == message


@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_envelope_has_exactly_the_five_fields(aip: Kit, kind: str) -> None:
    data = json.loads(encode_message(aip.sample_messages()[kind]))
    assert set(data) == {"v", "type", "id", "ts", "body"}
    assert data["v"] == 1


def test_minimal_messages_take_their_defaults() -> None:
    heartbeat = parse_message('{"v": 1, "type": "heartbeat"}')
    assert isinstance(heartbeat, Heartbeat)
    assert heartbeat.body.load.running == 0
    assert heartbeat.ts == 0.0
    # The receiver fills a missing id: a fresh one each time, within the envelope's limit.
    again = parse_message('{"v": 1, "type": "heartbeat"}')
    assert 0 < len(heartbeat.id) <= 64
    assert heartbeat.id != again.id


def test_unicode_survives_the_round_trip(aip: Kit) -> None:
    message = aip.sample_messages()["task.progress"]
    message.body.message = "naïve ☃ 𝄞 — done"
    assert parse_message(encode_message(message)) == message


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "frame",
    ["", "not json", "{", '{"v": 1,}', "{'v': 1}", b"\xff\xfe\xfa", b'{"v": 1, "type": "\xc3"}'],
)
def test_not_json_is_malformed(frame: str | bytes) -> None:
    violation = refusal(frame)
    assert violation.code is ErrorCode.MALFORMED
    assert "not JSON" in violation.message


@pytest.mark.parametrize("frame", ["[]", '[{"v": 1}]', "1", '"hello"', "null", "true", "2.5"])
def test_json_that_is_not_an_object_is_malformed(frame: str) -> None:
    violation = refusal(frame)
    assert violation.code is ErrorCode.MALFORMED
    assert "not a JSON object" in violation.message


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    violation = refusal("[" * 100_000 + "]" * 100_000)
    assert violation.code is ErrorCode.MALFORMED


@pytest.mark.parametrize("kind", ["nope", "", "Hello", "task", "task.assign.x", None, 3, ["hello"]])
def test_unknown_type_is_malformed_and_named(kind: Any) -> None:
    violation = refusal(json.dumps(envelope(kind, {})))
    assert violation.code is ErrorCode.MALFORMED
    assert repr(kind) in violation.message
    assert violation.ref == "m-1"


@pytest.mark.parametrize("version", [0, 2, -1, 99, None, "1", 1.0, 1.5, True, [1], {"v": 1}])
def test_wrong_version_is_unsupported(version: Any) -> None:
    violation = refusal(json.dumps(envelope("hello", VALID_HELLO_BODY, v=version)))
    assert violation.code is ErrorCode.UNSUPPORTED_VERSION
    assert "[1]" in violation.message  # says which versions this peer speaks


def test_missing_version_is_unsupported() -> None:
    data = envelope("hello", VALID_HELLO_BODY)
    del data["v"]
    assert refusal(json.dumps(data)).code is ErrorCode.UNSUPPORTED_VERSION


def test_version_is_checked_before_the_type() -> None:
    violation = refusal(json.dumps(envelope("nope", {}, v=2)))
    assert violation.code is ErrorCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (envelope("hello", {"versions": [1]}), "body.device"),
        (envelope("hello", {"device": "dev-a"}), "body.versions"),
        ({"v": 1, "type": "hello", "id": "m-1"}, "body"),
        (
            envelope("task.result", {"constellation_id": "c", "star_id": "s", "attempt": 1}),
            "status",
        ),
        (envelope("ack", {}), "body.ref"),
        (envelope("error", {"message": "x"}), "body.code"),
        (
            envelope("proof", {"device": "dev-a", "nonce": "a" * 64}),
            "body.mac",
        ),
    ],
)
def test_missing_field_is_malformed_and_named(data: dict[str, Any], field: str) -> None:
    violation = refusal(json.dumps(data))
    assert violation.code is ErrorCode.MALFORMED
    assert field in violation.message
    assert "Field required" in violation.message
    assert violation.message.startswith(f"{data['type']}: ")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (envelope("hello", VALID_HELLO_BODY, extra=1), "extra"),
        (envelope("hello", {**VALID_HELLO_BODY, "surprise": True}), "body.surprise"),
        (envelope("hello", {**VALID_HELLO_BODY, "resources": {"tpu": 1}}), "body.resources.tpu"),
        (envelope("heartbeat", {"load": {"running": 1, "gpu": 3}}), "body.load.gpu"),
        (envelope("bye", {"reason": "x", "code": 1000}), "body.code"),
    ],
)
def test_extra_field_is_malformed_and_named(data: dict[str, Any], field: str) -> None:
    violation = refusal(json.dumps(data))
    assert violation.code is ErrorCode.MALFORMED
    assert f": {field}: " in violation.message
    assert "Extra inputs are not permitted" in violation.message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (envelope("hello", {"device": "bad name!", "versions": [1]}), "body.device"),
        (envelope("hello", {"device": "dev-a", "versions": []}), "body.versions"),
        (envelope("hello", {**VALID_HELLO_BODY, "max_tasks": 0}), "body.max_tasks"),
        (envelope("proof", {"device": "d", "nonce": "a" * 64, "mac": "A" * 64}), "body.mac"),
        (envelope("challenge", {"nonce": "short", "salt": "a" * 32, "version": 1}), "body.nonce"),
        (envelope("challenge", {"nonce": "a" * 64, "salt": "zz" * 16, "version": 1}), "body.salt"),
        (envelope("challenge", {"nonce": "a" * 64, "salt": "a" * 33, "version": 1}), "body.salt"),
        (envelope("error", {"code": "teapot", "message": "x"}), "body.code"),
        (envelope("task.assign", {"constellation_id": "c"}), "body.star_id"),
        (envelope("heartbeat", {"load": {"running": -1}}), "body.load.running"),
        (envelope("hello", VALID_HELLO_BODY, id=""), "id"),
    ],
)
def test_invalid_field_value_is_malformed_and_named(data: dict[str, Any], field: str) -> None:
    violation = refusal(json.dumps(data))
    assert violation.code is ErrorCode.MALFORMED
    assert f": {field}: " in violation.message


def test_refusal_carries_the_offending_message_id() -> None:
    assert refusal(json.dumps(envelope("ack", {}, id="abc"))).ref == "abc"
    assert refusal(json.dumps(envelope("ack", {}, id=17))).ref is None  # not a usable id


def test_parse_errors_are_never_fatal_by_themselves() -> None:
    """`parse_message` only classifies; the session decides whether to close."""
    for frame in ["x", "[]", json.dumps(envelope("nope", {})), json.dumps(envelope("ack", {}))]:
        assert refusal(frame).fatal is False


# ------------------------------------------------------------------ size limit


def oversized_heartbeat(size: int) -> str:
    """A valid heartbeat frame padded with spaces to exactly `size` characters."""
    frame = '{"v": 1, "type": "heartbeat", "id": "m-1", "body": {}}'
    return frame + " " * (size - len(frame))


def test_frame_over_the_limit_is_too_large() -> None:
    violation = refusal(oversized_heartbeat(DEFAULT_MAX_FRAME + 1))
    assert violation.code is ErrorCode.TOO_LARGE
    assert str(DEFAULT_MAX_FRAME) in violation.message


def test_frame_at_the_limit_is_accepted() -> None:
    assert isinstance(parse_message(oversized_heartbeat(DEFAULT_MAX_FRAME)), Heartbeat)


def test_limit_is_configurable() -> None:
    frame = oversized_heartbeat(2000)
    assert isinstance(parse_message(frame, max_frame=2000), Heartbeat)
    assert refusal(frame, max_frame=1999).code is ErrorCode.TOO_LARGE


def test_limit_counts_utf8_bytes_not_characters() -> None:
    """max_frame is in bytes on the wire; "é" is one character but two bytes."""
    frame = '{"v": 1, "type": "bye", "body": {"reason": "' + "é" * 900 + '"}}'
    assert len(frame) < 1024 < len(frame.encode())
    assert refusal(frame, max_frame=1024).code is ErrorCode.TOO_LARGE
    assert refusal(frame.encode(), max_frame=1024).code is ErrorCode.TOO_LARGE


def test_size_is_checked_before_parsing() -> None:
    assert refusal("x" * 2000, max_frame=1024).code is ErrorCode.TOO_LARGE
