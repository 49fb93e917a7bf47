"""Signalling frames (sans-IO): round trips, incremental reading, hostile input (W5)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.signal import (
    LEG_MESSAGES,
    MAX_PAYLOAD,
    Frame,
    FrameError,
    FrameReader,
    FrameType,
    LegClose,
    LegClosed,
    LegGrant,
    LegRefused,
    LegRequest,
    checkpoint_frame,
    checkpoint_request,
    parse_checkpoint,
    parse_checkpoint_request,
    parse_leg,
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
    with pytest.raises(FrameError, match="unknown frame type 99"):
        FrameReader().feed(b"\x63\x00\x00\x00\x01x")
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


# --- call-leg frames -----------------------------------------------------------------------

LEG_TYPES = set(LEG_MESSAGES)
CALL = "9f" * 32
GRANT = LegGrant(
    "leg-1",
    "plant-b",
    ("turn:10.231.1.1:3478?transport=udp", "turn:[fd00::1]:3478?transport=tcp"),
    "1800000000:leg-1.plant-a",
    "3q2+7w3q2+7w3q2+7w3q2+7w3q2=",
    1800000000,
)
GOLDEN = {
    LegRequest("leg-1", "plant-b", CALL): (
        FrameType.LEG_REQUEST,
        '{"call":"' + CALL + '","leg":"leg-1","peer":"plant-b"}',
    ),
    LegRequest("L.2_x", "plant-a", "0", join=True): (
        FrameType.LEG_REQUEST,
        '{"call":"0","join":true,"leg":"L.2_x","peer":"plant-a"}',
    ),
    GRANT: (
        FrameType.LEG_GRANT,
        '{"credential":"3q2+7w3q2+7w3q2+7w3q2+7w3q2=","expires":1800000000,"leg":"leg-1",'
        '"peer":"plant-b","urls":["turn:10.231.1.1:3478?transport=udp",'
        '"turn:[fd00::1]:3478?transport=tcp"],"username":"1800000000:leg-1.plant-a"}',
    ),
    LegRefused("leg-1", "policy: plant-a and plant-c may not call each other"): (
        FrameType.LEG_REFUSED,
        '{"leg":"leg-1","reason":"policy: plant-a and plant-c may not call each other"}',
    ),
    LegClose("leg-1", "hung up — «конец»"): (
        FrameType.LEG_CLOSE,
        '{"leg":"leg-1","reason":"hung up — «конец»"}',
    ),
    LegClosed("leg-1", "plant-a", "site disconnected"): (
        FrameType.LEG_CLOSED,
        '{"by":"plant-a","leg":"leg-1","reason":"site disconnected"}',
    ),
}


@pytest.mark.parametrize("message", list(GOLDEN), ids=lambda m: type(m).__name__)
def test_leg_frames_golden_bytes_and_round_trip(message: Any) -> None:
    ftype, text = GOLDEN[message]
    frame = message.frame()
    assert frame.type is ftype and frame.payload == text.encode()
    assert type(message).parse(frame) == message
    assert parse_leg(frame) == message
    # through the wire reader, too
    [again] = FrameReader().feed(bytes(frame))
    assert parse_leg(again) == message


def test_a_grant_never_shows_its_credential_in_repr() -> None:
    assert "3q2+" not in repr(GRANT) and "username" in repr(GRANT)


def _request(**changes: Any) -> Frame:
    obj: dict[str, Any] = {"call": CALL, "leg": "leg-1", "peer": "plant-b"}
    obj.update(changes)
    obj = {k: v for k, v in obj.items() if v is not ...}
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Frame(FrameType.LEG_REQUEST, text.encode())


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_request(extra=1), "LEG_REQUEST: unknown key 'extra'"),
        (_request(peer=...), "LEG_REQUEST: the key 'peer' is missing"),
        (_request(leg=7), "LEG_REQUEST: 'leg' must be a string"),
        (_request(leg="x" * 65), "'leg' 'xxx"),
        (_request(leg="a:b"), "is not a leg id"),
        (_request(leg=""), "is not a leg id"),
        (_request(peer="Plant-B"), "'peer' 'Plant-B' is not a site id"),
        (_request(peer="plant_b"), "is not a site id"),
        (_request(call="9F"), "'call' '9F' is not a call reference"),
        (_request(call="a" * 65), "is not a call reference"),
        (_request(call=None), "'call' must be a string"),
        (_request(join=False), "'join' must be true or absent"),
        (_request(join=1), "'join' must be true or absent"),
        (
            Frame(FrameType.LEG_REQUEST, b'{"leg":"leg-1", "peer":"plant-b","call":"00"}'),
            "canonical",
        ),
        (Frame(FrameType.LEG_REQUEST, b'{"call":"00","leg":"a","leg":"b","peer":"x"}'), "twice"),
        (Frame(FrameType.LEG_REQUEST, b"[1]"), "not a JSON object"),
        (Frame(FrameType.LEG_REQUEST, b"{"), "not JSON"),
        (Frame(FrameType.LEG_REQUEST, b"\xff"), "not UTF-8"),
        (Frame(FrameType.LEG_REQUEST, b'{"call":NaN}'), "NaN is not JSON"),
        (
            Frame(FrameType.LEG_REQUEST, b'{"call":"00","leg":"\\u006c","peer":"plant-b"}'),
            "canonical",
        ),
    ],
)
def test_malformed_leg_frames_are_refused_with_the_reason(frame: Frame, message: str) -> None:
    with pytest.raises(FrameError, match=re.escape(message)):
        LegRequest.parse(frame)


def _grant_json(**changes: Any) -> Frame:
    obj = GRANT.to_json()
    obj.update(changes)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return Frame(FrameType.LEG_GRANT, text.encode())


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_grant_json(urls=[]), "'urls' must list 1 to 8"),
        (_grant_json(urls=["stun:10.0.0.1:3478"]), "is not a URL turn:"),
        (_grant_json(urls=["turn:relay.example:3478?transport=udp"]), "is not a URL turn:"),
        (_grant_json(urls="turn:10.0.0.1:3478?transport=udp"), "'urls' must be a list"),
        (_grant_json(expires=1.5), "'expires' must be an integer"),
        (_grant_json(expires=True), "'expires' must be an integer"),
        (_grant_json(expires=0), "'expires' must be a positive integer"),
        (_grant_json(credential="short"), "'credential' is not a TURN REST password"),
        (_grant_json(username="leg-1"), "'username' 'leg-1' is not '<expiry>:<leg>.<site>'"),
    ],
)
def test_malformed_grants_are_refused(frame: Frame, message: str) -> None:
    with pytest.raises(FrameError, match=re.escape(message)):
        LegGrant.parse(frame)


def test_reasons_and_frame_types_are_checked() -> None:
    with pytest.raises(FrameError, match="'reason' must hold 1 to 500 characters"):
        LegClose("leg-1", "")
    with pytest.raises(FrameError, match="'reason' must hold 1 to 500"):
        LegRefused.parse(
            Frame(FrameType.LEG_REFUSED, b'{"leg":"a","reason":"' + b"x" * 501 + b'"}')
        )
    with pytest.raises(FrameError, match="control character U\\+001B"):
        LegClosed.parse(
            Frame(FrameType.LEG_CLOSED, b'{"by":"plant-a","leg":"a","reason":"\\u001b[31m"}')
        )
    with pytest.raises(FrameError, match="a LEG_CLOSE frame is not a LEG_REQUEST"):
        LegRequest.parse(LegClose("leg-1", "bye").frame())
    with pytest.raises(FrameError, match="a ENVELOPE frame is not a leg message"):
        parse_leg(Frame(FrameType.ENVELOPE, b"{}"))


@given(data=st.binary(max_size=300), kind=st.sampled_from(sorted(LEG_TYPES)))
@settings(max_examples=300, deadline=None)
def test_leg_parsers_raise_only_frame_errors(data: bytes, kind: FrameType) -> None:
    """Any bytes: a message or a FrameError (W5: the hub closes the channel), nothing else."""
    try:
        parse_leg(Frame(kind, data))
    except FrameError:
        pass


@given(
    leg=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    call=st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True),
    join=st.booleans(),
    flip=st.integers(0, 10_000),
)
@settings(max_examples=200, deadline=None)
def test_requests_round_trip_and_a_flipped_byte_never_parses_as_the_same(
    leg: str, call: str, join: bool, flip: int
) -> None:
    req = LegRequest(leg, "plant-b", call, join)
    frame = req.frame()
    assert LegRequest.parse(frame) == req
    raw = bytearray(frame.payload)
    raw[flip % len(raw)] ^= 0x01
    try:
        other = LegRequest.parse(Frame(FrameType.LEG_REQUEST, bytes(raw)))
    except FrameError:
        return
    assert other != req
