"""Artifact transfer: chunk framing, the sender, and the receiver's limits and verification.

Everything runs on real files in `tmp_path`: a sender reads a source file, its frames go
through `encode_chunk` / `decode_chunk` (and, in one test, through a real `ServerSession`),
and a receiver writes into a destination directory. Every refusal is an `ArtifactError`
naming the problem, and a refused or failed transfer leaves no file behind.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.artifacts import (
    DEFAULT_CHUNK_SIZE,
    MAX_HEADER_SIZE,
    MAX_INDEX,
    ArtifactError,
    ArtifactReceiver,
    ArtifactSender,
    decode_chunk,
    encode_chunk,
    frame_overhead,
    name_problem,
)
from protocol.messages import (
    DEFAULT_MAX_FRAME,
    ArtifactDone,
    ArtifactOffer,
    ArtifactOfferBody,
    ErrorCode,
    ProtocolViolation,
    encode_message,
)
from protocol.session import ArtifactChunk, ArtifactFinished, ArtifactOffered, ServerConfig

if TYPE_CHECKING:
    from tests.protocol.conftest import Kit

MB = 1024 * 1024
SMALL_CHUNK = 64 * 1024


# ------------------------------------------------------------------ helpers


def random_file(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "dest"


@pytest.fixture
def receiver(dest: Path) -> Iterator[ArtifactReceiver]:
    with ArtifactReceiver(dest, max_size=16 * MB) as rx:
        yield rx


def wire(frames: Iterator[bytes] | list[bytes]) -> list[bytes]:
    """Frames as they arrive: each one decoded and re-encoded (the round trip must be exact)."""
    arrived = []
    for frame in frames:
        transfer, index, payload = decode_chunk(frame)
        again = encode_chunk(transfer, index, payload)
        assert again == frame
        arrived.append(again)
    return arrived


def transfer_all(sender: ArtifactSender, receiver: ArtifactReceiver) -> Path:
    receiver.on_offer(sender.offer())
    for frame in sender.frames():
        receiver.on_chunk(frame)
    return receiver.on_done(sender.done())


def frames_of(sender: ArtifactSender) -> list[bytes]:
    return [encode_chunk(sender.transfer, i, chunk) for i, chunk in enumerate(sender.chunks())]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refused(receiver: ArtifactReceiver, frame: bytes, match: str) -> ArtifactError:
    with pytest.raises(ArtifactError, match=match) as info:
        receiver.on_chunk(frame)
    return info.value


# ------------------------------------------------------------------ round trips


def test_three_megabyte_file_round_trips_with_the_right_sha256(
    src: Path, dest: Path, receiver: ArtifactReceiver
) -> None:
    data = random_file(src / "blob.bin", 3 * MB + 12_345)
    sender = ArtifactSender(src / "blob.bin", "blob.bin")
    offer = sender.offer()
    assert offer.body.size == len(data)
    assert offer.body.sha256 == sha256(data)
    assert offer.body.chunk_size == DEFAULT_CHUNK_SIZE

    receiver.on_offer(ArtifactOffer.model_validate_json(encode_message(offer)))
    frames = wire(encode_chunk(sender.transfer, i, c) for i, c in enumerate(sender.chunks()))
    assert len(frames) == -(-len(data) // DEFAULT_CHUNK_SIZE)  # ceil: 13 chunks
    for frame in frames:
        receiver.on_chunk(frame)
    path = receiver.on_done(ArtifactDone.model_validate_json(encode_message(sender.done())))

    assert path == dest / "blob.bin"
    assert sha256(path.read_bytes()) == sha256(data)
    assert path.read_bytes() == data
    assert leftovers(dest) == ["blob.bin"]  # no partial file left
    assert not receiver.active


def test_bytes_source_round_trips(dest: Path, receiver: ArtifactReceiver) -> None:
    data = random.Random(1).randbytes(100_000)
    sender = ArtifactSender(data, "mem.bin", chunk_size=30_000)
    assert [len(c) for c in sender.chunks()] == [30_000, 30_000, 30_000, 10_000]
    path = transfer_all(sender, receiver)
    assert path.read_bytes() == data


def test_empty_file_works(src: Path, dest: Path, receiver: ArtifactReceiver) -> None:
    (src / "empty.txt").write_bytes(b"")
    sender = ArtifactSender(src / "empty.txt", "empty.txt")
    offer = sender.offer()
    assert offer.body.size == 0
    assert offer.body.sha256 == sha256(b"")
    assert list(sender.chunks()) == []

    receiver.on_offer(offer)
    assert receiver.progress(sender.transfer) == (0, 0)
    path = receiver.on_done(sender.done())
    assert path.read_bytes() == b""
    assert leftovers(dest) == ["empty.txt"]


def test_a_chunk_for_an_empty_artifact_is_more_data_than_offered(
    dest: Path, receiver: ArtifactReceiver
) -> None:
    sender = ArtifactSender(b"", "empty.txt")
    receiver.on_offer(sender.offer())
    refused(receiver, encode_chunk(sender.transfer, 0, b"x"), "more data than offered")
    assert leftovers(dest) == []


def test_size_that_is_an_exact_multiple_of_the_chunk_size(
    dest: Path, receiver: ArtifactReceiver
) -> None:
    data = bytes(range(256)) * 16  # 4096 bytes
    sender = ArtifactSender(data, "exact.bin", chunk_size=1024)
    assert [len(c) for c in sender.chunks()] == [1024] * 4
    assert transfer_all(sender, receiver).read_bytes() == data


def test_two_interleaved_transfers_both_succeed(
    src: Path, dest: Path, receiver: ArtifactReceiver
) -> None:
    a = random_file(src / "a.bin", 700_000, seed=1)
    b = random_file(src / "b.bin", 450_000, seed=2)
    send_a = ArtifactSender(src / "a.bin", "a.bin", chunk_size=SMALL_CHUNK)
    send_b = ArtifactSender(src / "b.bin", "b.bin", chunk_size=50_000)
    receiver.on_offer(send_a.offer())
    receiver.on_offer(send_b.offer())
    assert set(receiver.active) == {send_a.transfer, send_b.transfer}

    for frame_a, frame_b in itertools.zip_longest(send_a.frames(), send_b.frames()):
        for frame in (frame_b, frame_a):
            if frame is not None:  # the shorter transfer runs out first
                receiver.on_chunk(frame)

    assert receiver.on_done(send_b.done()).read_bytes() == b
    assert receiver.on_done(send_a.done()).read_bytes() == a
    assert leftovers(dest) == ["a.bin", "b.bin"]


def test_an_existing_file_of_that_name_is_replaced(dest: Path, receiver: ArtifactReceiver) -> None:
    (dest / "report.txt").write_text("old")
    path = transfer_all(ArtifactSender(b"new content", "report.txt"), receiver)
    assert path.read_bytes() == b"new content"
    assert leftovers(dest) == ["report.txt"]


def test_sender_and_receiver_work_with_offer_and_done_bodies_too(
    dest: Path, receiver: ArtifactReceiver
) -> None:
    sender = ArtifactSender(b"abc", "abc.txt")
    receiver.on_offer(sender.offer().body)
    for frame in sender.frames():
        receiver.on_chunk(frame)
    assert receiver.on_done(sender.done().body).read_bytes() == b"abc"


# ------------------------------------------------------------------ verification


def test_one_tampered_byte_gives_sha256_mismatch_and_leaves_no_file(
    src: Path, dest: Path, receiver: ArtifactReceiver
) -> None:
    data = random_file(src / "blob.bin", 3 * MB)
    sender = ArtifactSender(src / "blob.bin", "blob.bin")
    receiver.on_offer(sender.offer())
    for index, chunk in enumerate(sender.chunks()):
        if index == 5:
            tampered = bytearray(chunk)
            tampered[1234] ^= 0x01
            chunk = bytes(tampered)
        receiver.on_chunk(encode_chunk(sender.transfer, index, chunk))

    with pytest.raises(ArtifactError) as info:
        receiver.on_done(sender.done())
    error = info.value
    assert error.code is ErrorCode.ARTIFACT
    assert error.transfer == sender.transfer
    tampered_data = bytearray(data)
    tampered_data[5 * DEFAULT_CHUNK_SIZE + 1234] ^= 0x01
    assert error.reason == (
        f"sha256 mismatch: expected {sha256(data)} got {sha256(bytes(tampered_data))}"
    )
    assert leftovers(dest) == []
    assert not receiver.active


def test_dropped_chunk_in_the_middle_is_refused(dest: Path, receiver: ArtifactReceiver) -> None:
    sender = ArtifactSender(bytes(10_000), "x.bin", chunk_size=1000)
    receiver.on_offer(sender.offer())
    frames = frames_of(sender)
    for frame in frames[:3]:
        receiver.on_chunk(frame)
    error = refused(receiver, frames[4], r"out-of-order chunk: expected chunk 3, got 4")
    assert "dropped or reordered" in error.message
    assert error.transfer == sender.transfer
    assert leftovers(dest) == []
    # the transfer is gone: its later frames and its `done` are refused too
    refused(receiver, frames[5], "unknown transfer")
    with pytest.raises(ArtifactError, match="unknown transfer"):
        receiver.on_done(sender.done())


def test_dropped_last_chunk_is_caught_at_done(dest: Path, receiver: ArtifactReceiver) -> None:
    sender = ArtifactSender(bytes(2500), "x.bin", chunk_size=1000)
    receiver.on_offer(sender.offer())
    for frame in frames_of(sender)[:-1]:
        receiver.on_chunk(frame)
    with pytest.raises(ArtifactError, match=r"incomplete: received 2000 of 2500 bytes"):
        receiver.on_done(sender.done())
    assert leftovers(dest) == []


def test_duplicated_chunk_is_refused(dest: Path, receiver: ArtifactReceiver) -> None:
    sender = ArtifactSender(bytes(5000), "x.bin", chunk_size=1000)
    receiver.on_offer(sender.offer())
    frames = frames_of(sender)
    receiver.on_chunk(frames[0])
    receiver.on_chunk(frames[1])
    refused(receiver, frames[1], r"duplicate chunk 1: chunks up to 1 already received")
    assert leftovers(dest) == []
    assert not receiver.active


def test_reordered_chunks_are_refused(dest: Path, receiver: ArtifactReceiver) -> None:
    sender = ArtifactSender(bytes(5000), "x.bin", chunk_size=1000)
    receiver.on_offer(sender.offer())
    frames = frames_of(sender)
    receiver.on_chunk(frames[0])
    refused(receiver, frames[2], r"out-of-order chunk: expected chunk 1, got 2")
    assert leftovers(dest) == []


def test_chunk_for_an_unknown_transfer_is_refused(dest: Path, receiver: ArtifactReceiver) -> None:
    known = ArtifactSender(b"hello", "known.txt", transfer="known")
    receiver.on_offer(known.offer())
    error = refused(receiver, encode_chunk("stranger", 0, b"hello"), "unknown transfer")
    assert error.transfer == "stranger"
    assert "'stranger'" in error.message
    # the known transfer is untouched and still completes
    assert receiver.active == ("known",)
    assert transfer_all_rest(known, receiver).read_bytes() == b"hello"


def transfer_all_rest(sender: ArtifactSender, receiver: ArtifactReceiver) -> Path:
    for frame in sender.frames():
        receiver.on_chunk(frame)
    return receiver.on_done(sender.done())


def test_oversize_offer_is_refused(dest: Path) -> None:
    receiver = ArtifactReceiver(dest, max_size=1000)
    with pytest.raises(ArtifactError, match=r"1001 bytes exceeds the limit of 1000 bytes"):
        receiver.on_offer(ArtifactSender(bytes(1001), "big.bin").offer())
    assert not receiver.active
    assert leftovers(dest) == []
    transfer_all(ArtifactSender(bytes(1000), "ok.bin"), receiver)  # at the limit is fine


def test_more_data_than_offered_is_refused(dest: Path, receiver: ArtifactReceiver) -> None:
    sender = ArtifactSender(bytes(2500), "x.bin", chunk_size=1000)
    offer = sender.offer()
    receiver.on_offer(offer)
    frames = frames_of(sender)
    for frame in frames:
        receiver.on_chunk(frame)
    refused(
        receiver,
        encode_chunk(sender.transfer, 3, b"extra"),
        r"more data than offered: chunk 3 of 5 bytes would bring the total to 2505 bytes, "
        r"the offer said 2500",
    )
    assert leftovers(dest) == []


def test_a_last_chunk_longer_than_the_offered_rest_is_more_data_than_offered(
    dest: Path, receiver: ArtifactReceiver
) -> None:
    # the offer claims 2400 bytes; the sender really has 2500
    sender = ArtifactSender(bytes(2500), "x.bin", chunk_size=1000)
    offer = sender.offer()
    receiver.on_offer(
        offer.model_copy(update={"body": offer.body.model_copy(update={"size": 2400})})
    )
    frames = frames_of(sender)
    receiver.on_chunk(frames[0])
    receiver.on_chunk(frames[1])
    refused(
        receiver, frames[2], r"more data than offered: .* total to 2500 bytes, the offer said 2400"
    )
    assert leftovers(dest) == []


def test_a_short_chunk_before_the_last_is_refused(dest: Path, receiver: ArtifactReceiver) -> None:
    sender = ArtifactSender(bytes(2500), "x.bin", chunk_size=1000)
    receiver.on_offer(sender.offer())
    refused(
        receiver,
        encode_chunk(sender.transfer, 0, bytes(999)),
        r"chunk 0 has 999 bytes, expected 1000 \(chunk_size 1000, size 2500\)",
    )
    assert leftovers(dest) == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", "contains '/'"),
        ("..", "not a file name"),
        (".", "not a file name"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("\\\\server\\share", "absolute paths are not allowed"),
        ("C:\\Windows\\evil.dll", "absolute paths are not allowed"),
        ("sub/dir.txt", "contains '/'"),
        ("..\\x", "contains '\\\\\\\\'"),
        ("notes:1.txt", "contains ':'"),
        ("line\nbreak", "control characters"),
        ("nul\x00byte", "control characters"),
        (".artifact-abc.part", "reserved for partial files"),
        ("é" * 128, "exceeds the limit of 255"),
        ("", "name is empty"),
    ],
)
def test_unsafe_names_are_refused(
    dest: Path, receiver: ArtifactReceiver, name: str, problem: str
) -> None:
    body = ArtifactOfferBody.model_construct(  # the model itself would refuse some of these
        transfer="t-1", name=name, size=3, sha256=sha256(b"abc"), chunk_size=1024
    )
    with pytest.raises(ArtifactError, match=problem) as info:
        receiver.on_offer(body)
    assert info.value.transfer == "t-1"
    assert not receiver.active
    assert leftovers(dest) == []
    assert not (dest.parent / "x").exists()
    # the sender refuses them up front too
    with pytest.raises(ArtifactError, match=problem):
        ArtifactSender(b"abc", name)


@pytest.mark.parametrize("name", ["report.pdf", "a b.txt", ".bashrc", "..hidden", "日本語.txt"])
def test_plain_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None


def test_duplicate_transfer_id_is_refused(dest: Path, receiver: ArtifactReceiver) -> None:
    receiver.on_offer(ArtifactSender(b"one", "one.txt", transfer="t").offer())
    with pytest.raises(ArtifactError, match="duplicate transfer id") as info:
        receiver.on_offer(ArtifactSender(b"two", "two.txt", transfer="t").offer())
    assert info.value.transfer == "t"
    assert receiver.active == ("t",)  # the first transfer is untouched
    assert len(leftovers(dest)) == 1


def test_the_same_name_twice_at_once_is_refused(receiver: ArtifactReceiver) -> None:
    receiver.on_offer(ArtifactSender(b"one", "same.txt", transfer="t1").offer())
    with pytest.raises(ArtifactError, match=r"'same\.txt' is already being received by .*'t1'"):
        receiver.on_offer(ArtifactSender(b"two", "same.txt", transfer="t2").offer())


def test_too_many_concurrent_transfers_are_refused(dest: Path) -> None:
    receiver = ArtifactReceiver(dest, max_size=MB, max_concurrent=2)
    senders = [ArtifactSender(b"data", f"f{i}.txt") for i in range(3)]
    receiver.on_offer(senders[0].offer())
    receiver.on_offer(senders[1].offer())
    with pytest.raises(ArtifactError, match=r"too many concurrent transfers: 2 already open"):
        receiver.on_offer(senders[2].offer())
    transfer_all_rest(senders[0], receiver)  # finishing one frees a slot
    receiver.on_offer(senders[2].offer())
    assert len(receiver.active) == 2


def test_done_from_a_sender_that_gave_up_discards_the_transfer(
    dest: Path, receiver: ArtifactReceiver
) -> None:
    sender = ArtifactSender(bytes(3000), "x.bin", chunk_size=1000)
    receiver.on_offer(sender.offer())
    receiver.on_chunk(next(sender.frames()))
    with pytest.raises(ArtifactError, match="sender aborted the transfer: disk error"):
        receiver.on_done(sender.abort("disk error"))
    assert leftovers(dest) == []
    assert not receiver.active


def test_abort_and_abort_all_clean_up(dest: Path, receiver: ArtifactReceiver) -> None:
    first = ArtifactSender(bytes(3000), "a.bin", chunk_size=1000)
    second = ArtifactSender(bytes(3000), "b.bin", chunk_size=1000)
    for sender in (first, second):
        receiver.on_offer(sender.offer())
        receiver.on_chunk(next(sender.frames()))
    assert len(leftovers(dest)) == 2

    assert receiver.abort(first.transfer, "user cancelled") is True
    assert receiver.abort(first.transfer, "again") is False  # idempotent
    assert receiver.active == (second.transfer,)
    assert len(leftovers(dest)) == 1

    receiver.abort_all("connection lost")
    assert not receiver.active
    assert leftovers(dest) == []


def test_closing_the_receiver_removes_partial_files(dest: Path) -> None:
    with ArtifactReceiver(dest, max_size=MB) as receiver:
        receiver.on_offer(ArtifactSender(b"partial", "p.txt").offer())
        assert len(leftovers(dest)) == 1
    assert leftovers(dest) == []


def test_a_directory_in_the_way_fails_cleanly(dest: Path, receiver: ArtifactReceiver) -> None:
    (dest / "taken").mkdir()
    (dest / "taken" / "inside").write_text("keep me")
    with pytest.raises(ArtifactError, match="cannot store"):
        transfer_all(ArtifactSender(b"data", "taken"), receiver)
    assert leftovers(dest) == ["taken"]
    assert (dest / "taken" / "inside").read_text() == "keep me"


def test_artifact_error_is_a_protocol_violation_with_the_artifact_code() -> None:
    error = ArtifactError("sha256 mismatch: expected a got b", transfer="t-9")
    assert isinstance(error, ProtocolViolation)
    assert error.code is ErrorCode.ARTIFACT
    assert error.transfer == "t-9"
    assert error.reason == "sha256 mismatch: expected a got b"
    assert error.message == "transfer 't-9': sha256 mismatch: expected a got b"
    assert not error.fatal


# ------------------------------------------------------------------ memory and laziness


def test_sender_chunks_are_a_lazy_generator(src: Path) -> None:
    random_file(src / "f.bin", 10 * SMALL_CHUNK)
    sender = ArtifactSender(src / "f.bin", "f.bin", chunk_size=SMALL_CHUNK)
    sender.offer()
    assert inspect.isgenerator(sender.chunks())
    assert inspect.isgenerator(sender.frames())
    chunks = sender.chunks()
    first = next(chunks)
    assert len(first) == SMALL_CHUNK
    # the file is read as chunks are taken, not before: a later change is seen at the end
    with (src / "f.bin").open("r+b") as file:
        file.seek(9 * SMALL_CHUNK)
        file.write(b"changed!")
    with pytest.raises(ArtifactError, match="changed while sending"):
        list(chunks)


def test_sender_notices_a_file_that_grew(src: Path) -> None:
    random_file(src / "f.bin", 3000)
    sender = ArtifactSender(src / "f.bin", "f.bin", chunk_size=1000)
    sender.offer()
    with (src / "f.bin").open("ab") as file:
        file.write(b"more")
    with pytest.raises(ArtifactError, match="grew beyond the 3000 offered bytes"):
        list(sender.chunks())


def test_sender_reports_an_unreadable_file(src: Path) -> None:
    sender = ArtifactSender(src / "missing.bin", "missing.bin")
    with pytest.raises(ArtifactError, match="cannot read"):
        sender.offer()


def test_receiver_writes_every_chunk_to_disk_at_once(
    src: Path, dest: Path, receiver: ArtifactReceiver
) -> None:
    random_file(src / "f.bin", 20 * SMALL_CHUNK + 77)
    sender = ArtifactSender(src / "f.bin", "f.bin", chunk_size=SMALL_CHUNK)
    receiver.on_offer(sender.offer())
    (partial,) = dest.glob(".artifact-*.part")
    assert partial.stat().st_size == 0
    for count, frame in enumerate(sender.frames(), start=1):
        receiver.on_chunk(frame)
        received, size = receiver.progress(sender.transfer)
        assert received == min(count * SMALL_CHUNK, size)
        assert partial.stat().st_size == received  # already on disk, not held in memory
    path = receiver.on_done(sender.done())
    assert not partial.exists()
    assert path.stat().st_size == 20 * SMALL_CHUNK + 77


def test_memory_stays_bounded_by_a_few_chunks(src: Path, receiver: ArtifactReceiver) -> None:
    size = 8 * MB
    random_file(src / "big.bin", size)
    sender = ArtifactSender(src / "big.bin", "big.bin", chunk_size=SMALL_CHUNK)
    per_chunk_peaks, per_chunk_kept = [], []
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        receiver.on_offer(sender.offer())  # hashing streams the file
        for frame in sender.frames():
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            receiver.on_chunk(frame)
            current, peak = tracemalloc.get_traced_memory()
            per_chunk_peaks.append(peak - before)
            per_chunk_kept.append(current - before)
        path = receiver.on_done(sender.done())
        overall_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == size
    assert len(per_chunk_peaks) == size // SMALL_CHUNK
    # the receiver holds at most the one payload it is writing, and keeps nothing after
    assert max(per_chunk_peaks) < SMALL_CHUNK + 8 * 1024, max(per_chunk_peaks)
    assert max(per_chunk_kept) < 4 * 1024, max(per_chunk_kept)
    # sender and receiver together: a few chunks, nowhere near the 8 MB file
    assert overall_peak < 6 * SMALL_CHUNK, overall_peak


# ------------------------------------------------------------------ chunk size and frames


def test_chunk_size_never_exceeds_the_peers_max_frame() -> None:
    sender = ArtifactSender(bytes(10_000), "x.bin", transfer="t", max_frame=2048)
    assert sender.chunk_size == 2048 - frame_overhead("t")
    assert sender.offer().body.chunk_size == sender.chunk_size
    frames = list(sender.frames())
    assert all(len(frame) <= 2048 for frame in frames)
    assert len(frames[0]) < 2048  # the overhead reserves room for the largest index
    # a smaller request is kept; a larger one is capped at what a frame and the offer allow
    assert ArtifactSender(b"", "x", chunk_size=100, max_frame=2048).chunk_size == 100
    big = ArtifactSender(b"", "x", chunk_size=8 * MB, max_frame=16 * MB)
    assert big.chunk_size == DEFAULT_MAX_FRAME
    assert ArtifactSender(b"", "x").chunk_size == DEFAULT_CHUNK_SIZE


def test_the_largest_header_still_fits_its_reserve() -> None:
    transfer = "\U0001f600" * 64  # every character escaped as a surrogate pair
    frame = encode_chunk(transfer, MAX_INDEX, b"")
    assert len(frame) == frame_overhead(transfer) <= 2 + MAX_HEADER_SIZE
    assert decode_chunk(frame) == (transfer, MAX_INDEX, b"")


def test_senders_refuse_impossible_settings() -> None:
    with pytest.raises(ArtifactError, match="chunk_size must be positive"):
        ArtifactSender(b"x", "x", chunk_size=0)
    with pytest.raises(ArtifactError, match="leaves no room for a payload"):
        ArtifactSender(b"x", "x", max_frame=10)
    with pytest.raises(ArtifactError, match="transfer id must have 1 to 64 characters"):
        ArtifactSender(b"x", "x", transfer="t" * 65)


def test_transfer_through_a_server_session(aip: Kit, dest: Path) -> None:
    """The frames pass a real `ServerSession` (which checks frame size) into a receiver."""
    link = aip.link(handshake=True, config=ServerConfig(max_frame=4096))
    data = random.Random(7).randbytes(50_000)
    sender = ArtifactSender(data, "via-session.bin", max_frame=link.device.max_frame)
    assert link.device.max_frame == 4096
    link.to_server_raw(encode_message(sender.offer()))
    for frame in sender.frames():
        link.to_server_raw(frame, binary=True)
    link.to_server_raw(encode_message(sender.done()))
    assert link.errors_from_server() == []

    server_events, _ = link.take()
    with ArtifactReceiver(dest, max_size=MB) as receiver:
        stored = None
        for event in server_events:
            if isinstance(event, ArtifactOffered):
                receiver.on_offer(event.offer)
            elif isinstance(event, ArtifactChunk):
                receiver.on_chunk(event.data)
            elif isinstance(event, ArtifactFinished):
                stored = receiver.on_done(event.done)
    assert stored is not None
    assert stored.read_bytes() == data


# ------------------------------------------------------------------ chunk format


def test_chunk_format_is_length_prefixed_json_header_then_payload() -> None:
    frame = encode_chunk("ab", 0, b"xyz")
    assert frame == b'\x00\x10{"t":"ab","i":0}xyz'
    assert decode_chunk(frame) == ("ab", 0, b"xyz")
    assert decode_chunk(bytearray(frame)) == ("ab", 0, b"xyz")
    assert decode_chunk(memoryview(frame)) == ("ab", 0, b"xyz")
    # decoding accepts any JSON spelling of the header
    header = b'{ "i" : 7 , "t" : "t\\u00e9" }'
    assert decode_chunk(len(header).to_bytes(2, "big") + header + b"p") == ("t\u00e9", 7, b"p")


def _framed(header: bytes, payload: bytes = b"data") -> bytes:
    return len(header).to_bytes(2, "big") + header + payload


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b"", "shorter than its prefix"),
        (b"\x00", "shorter than its prefix"),
        (b"\x00\x00payload", r"header length 0 is outside 1\.\.1024"),
        (b"\x04\x01" + b"{" * 1025, r"header length 1025 is outside"),
        (b"\x00\x20{}", "header of 32 bytes but only 2 follow"),
        (_framed(b"not json"), "header is not JSON"),
        (_framed(b"\xff\xfe"), "header is not JSON"),
        (_framed(b"[1, 2]"), 'exactly the keys "t" and "i"'),
        (_framed(b'{"t": "a"}'), 'exactly the keys "t" and "i"'),
        (_framed(b'{"t": "a", "i": 0, "x": 1}'), 'exactly the keys "t" and "i"'),
        (_framed(b'{"t": "a", "t": "b", "i": 0}'), "duplicate key 't'"),
        (_framed(b'{"t": 5, "i": 0}'), "transfer id must be a string"),
        (_framed(b'{"t": "", "i": 0}'), "transfer id must have 1 to 64 characters"),
        (_framed(json.dumps({"t": "x" * 65, "i": 0}).encode()), "1 to 64 characters, not 65"),
        (_framed(b'{"t": "a", "i": -1}'), r"chunk index -1 is outside"),
        (_framed(b'{"t": "a", "i": 9007199254740992}'), "chunk index 9007199254740992"),
        (_framed(b'{"t": "a", "i": true}'), "chunk index must be an integer, not bool"),
        (_framed(b'{"t": "a", "i": 1.0}'), "chunk index must be an integer, not float"),
        (_framed(b'{"t": "a", "i": "0"}'), "chunk index must be an integer, not str"),
    ],
)
def test_malformed_frames_are_refused(frame: bytes, problem: str) -> None:
    with pytest.raises(ArtifactError, match=problem) as info:
        decode_chunk(frame)
    assert info.value.code is ErrorCode.ARTIFACT
    assert info.value.message.startswith("malformed chunk frame")


def test_malformed_frame_on_the_receiver_leaves_open_transfers_alone(
    receiver: ArtifactReceiver,
) -> None:
    sender = ArtifactSender(b"abc", "abc.txt")
    receiver.on_offer(sender.offer())
    refused(receiver, b"\x00\x05garbage", "malformed chunk frame")
    assert receiver.active == (sender.transfer,)
    assert transfer_all_rest(sender, receiver).read_bytes() == b"abc"


def test_encode_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(ArtifactError, match="cannot encode chunk: transfer id"):
        encode_chunk("", 0, b"")
    with pytest.raises(ArtifactError, match="cannot encode chunk: chunk index -1"):
        encode_chunk("t", -1, b"")
    with pytest.raises(ArtifactError, match="cannot encode chunk: chunk index"):
        encode_chunk("t", MAX_INDEX + 1, b"")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_decode_chunk_on_arbitrary_bytes_succeeds_or_raises_artifact_error(frame: bytes) -> None:
    try:
        transfer, index, payload = decode_chunk(frame)
    except ArtifactError as error:
        refusal: ArtifactError | None = error
    else:
        refusal = None
    if refusal is not None:
        assert refusal.code is ErrorCode.ARTIFACT
        assert refusal.message.startswith("malformed chunk frame")
        return
    assert isinstance(transfer, str)
    assert 1 <= len(transfer) <= 64
    assert 0 <= index <= MAX_INDEX
    assert frame.endswith(payload)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["t", "i", "x"]) | st.text(max_size=3), children, max_size=4
        )
    ),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(
    header=_json.map(lambda value: json.dumps(value).encode())
    | st.fixed_dictionaries({"t": _json, "i": _json}).map(lambda h: json.dumps(h).encode()),
    payload=st.binary(max_size=64),
    declared=st.none() | st.integers(min_value=0, max_value=65535),
)
def test_decode_chunk_on_random_json_headers_succeeds_or_raises_artifact_error(
    header: bytes, payload: bytes, declared: int | None
) -> None:
    length = len(header) if declared is None else declared
    frame = length.to_bytes(2, "big") + header + payload
    try:
        transfer, index, _ = decode_chunk(frame)
    except ArtifactError:
        return
    assert isinstance(transfer, str)
    assert type(index) is int


@settings(max_examples=300, deadline=None)
@given(
    transfer=st.text(min_size=1, max_size=64),
    index=st.integers(min_value=0, max_value=MAX_INDEX),
    payload=st.binary(max_size=256),
)
def test_encode_then_decode_is_the_identity(transfer: str, index: int, payload: bytes) -> None:
    frame = encode_chunk(transfer, index, payload)
    assert len(frame) <= frame_overhead(transfer) + len(payload)
    assert decode_chunk(frame) == (transfer, index, payload)
