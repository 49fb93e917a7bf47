"""Signalling frames (sans-IO): round trips, incremental reading, hostile input (W5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.signal import (
    MAX_PAYLOAD,
    Frame,
    FrameError,
    FrameReader,
    FrameType,
    checkpoint_frame,
    checkpoint_request,
    parse_checkpoint,
    parse_checkpoint_request,
)

frames = st.builds(Frame, st.sampled_from(list(FrameType)), st.binary(max_size=3000))


@given(fs=st.lists(frames, max_size=8), cuts=st.lists(st.integers(1, 500), max_size=20))
@settings(max_examples=100, deadline=None)
def test_frames_survive_any_split(fs: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(bytes(f) for f in fs)
    reader, got, pos = FrameReader(), [], 0
    for c in cuts:
        got += reader.feed(wire[pos : pos + c])
        pos += c
    got += reader.feed(wire[pos:])
    assert got == fs


def test_unknown_type_and_oversize_are_refused_before_buffering() -> None:
    with pytest.raises(FrameError, match="unknown frame type 9"):
        FrameReader().feed(b"\x09\x00\x00\x00\x01x")
    with pytest.raises(FrameError, match="exceeds"):
        FrameReader().feed(b"\x01\xff\xff\xff\xff")  # no 4 GiB buffer is ever allocated
    with pytest.raises(FrameError, match="exceeds"):
        Frame(FrameType.ENVELOPE, bytes(MAX_PAYLOAD + 1))


def test_checkpoint_frames() -> None:
    assert parse_checkpoint_request(checkpoint_request(42)) == 42
    note = "zastava-relay/dmz\n3\nAAAA\n\n— zastava-relay/dmz sig\n"
    proof = [bytes([i]) * 32 for i in range(3)]
    assert parse_checkpoint(checkpoint_frame(note, proof)) == (note, proof)
    with pytest.raises(FrameError, match="one u64"):
        parse_checkpoint_request(Frame(FrameType.CHECKPOINT_REQUEST, b"\x00"))
    bad = checkpoint_frame(note, proof)
    with pytest.raises(FrameError, match="does not match its count"):
        parse_checkpoint(Frame(FrameType.CHECKPOINT, bad.payload[:-1]))
    with pytest.raises(FrameError, match="truncated"):
        parse_checkpoint(Frame(FrameType.CHECKPOINT, b"\x00\x00\x01\x00"))
