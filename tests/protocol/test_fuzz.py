"""Property tests: whatever a peer sends, parsing and the sessions refuse it cleanly.

(a) `parse_message` on arbitrary text, bytes and JSON, and on valid envelopes with random
    JSON values put at random places, returns a message model or raises
    `ProtocolViolation`, never anything else.
(b) Two authenticated connections (devices A and B) on one fake clock. Hypothesis drives
    random actions into connection A only: valid and mutated messages, garbage, binary
    frames, handshake messages out of order, messages about B's tasks, orchestrator calls
    and the passing of time. No exception escapes `receive_frame`, every frame a session
    sends is a valid message, A never reports a result for a task it did not have in
    flight, and B does not change at all.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from protocol.messages import (
    MAX_BATCH,
    MESSAGE_TYPES,
    ErrorCode,
    Heartbeat,
    Load,
    ProtocolViolation,
    TaskAccept,
    TaskProgressMessage,
    TaskResultMessage,
    encode_message,
    parse_frame,
    parse_message,
)
from protocol.session import (
    ResultReceived,
    SessionEvent,
    SessionState,
)

if TYPE_CHECKING:
    from conftest import Kit, Link

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

PARSE_CODES = {ErrorCode.MALFORMED, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.TOO_LARGE}

# JSON values, with the awkward ones a mutation should try: empty and over-long strings,
# numbers at and past the limits, nesting.
EDGE_STRINGS = ["", "x" * 65, "x" * 5000, "dev-a", "dev-b", "c1", "0" * 64, "hello", "task.result"]
EDGE_SCALARS = [0, -1, 1, 2, 2**63, -(2**70), 1e308, None, True, False]
# Empty containers are built fresh on every draw: a shared `[]` or `{}` would be mutated by
# one example (`mutate` adds keys) and leak into the next.
edge_values = (
    st.sampled_from(EDGE_STRINGS)
    | st.sampled_from(EDGE_SCALARS)
    | st.builds(list)
    | st.builds(dict)
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | edge_values
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
# Strings where ids and names go: empty, too long, odd characters, plausible ones.
id_like = st.sampled_from(EDGE_STRINGS) | st.text(max_size=70)
leaf_values = id_like | edge_values | st.integers(-3, 3) | json_values


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def mutate(draw: Callable[[st.SearchStrategy[Any]], Any], document: Any) -> Any:
    """One to three random edits: replace a value, delete a key, or add an unknown key."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(document)))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not where:
            if action == "replace":
                document = draw(json_values)
            continue
        parent = document
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        if action == "delete" and isinstance(parent, dict):
            del parent[last]
        elif action == "add" and isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=8))] = draw(json_values)
        else:
            parent[last] = draw(leaf_values)
    return document


def scramble(draw: Callable[[st.SearchStrategy[Any]], Any], document: Any) -> Any:
    """Replace each leaf of the envelope's body with probability 1/3 (many fields at once)."""
    document = copy.deepcopy(document)
    for where in paths(document):
        if len(where) < 2 or where[0] != "body" or draw(st.integers(0, 2)) != 0:
            continue
        parent = document
        for step in where[:-1]:
            parent = parent[step]
        if not isinstance(parent[where[-1]], dict | list):
            parent[where[-1]] = draw(leaf_values)
    return document


def parses_or_refuses(frame: str | bytes) -> None:
    outcome: BaseModel | ProtocolViolation
    try:
        outcome = parse_message(frame)
    except ProtocolViolation as violation:
        outcome = violation
    if isinstance(outcome, ProtocolViolation):
        assert outcome.code in PARSE_CODES
        assert outcome.message
    else:
        assert getattr(outcome, "type", None) in MESSAGE_TYPES


# ------------------------------------------------------------------ (a) parse_message


@FUZZ
@given(st.text())
def test_parse_arbitrary_text(text: str) -> None:
    parses_or_refuses(text)


@FUZZ
@given(st.binary())
def test_parse_arbitrary_bytes(data: bytes) -> None:
    parses_or_refuses(data)


@FUZZ
@given(json_values)
def test_parse_arbitrary_json(value: Any) -> None:
    parses_or_refuses(json.dumps(value))


@FUZZ
@given(kind=st.sampled_from(MESSAGE_TYPES), data=st.data())
def test_parse_mutated_envelopes(aip: Kit, kind: str, data: st.DataObject) -> None:
    document = json.loads(encode_message(aip.sample_messages()[kind]))
    parses_or_refuses(json.dumps(mutate(data.draw, document)))


@FUZZ
@given(kind=st.sampled_from(MESSAGE_TYPES), data=st.data())
def test_parse_scrambled_envelopes(aip: Kit, kind: str, data: st.DataObject) -> None:
    document = json.loads(encode_message(aip.sample_messages()[kind]))
    parses_or_refuses(json.dumps(scramble(data.draw, document)))


@FUZZ
@given(kind=st.sampled_from(MESSAGE_TYPES), cut=st.integers(0, 2000))
def test_parse_truncated_envelopes(aip: Kit, kind: str, cut: int) -> None:
    frame = encode_message(aip.sample_messages()[kind])
    parses_or_refuses(frame[:cut])
    parses_or_refuses(frame.encode()[:cut])


def frame_parses_or_refuses(frame: str | bytes) -> None:
    """`parse_frame` returns messages and per-envelope refusals, or refuses the frame."""
    outcomes: list[Any]
    try:
        outcomes = parse_frame(frame)
    except ProtocolViolation as violation:
        outcomes = [violation]
    assert 1 <= len(outcomes) <= MAX_BATCH
    for outcome in outcomes:
        if isinstance(outcome, ProtocolViolation):
            assert outcome.code in PARSE_CODES
            assert outcome.message
        else:
            assert outcome.type in MESSAGE_TYPES


@FUZZ
@given(st.lists(json_values, max_size=MAX_BATCH + 2))
def test_parse_arbitrary_batches(values: list[Any]) -> None:
    frame_parses_or_refuses(json.dumps(values))


@FUZZ
@given(kinds=st.lists(st.sampled_from(MESSAGE_TYPES), min_size=1, max_size=6), data=st.data())
def test_parse_batches_of_mutated_envelopes(
    aip: Kit, kinds: list[str], data: st.DataObject
) -> None:
    documents = []
    for kind in kinds:
        document = json.loads(encode_message(aip.sample_messages()[kind]))
        documents.append(mutate(data.draw, document) if data.draw(st.booleans()) else document)
    frame = json.dumps(documents)
    frame_parses_or_refuses(frame)
    frame_parses_or_refuses(frame[: data.draw(st.integers(0, len(frame)))])


# ------------------------------------------------------------------ (b) sessions


@dataclass
class World:
    """Devices A and B, both authenticated, each with tasks in flight; only A is fuzzed."""

    aip: Kit
    a: Link
    b: Link
    a_tasks: list[str]
    b_tasks: list[str]
    handshake_frames: list[str]  # hello and proof frames of both handshakes
    server_frames: list[str]  # frames only an orchestrator sends (challenge, welcome, ...)
    results: list[ResultReceived] = field(default_factory=list)

    @classmethod
    def build(cls, aip: Kit) -> World:
        clock = aip.clock()
        a = aip.link("dev-a", clock=clock, max_tasks=8, handshake=True)
        b = aip.link("dev-b", clock=clock, max_tasks=8, handshake=True)
        for link, name, stars in ((a, "dev-a", ["a1", "a2"]), (b, "dev-b", ["b1", "b2"])):
            for star in stars:
                link.server.assign(aip.assignment(star, device=name))
            link.pump()
            link.take()
        handshake = [f for f in a.to_server + b.to_server if isinstance(f, str)]
        return cls(
            aip=aip,
            a=a,
            b=b,
            a_tasks=["a1", "a2"],
            b_tasks=["b1", "b2"],
            handshake_frames=handshake,
            server_frames=[f for f in a.to_device if isinstance(f, str)],
        )

    # -- delivery into A, watching every frame's events

    def deliver(self, item: str | bytes, *, binary: bool = False) -> None:
        server = self.a.server
        in_flight = set(server.in_flight)
        server.receive_frame(item, binary=binary)
        for event in server.events_received():
            self.check_event(event, in_flight)
        self.exchange()

    def check_event(self, event: SessionEvent, in_flight: set[tuple[str, str, int]]) -> None:
        if isinstance(event, ResultReceived):
            key = self.aip.ref(
                event.result.star_id,
                attempt=event.result.attempt,
                constellation=event.result.constellation_id,
            ).key
            assert key in in_flight, f"A reported a result for {key}, not in flight on A"
            assert event.result.star_id not in self.b_tasks
            self.results.append(event)

    def exchange(self) -> None:
        """Let A's orchestrator side and A's own device talk until both are quiet."""
        server, device = self.a.server, self.a.device
        for _ in range(20):
            outgoing = server.data_to_send()
            for item in outgoing:
                assert_valid_frame(item)
                device.receive_frame(item, binary=isinstance(item, bytes))
            device.events_received()
            replies = device.data_to_send()
            for item in replies:
                assert_valid_frame(item)
                in_flight = set(server.in_flight)
                server.receive_frame(item, binary=isinstance(item, bytes))
                for event in server.events_received():
                    self.check_event(event, in_flight)
            if not outgoing and not replies:
                return
        raise AssertionError("A's sessions kept talking to each other")


def assert_valid_frame(item: str | bytes) -> None:
    """Every text frame a session sends is a valid message (it may be over max_frame)."""
    if isinstance(item, str):
        for outcome in parse_frame(item, max_frame=len(item.encode()) + 1):
            assert not isinstance(outcome, ProtocolViolation), outcome.message


def snapshot(link: Link) -> tuple[Any, ...]:
    server, device = link.server, link.device
    return (
        server.state,
        server.device,
        server.session_id,
        dict(server.in_flight),
        server.last_seen,
        server.close_reason,
        device.state,
        device.session_id,
        device.last_seen,
        tuple(server.data_to_send()),
        tuple(server.events_received()),
        tuple(device.data_to_send()),
        tuple(device.events_received()),
    )


def task_message(world: World, kind: str, star: str, attempt: int) -> str:
    aip = world.aip
    if kind == "task.accept":
        body = aip.ref(star, attempt=attempt).model_dump()
        return encode_message(TaskAccept(body=body))  # type: ignore[arg-type]
    if kind == "task.progress":
        return encode_message(TaskProgressMessage(body=aip.progress(star, attempt=attempt)))
    return encode_message(TaskResultMessage(body=aip.result(star, attempt=attempt)))


# Mostly task messages (where fencing lives); fatal ones (handshake) are rarer.
FRAME_KINDS = [
    *["own-task"] * 3,
    *["other-task"] * 2,
    *["sample", "handshake", "server-only", "garbage", "binary"],
]


@st.composite
def frames_for_a(draw: st.DrawFn, world: World) -> tuple[str | bytes, bool]:
    """One frame for A's orchestrator side, as a device (honest or not) might send it."""
    kind = draw(st.sampled_from(FRAME_KINDS))
    frame: str
    if kind == "binary":
        return draw(st.binary(max_size=64)), True
    if kind == "garbage":
        return draw(st.text(max_size=64) | st.sampled_from(["{}", "[]", "null", "[" * 3000])), False
    if kind in ("own-task", "other-task"):
        stars = world.a_tasks if kind == "own-task" else world.b_tasks
        message = draw(st.sampled_from(["task.accept", "task.progress", "task.result"]))
        star = draw(st.sampled_from([*stars, "ghost"]))
        frame = task_message(world, message, star, draw(st.sampled_from([1, 1, 2])))
    elif kind == "sample":
        frame = encode_message(world.aip.sample_messages()[draw(st.sampled_from(MESSAGE_TYPES))])
    elif kind == "handshake":
        frame = draw(st.sampled_from(world.handshake_frames))
    else:
        frame = draw(st.sampled_from(world.server_frames))
    change = draw(st.sampled_from(["none", "mutate", "scramble"]))
    if change == "mutate":
        frame = json.dumps(mutate(draw, json.loads(frame)))
    elif change == "scramble":
        frame = json.dumps(scramble(draw, json.loads(frame)))
    return frame, False


@st.composite
def actions(draw: st.DrawFn, world: World) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(
            st.sampled_from(
                ["frame", "frame", "frame", "frame", "assign", "cancel", "ack", "beat", "tick"]
            )
        )
        if kind == "frame":
            steps.append(("frame", draw(frames_for_a(world))))
        elif kind == "assign":
            steps.append(("assign", draw(st.sampled_from(["a1", "a2", "a3", "a4", "a5"]))))
        elif kind == "cancel":
            steps.append(("cancel", draw(st.sampled_from(["a1", "a2", "a3", "b1"]))))
        elif kind == "tick":
            steps.append(("tick", draw(st.sampled_from([0.001, 1.0, 5.0, 15.0, 16.0]))))
        else:
            steps.append((kind, None))
    return steps


def run(world: World, steps: list[tuple[str, Any]]) -> None:
    aip, server = world.aip, world.a.server
    for kind, arg in steps:
        if kind == "frame":
            item, binary = arg
            world.deliver(item, binary=binary)
        elif kind == "assign":
            refused: ProtocolViolation | None = None
            try:
                server.assign(aip.assignment(arg, device="dev-a"))
            except ProtocolViolation as violation:
                refused = violation
            if refused is not None:
                assert refused.code in (ErrorCode.UNEXPECTED, ErrorCode.TOO_MANY_TASKS)
                assert server.closed or len(server.in_flight) >= server.max_in_flight
            world.exchange()
        elif kind == "cancel":
            server.cancel(aip.ref(arg), "fuzz")
            assert aip.ref(arg).key not in server.in_flight
            world.exchange()
        elif kind == "ack":
            for received in world.results:
                server.ack_result(received.result, received.message_id)
            world.results.clear()
            world.exchange()
        elif kind == "beat":
            world.a.device.send_heartbeat(Load(running=len(server.in_flight)))
            world.exchange()
        else:
            world.a.clock.advance(arg)
            alive = server.check_liveness()
            assert alive is not server.closed
            world.exchange()
        assert len(server.in_flight) <= 8 or server.closed


@FUZZ
@given(data=st.data())
def test_fuzzing_one_session_never_escapes_or_leaks(aip: Kit, data: st.DataObject) -> None:
    world = World.build(aip)
    before = snapshot(world.b)
    assert world.b.server.state is SessionState.ACTIVE
    steps = data.draw(actions(world), label="steps")
    run(world, steps)
    assert snapshot(world.b) == before
    assert world.b.server.state is SessionState.ACTIVE
    assert set(world.b.server.in_flight) == {aip.ref("b1").key, aip.ref("b2").key}


@st.composite
def typed_orchestrator_frames(draw: st.DrawFn) -> str:
    """Orchestrator messages whose fields have the right JSON type but any value."""
    text = st.text(max_size=130)
    kind = draw(st.sampled_from(["challenge", "task.assign", "task.cancel", "ack", "welcome"]))
    if kind == "challenge":
        body: dict[str, Any] = {
            "nonce": draw(st.text(min_size=32, max_size=130) | st.just("ab" * 32)),
            "salt": draw(st.text(min_size=16, max_size=130) | st.just("cd" * 16)),
            "version": draw(st.integers(-1, 3)),
        }
    elif kind == "welcome":
        body = {
            "session": draw(text),
            "version": draw(st.integers(-1, 3)),
            "heartbeat_interval": draw(st.floats(-1, 1e9)),
            "heartbeat_misses": draw(st.integers(-1, 10)),
            "max_frame": draw(st.integers(0, 2**40)),
            "max_in_flight": draw(st.integers(-1, 100)),
        }
    else:
        body = {
            "constellation_id": draw(id_like),
            "star_id": draw(id_like),
            "attempt": draw(st.integers(-1, 3)),
        }
        if kind == "task.assign":
            body.update(device=draw(id_like), tool=draw(id_like), args=draw(json_values))
        elif kind == "ack":
            body = {"ref": draw(text), "task": body}
    return json.dumps({"v": 1, "type": kind, "id": draw(id_like), "ts": 0.0, "body": body})


@FUZZ
@given(data=st.data())
def test_fuzzing_the_device_side_never_escapes(aip: Kit, data: st.DataObject) -> None:
    """The device gets the same treatment: any frame from a (hostile) orchestrator."""
    world = World.build(aip)
    stage = data.draw(st.sampled_from(["await_challenge", "await_welcome", "active"]))
    device = world.a.device
    if stage != "active":
        device = aip.device(world.a.clock, "dev-a")
        device.start()
        if stage == "await_welcome":
            device.receive_frame(world.a.to_device[0])  # the challenge
        device.data_to_send()
        assert device.state.value == stage
    candidates = [f for f in world.a.to_device + world.a.to_server if isinstance(f, str)]
    candidates += [encode_message(m) for m in aip.sample_messages().values()]
    candidates.append(encode_message(Heartbeat()))
    for _ in range(data.draw(st.integers(1, 20), label="frames")):
        source = data.draw(st.sampled_from(["binary", "typed", "known", "known"]), label="source")
        if source == "binary":
            device.receive_frame(data.draw(st.binary(max_size=32)), binary=True)
        elif source == "typed":
            device.receive_frame(data.draw(typed_orchestrator_frames(), label="typed"))
        else:
            frame = data.draw(st.sampled_from(candidates), label="frame")
            change = data.draw(st.sampled_from(["none", "mutate", "scramble"]), label="change")
            if change == "mutate":
                frame = json.dumps(mutate(data.draw, json.loads(frame)))
            elif change == "scramble":
                frame = json.dumps(scramble(data.draw, json.loads(frame)))
            device.receive_frame(frame)
        for item in device.data_to_send():
            assert_valid_frame(item)
        device.events_received()
