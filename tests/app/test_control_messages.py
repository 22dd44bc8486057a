"""The control API's wire format: requests parse, bad ones name their field, replies
round-trip, and the public names are pinned."""

from __future__ import annotations

import json

import pytest

from app.control import messages
from app.control.messages import (
    REQUEST_TYPES,
    BadRequest,
    ErrorCode,
    ErrorReply,
    EventMessage,
    SubmitRequest,
    Submitted,
    dump,
    parse_request,
    parse_server_message,
)


def refusal(frame: str | dict[str, object]) -> ErrorReply:
    with pytest.raises(BadRequest) as caught:
        parse_request(frame if isinstance(frame, str) else json.dumps(frame))
    return caught.value.reply


def test_every_request_type_parses_with_its_id() -> None:
    samples: dict[str, dict[str, object]] = {
        "auth": {"token": "t"},
        "submit": {"plan": "name: x"},
        "propose": {"request": "tidy up"},
        "start": {"proposal": "p-1"},
        "discard": {"proposal": "p-1"},
        "subscribe": {"constellation": "c", "after_seq": 3},
        "unsubscribe": {"constellation": "c"},
        "cancel": {"constellation": "c"},
        "cancel_star": {"constellation": "c", "star": "s"},
        "retry": {"constellation": "c", "star": "s"},
        "pin": {"constellation": "c", "star": "s", "device": "d"},
        "enroll": {"name": "laptop"},
        "approve": {"request": "r", "approved": False, "reason": "no"},
        "approvals": {},
        "devices": {},
        "history": {"limit": 5},
        "constellation": {"constellation": "c"},
        "memory_search": {"text": "back up my photos", "limit": 3},
        "memory_show": {"request": "r-1"},
        "memory_forget": {"request": "r-1"},
    }
    assert set(samples) == set(REQUEST_TYPES)
    for kind, fields in samples.items():
        request = parse_request(json.dumps({"type": kind, "id": f"id-{kind}", **fields}))
        assert (request.type, request.id) == (kind, f"id-{kind}")


def test_submit_takes_a_plan_or_a_request_not_both() -> None:
    assert SubmitRequest(id="1", request="tidy up").request == "tidy up"
    both = refusal({"type": "submit", "id": "1", "plan": "p", "request": "r"})
    assert (both.field, both.id) == ("request", "1")
    assert "exactly one" in both.message


@pytest.mark.parametrize(
    ("frame", "field", "code"),
    [
        ({"type": "subscribe", "id": "1", "constellation": ""}, "constellation", "malformed"),
        ({"type": "approve", "id": "1", "request": "r"}, "approved", "malformed"),
        ({"type": "approve", "id": "1", "request": "r", "approved": "maybe"}, "approved",
         "malformed"),
        ({"type": "history", "id": "1", "limit": 0}, "limit", "malformed"),
        ({"type": "devices"}, "id", "malformed"),
        ({"type": "devices", "id": "1", "extra": True}, "extra", "malformed"),
        ({"type": "propose", "id": "1", "request": ""}, "request", "malformed"),
        ({"type": "start", "id": "1", "proposal": ""}, "proposal", "malformed"),
        ({"type": "discard", "id": "1", "proposal": "p" * 65}, "proposal", "malformed"),
        ({"type": "fly", "id": "1"}, "type", "unknown_command"),
        ({"id": "1"}, "type", "malformed"),
    ],
)  # fmt: skip
def test_a_bad_request_names_the_field(frame: dict[str, object], field: str, code: str) -> None:
    reply = refusal(frame)
    assert (reply.field, reply.code) == (field, ErrorCode(code))
    assert reply.message.startswith(f"{field}: ")
    assert reply.id == frame.get("id")


def test_frames_that_are_not_objects_are_malformed_without_an_id() -> None:
    assert refusal("{oops").message.startswith("not JSON")
    assert refusal("[]").id is None
    assert refusal('{"type": "devices", "id": 7}').field == "id"


def test_server_messages_round_trip() -> None:
    for message in (
        Submitted(id="1", constellation="c", name="n", stars=2, version=1),
        EventMessage(id="2", constellation="c", seq=9, event={"type": "star.ready"}),
        ErrorReply(id=None, code=ErrorCode.MALFORMED, message="m", field="f"),
        messages.Proposal(
            id="3",
            proposal="p-1",
            request="r",
            constellation="c",
            name="n",
            rationale="why",
            stars=[
                messages.ProposedStar(
                    id="s1", device="nas", tool="shell.run", what="df -h", after=["s0"]
                )
            ],
            plan={"stars": {}},
            expires_in=900.0,
        ),
        messages.Discarded(id="4", proposal="p-1", discarded=False),
    ):
        assert parse_server_message(dump(message)) == message


def test_memory_requests_check_their_fields() -> None:
    assert refusal({"type": "memory_search", "id": "1", "text": ""}).field == "text"
    assert refusal({"type": "memory_search", "id": "1", "text": "x", "limit": 0}).field == "limit"
    assert refusal({"type": "memory_show", "id": "1"}).field == "request"
    tree = messages.MemoryTree(
        id="7",
        request="r-1",
        text="t",
        status="succeeded",
        source="request",
        created_at=1.0,
        finished_at=2.0,
        constellation="c1",
        nodes=[
            messages.MemoryNodeInfo(
                id="c-c1", kind="constellation", parent="r-1", name="n", status="ok",
                created_at=1.0,
                revisions=[messages.MemoryRevisionInfo(revision=2, ts=1.5, kind="edited")],
            )
        ],
    )  # fmt: skip
    assert parse_server_message(dump(tree)) == tree


def test_the_public_names_are_pinned() -> None:
    assert "parse_request" in messages.__all__
    assert all(hasattr(messages, name) for name in messages.__all__)
    assert messages.CONTROL_PATH == "/control/v1"
