"""docs/protocol.md keeps up with the code: every message type, error code, body field,
state and default is documented, and the worked example is a real, verifiable exchange."""

from __future__ import annotations

import json
import re
import types
import typing
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

import protocol.session
from protocol.auth import KDF_ITERATIONS, DeviceKey, derive_key, proof_mac
from protocol.messages import (
    DEFAULT_MAX_FRAME,
    MAX_OPEN_TRANSFERS,
    MESSAGE_TYPES,
    Ack,
    Challenge,
    ErrorCode,
    Hello,
    Proof,
    ProtocolViolation,
    TaskAssign,
    TaskResultMessage,
    Welcome,
    parse_message,
)
from protocol.session import (
    DeviceAuthenticated,
    HeartbeatReceived,
    ProgressReceived,
    ResultReceived,
    ServerConfig,
    ServerSession,
    SessionClosed,
    SessionState,
    TaskAccepted,
)

if TYPE_CHECKING:
    from conftest import Kit

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
HEADING = re.compile(r"^(#{1,6}) (.+)$", re.MULTILINE)
CODE = re.compile(r"`([^`\n]+)`")


@cache
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def code_tokens(text: str) -> set[str]:
    return set(CODE.findall(text))


def section(title: str) -> str:
    """The text under the heading whose title is `title`, up to the next heading as high."""
    matches = list(HEADING.finditer(doc()))
    for index, match in enumerate(matches):
        if match.group(2).strip() == title:
            level = len(match.group(1))
            end = len(doc())
            for later in matches[index + 1 :]:
                if len(later.group(1)) <= level:
                    end = later.start()
                    break
            return doc()[match.end() : end]
    raise AssertionError(f"docs/protocol.md has no heading {title!r}")


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation refers to (through lists, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for argument in typing.get_args(annotation):
            found += models_in(argument)
    return found


def body_fields(model: type[BaseModel], seen: frozenset[type] = frozenset()) -> set[str]:
    """Every field name of a body model, nested models included."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for nested in models_in(info.annotation):
            if nested not in seen:
                names |= body_fields(nested, seen | {model})
    return names


def documented(name: str, tokens: set[str]) -> bool:
    """`name` appears as a code token on its own or as the last part of a dotted path."""
    return any(token == name or re.search(rf"[.\]]{re.escape(name)}$", token) for token in tokens)


def json_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)\n```", doc(), re.DOTALL)


# ------------------------------------------------------------------ coverage


def test_every_message_type_is_documented() -> None:
    tokens = code_tokens(doc())
    missing = [kind for kind in MESSAGE_TYPES if kind not in tokens]
    assert not missing, f"message types not in docs/protocol.md: {missing}"


@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_every_message_type_has_its_own_section(kind: str) -> None:
    assert section(f"`{kind}`").strip()


def test_every_error_code_is_documented() -> None:
    tokens = code_tokens(doc())
    missing = [code.value for code in ErrorCode if code.value not in tokens]
    assert not missing, f"error codes not in docs/protocol.md: {missing}"


def test_every_error_code_has_a_row_in_the_error_table() -> None:
    rows = [line for line in section("Errors").splitlines() if line.startswith("| `")]
    described = {CODE.match(row[2:]).group(1) for row in rows}  # type: ignore[union-attr]
    assert described == {code.value for code in ErrorCode}


@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_every_body_field_is_documented_in_its_section(aip: Kit, kind: str) -> None:
    body = aip.MESSAGE_MODELS[kind].model_fields["body"].annotation
    (model,) = models_in(body)
    tokens = code_tokens(section(f"`{kind}`"))
    missing = sorted(name for name in body_fields(model) if not documented(name, tokens))
    assert not missing, f"fields of {kind} not in its section of docs/protocol.md: {missing}"


def test_envelope_fields_are_documented(aip: Kit) -> None:
    envelope = set(aip.MESSAGE_MODELS["hello"].model_fields)
    assert envelope == {"v", "type", "id", "ts", "body"}
    assert envelope <= code_tokens(section("Envelope"))


def test_every_session_state_is_documented() -> None:
    tokens = code_tokens(section("Session states"))
    assert {state.value for state in SessionState} <= tokens


def test_transition_tables_cover_both_sides() -> None:
    server = code_tokens(section("Orchestrator side"))
    device = code_tokens(section("Device side"))
    assert {"await_hello", "await_proof", "active", "closed"} <= server
    assert {"await_challenge", "await_welcome", "active", "closed"} <= device


def test_transport_and_handshake_constants_are_documented() -> None:
    assert "`ws://HOST:PORT/aip/v1`" in doc()
    assert "`wss://HOST:PORT/aip/v1`" in doc()
    handshake = section("Handshake")
    assert f"iterations = {KDF_ITERATIONS}" in handshake
    assert "`aip{version}|{device}|{nonce}`" in handshake
    assert "PBKDF2-HMAC-SHA256" in handshake
    assert "32 bytes" in handshake


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@pytest.mark.parametrize(
    "name",
    ["heartbeat_interval", "heartbeat_misses", "max_frame", "max_in_flight", "rate", "burst"],
)
def test_limit_defaults_are_documented(name: str) -> None:
    value = getattr(ServerConfig(), name)
    limits = section("Limits")
    assert f"`{name}`" in limits
    assert re.search(rf"(?<![\d.]){re.escape(number(value))}(?![\d])", limits), (name, value)


def test_default_max_frame_is_the_documented_one() -> None:
    assert ServerConfig().max_frame == DEFAULT_MAX_FRAME == 1_048_576


# ------------------------------------------------------------------ the worked example


def example() -> list[Any]:
    messages = [parse_message(block) for block in json_blocks()]
    assert messages, "the worked example has no ```json blocks"
    return messages


def test_every_json_block_is_a_valid_message() -> None:
    for block in json_blocks():
        assert "\n" not in block.strip(), "frames are shown as sent: one line of JSON"
        parse_message(block)


def test_worked_example_is_a_full_round_trip() -> None:
    kinds = [message.type for message in example()]
    assert kinds == [
        "hello",
        "challenge",
        "proof",
        "welcome",
        "task.assign",
        "task.accept",
        "task.progress",
        "heartbeat",
        "task.result",
        "ack",
        "bye",
    ]


def test_worked_example_proof_verifies() -> None:
    (token,) = set(re.findall(r"`(orr1_[A-Za-z0-9_-]+)`", section("Worked example")))
    challenge = next(m for m in example() if isinstance(m, Challenge))
    proof = next(m for m in example() if isinstance(m, Proof))
    key = derive_key(token, challenge.body.salt)
    assert key.hex() in section("Worked example")
    expected = proof_mac(key, device=proof.body.device, nonce=challenge.body.nonce, version=1)
    assert proof.body.mac == expected
    assert f"aip1|{proof.body.device}|{challenge.body.nonce}" in section("Worked example")


def test_worked_example_plays_against_the_real_orchestrator_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Feed the example's device frames to a `ServerSession` that draws the example's nonce."""
    messages = example()
    frames = json_blocks()
    challenge = next(m for m in messages if isinstance(m, Challenge))
    token = re.findall(r"`(orr1_[A-Za-z0-9_-]+)`", section("Worked example"))[0]
    key = DeviceKey(
        device="laptop",
        salt=challenge.body.salt,
        key=derive_key(token, challenge.body.salt).hex(),
    )
    monkeypatch.setattr(protocol.session, "new_nonce", lambda: challenge.body.nonce)
    server = ServerSession(keys={"laptop": key}.get, now=lambda: 0.0)
    by_kind = {m.type: (m, f) for m, f in zip(messages, frames, strict=True)}

    server.receive_frame(by_kind["hello"][1])
    (sent,) = [parse_message(f) for f in server.data_to_send()]
    assert isinstance(sent, Challenge)
    assert sent.body == challenge.body

    server.receive_frame(by_kind["proof"][1])
    assert server.data_to_send() == []
    assert [type(e) for e in server.events_received()] == [DeviceAuthenticated]
    server.welcome()
    (welcome,) = [parse_message(f) for f in server.data_to_send()]
    assert isinstance(welcome, Welcome)
    documented_welcome = by_kind["welcome"][0].body
    assert welcome.body.model_dump(exclude={"session"}) == documented_welcome.model_dump(
        exclude={"session"}
    )

    assign = by_kind["task.assign"][0]
    assert isinstance(assign, TaskAssign)
    server.assign(assign.body)
    server.data_to_send()
    for kind in ("task.accept", "task.progress", "heartbeat", "task.result"):
        server.receive_frame(by_kind[kind][1])
    assert server.data_to_send() == []  # nothing refused
    events = server.events_received()
    assert [type(e) for e in events] == [
        TaskAccepted,
        ProgressReceived,
        HeartbeatReceived,
        ResultReceived,
    ]
    received = events[-1]
    assert isinstance(received, ResultReceived)
    server.ack_result(received.result, received.message_id)
    (ack,) = [parse_message(f) for f in server.data_to_send()]
    assert isinstance(ack, Ack)
    assert ack.body == by_kind["ack"][0].body

    server.receive_frame(by_kind["bye"][1])
    assert server.events_received() == [SessionClosed(reason="device stopping", left=True)]


def test_example_frames_are_compact_json_as_the_encoder_writes_it() -> None:
    for block in json_blocks():
        assert block == json.dumps(json.loads(block), separators=(",", ":"), ensure_ascii=False)


def test_worked_example_result_carries_what_shell_run_returns() -> None:
    from devices.tools.process import ProcessResult

    (result,) = [m for m in example() if isinstance(m, TaskResultMessage)]
    assert result.body.output.keys() == ProcessResult.model_fields.keys()
    ProcessResult.model_validate(result.body.output)
    assert "`returncode`" in section("`task.result`")
    assert "exit_code" not in doc()


def test_platforms_are_the_ones_devices_send() -> None:
    from devices.local import platform_name

    hello = section("`hello`")
    for name in ("darwin", "linux", "win32"):
        assert f"`{platform_name(name)}`" in hello
    assert "read `darwin` (Python's `sys.platform` there) as `macos`" in hello


def test_the_schema_dialect_and_the_args_check_are_specified() -> None:
    assert "Draft 2020-12" in section("`hello`")
    assign = section("`task.assign`")
    assert "MUST validate `args`" in assign
    assert "JSON Schema Draft 2020-12 when it names none" in assign


def test_the_open_transfer_limit_is_one_documented_number(tmp_path: Path) -> None:
    from protocol.artifacts import ArtifactReceiver

    assert ArtifactReceiver(tmp_path, max_size=1).max_concurrent == MAX_OPEN_TRANSFERS
    assert f"more than **{MAX_OPEN_TRANSFERS}**" in section("Artifacts")
    assert f"| open artifact transfers | {MAX_OPEN_TRANSFERS} per peer" in section("Limits")
    for table in ("Orchestrator side", "Device side"):
        assert f"while {MAX_OPEN_TRANSFERS} transfers of the peer are open" in section(table)
    assert "reference: 4" not in doc()


def test_batch_refusals_are_specified_as_the_session_sends_them(aip: Kit) -> None:
    batches = section("Batches")
    assert "its text MUST start with `batch[i]: `" in batches
    link = aip.link("dev-a", handshake=True)
    link.to_server_raw("[" + aip.frame(Hello(id="again", body=aip.hello_body("dev-a"))) + "]")
    (error,) = link.errors_from_server()
    assert (error.ref, error.message.split(":")[0]) == ("again", "batch[0]")


def test_a_goodbye_is_specified_as_leaving_not_a_loss() -> None:
    bye = section("`bye`")
    assert "MUST say `bye`" in bye
    assert "MUST then show the device as offline, not lost" in bye
    assert "no grace period runs" in bye


def test_what_the_envelope_rules_say_the_reference_parser_sees() -> None:
    """The spec says which checks need a parser of one's own; the reference's is as lax,
    and as strict, as the text says."""
    envelope = section("Envelope")
    assert "**What a receiver can check depends on its JSON parser.**" in envelope
    duplicate = '{"v":1,"type":"heartbeat","id":"a","id":"b","ts":0,"body":{}}'
    assert parse_message(duplicate).id == "b"  # "takes the last of duplicate keys"
    hello = '{"v":1,"type":"hello","id":"h","ts":0,"body":{"device":"x","versions":[1],%s}}'
    assert parse_message(hello % '"max_tasks":2.0').body.max_tasks == 2  # "accepts 2.0"
    with pytest.raises(ProtocolViolation) as refused:
        parse_message('{"v":1.0,"type":"heartbeat","id":"a","ts":0,"body":{}}')
    assert refused.value.code is ErrorCode.UNSUPPORTED_VERSION  # "refuses v 1.0"


def test_cancel_and_the_device_field_are_specified() -> None:
    cancel = section("`task.cancel`")
    assert "MUST NOT send a `task.result` for it" in cancel
    assert "A result that crosses the cancel." in cancel
    assert "A device MUST check that `device` is its own name." in section("`task.assign`")


def test_a_stored_result_sent_again_is_acked_and_never_refused() -> None:
    """Issue 21, point 10: the worked example and the delivery rules say the same thing
    (the reference dispatcher acks a re-sent stored result, as
    tests/agents/test_protocol_doc.py shows by replaying the example's frames)."""
    delivery = " ".join(section("Tasks, acks and at-least-once delivery").split())
    assert "MUST be acked again and MUST NOT be acted on again" in delivery
    assert "it is never refused with `not_your_task`" in delivery
    assert "SHOULD list in `welcome.known_unacked`" in delivery
    assert "or already stored its result" not in delivery  # refusal is for fenced attempts
    example = " ".join(section("Worked example").split())
    assert "acks it again without acting on it" in example
    assert "refuses" not in example
