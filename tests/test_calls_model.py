"""The call state machine, the active speaker, the SDP check and the call records, without
any I/O (``edge.calls.model``, ``speaker``, ``media.check_sdp``, ``records``)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge import db
from edge.calls import schema
from edge.calls.media import Publication, SdpError, Source, check_sdp
from edge.calls.model import (
    Call,
    CallKind,
    Calls,
    CallState,
    Changed,
    ConflictError,
    EndReason,
    ForbiddenError,
    InCall,
    InvalidError,
    MediaHold,
    MediaJoin,
    MediaLeave,
    MemberState,
    NotFoundError,
    RoomClosed,
)
from edge.calls.records import history, record_of, save
from edge.calls.speaker import SpeakerDetector

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
RING = dt.timedelta(seconds=30)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def state(call: Call) -> CallState:
    """The call's state now (a function, so type narrowing does not outlive a change)."""
    return call.state


def member_state(call: Call, login: str) -> MemberState:
    return call.members[login].state


def states(call: Call) -> dict[str, str]:
    return {m.login: m.state.value for m in call.members.values()}


def kinds(events: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_1_1_call_rings_is_answered_and_hung_up() -> None:
    calls = Calls(ring_for=RING)
    call, events = calls.start("c1", CallKind.DIRECT, "a", ["b"], at(0))
    assert state(call) is CallState.RINGING
    assert kinds(events) == ["InCall", "MediaJoin", "Changed"]
    assert calls.next_deadline() == at(30)
    assert calls.current("a") is call and calls.current("b") is None
    assert [c.id for c in calls.of("b")] == ["c1"]

    events = calls.join("c1", "b", at(5))
    assert state(call) is CallState.ACTIVE and call.answered_at == at(5)
    assert events[:2] == [InCall("b", True), MediaJoin("c1", "b")]
    assert calls.next_deadline() is None

    events = calls.leave("c1", "a", at(60))
    assert (state(call), call.reason) == (CallState.ENDED, EndReason.HUNG_UP)
    assert InCall("a", False) in events and InCall("b", False) in events
    assert MediaLeave("c1", "b") in events and RoomClosed("c1") in events
    assert calls.current("b") is None and calls.live("c1") is None
    with pytest.raises(ConflictError, match="the call has ended"):
        calls.join("c1", "b", at(61))
    assert calls.leave("c1", "a", at(62)) == []  # twice is not an error


def test_decline_cancel_and_missed_end_a_1_1_call() -> None:
    calls = Calls(ring_for=RING)
    declined, _ = calls.start("d", CallKind.DIRECT, "a", ["b"], at(0))
    with pytest.raises(ConflictError, match="not ringing for you"):
        calls.decline("d", "a", at(1))
    calls.decline("d", "b", at(1))
    assert declined.reason is EndReason.DECLINED
    assert states(declined) == {"a": "left", "b": "declined"}

    cancelled, _ = calls.start("c", CallKind.DIRECT, "a", ["b"], at(2))
    calls.leave("c", "a", at(3))
    assert cancelled.reason is EndReason.CANCELLED
    assert states(cancelled) == {"a": "left", "b": "missed"}

    missed, _ = calls.start("m", CallKind.DIRECT, "a", ["b"], at(10))
    assert calls.tick(at(39)) == []
    events = calls.tick(at(40))
    assert missed.reason is EndReason.MISSED
    assert states(missed) == {"a": "left", "b": "missed"}
    assert InCall("a", False) in events and isinstance(events[-1], Changed)


def test_busy_people_are_not_rung_and_one_call_at_a_time() -> None:
    calls = Calls()
    calls.start("x", CallKind.DIRECT, "a", ["b"], at(0))
    calls.join("x", "b", at(1))
    busy, events = calls.start("y", CallKind.DIRECT, "c", ["b"], at(2))
    assert (state(busy), busy.reason) == (CallState.ENDED, EndReason.BUSY)
    assert kinds(events) == ["Changed"]  # nobody rung, nothing in a room, no presence
    assert states(busy) == {"c": "left", "b": "busy"}
    assert calls.current("c") is None
    with pytest.raises(ConflictError, match="already in a call"):
        calls.start("z", CallKind.DIRECT, "a", ["c"], at(3))
    meeting, _ = calls.start("m", CallKind.MEETING, "c", ["a", "d"], at(4))
    assert states(meeting) == {"c": "joined", "a": "busy", "d": "ringing"}
    with pytest.raises(ConflictError, match="in another call"):
        calls.join("m", "a", at(5))
    calls.leave("x", "a", at(6))
    calls.join("m", "a", at(7))  # free now: joins the meeting it was busy for
    assert meeting.members["a"].state is MemberState.JOINED


def test_refusals() -> None:
    calls = Calls()
    with pytest.raises(InvalidError, match="nobody to call"):
        calls.start("e", CallKind.DIRECT, "a", ["a"], at(0))
    with pytest.raises(InvalidError, match="exactly one"):
        calls.start("e", CallKind.DIRECT, "a", ["b", "c"], at(0))
    calls.start("c", CallKind.DIRECT, "a", ["b"], at(0))
    for made_up in ("c", "nope"):
        with pytest.raises(NotFoundError, match="no such call"):
            calls.get(made_up, "mallory")
        with pytest.raises(NotFoundError):
            calls.join(made_up, "mallory", at(1))
    with pytest.raises(ConflictError, match="start a meeting"):
        calls.invite("c", "a", ["c"], at(1))
    with pytest.raises(ConflictError, match="only meetings"):
        calls.moderate_mute("c", "a", "b", at(1))
    with pytest.raises(ConflictError, match="join the call first"):
        calls.mute("c", "b", True, False, at(1))
    with pytest.raises(ValueError, match="ring_for"):
        Calls(ring_for=dt.timedelta(0))


def test_a_meeting_with_its_moderator() -> None:
    calls = Calls(ring_for=RING, max_participants=3)
    meeting, events = calls.start("m", CallKind.MEETING, "a", ["b", "c", "d"], at(0))
    assert state(meeting) is CallState.ACTIVE
    calls.join("m", "b", at(1))
    calls.decline("m", "c", at(2))
    assert state(meeting) is CallState.ACTIVE  # a meeting goes on
    calls.join("m", "c", at(3))  # ... and who declined may still join
    with pytest.raises(ConflictError, match="full"):
        calls.join("m", "d", at(4))

    with pytest.raises(ForbiddenError, match="only the moderator"):
        calls.moderate_mute("m", "b", "c", at(5))
    with pytest.raises(ForbiddenError):
        calls.remove("m", "b", "c", at(5))
    with pytest.raises(InvalidError, match="your own controls"):
        calls.remove("m", "a", "a", at(5))
    assert calls.moderate_mute("m", "a", "b", at(5))[0] == MediaHold("m", "b", True)
    assert meeting.members["b"].held and meeting.members["b"].audio_muted
    assert calls.moderate_mute("m", "a", "b", at(6)) == [Changed(meeting, record=False)]
    events = calls.mute("m", "b", False, True, at(7))  # b unmutes: the hold ends
    assert events[0] == MediaHold("m", "b", False)
    b = meeting.members["b"]
    assert (b.held, b.video_muted) == (False, True)

    events = calls.remove("m", "a", "c", at(8))
    assert InCall("c", False) in events and MediaLeave("m", "c") in events
    with pytest.raises(ForbiddenError, match="removed you"):
        calls.join("m", "c", at(9))
    calls.join("m", "d", at(9))  # a place is free again

    invited = calls.invite("m", "b", ["e", "d", "c"], at(10))  # d is in, c removed
    assert kinds(invited) == ["Changed"] and member_state(meeting, "e") is MemberState.RINGING
    assert calls.next_deadline() == at(40)
    calls.tick(at(40))
    assert member_state(meeting, "e") is MemberState.MISSED and state(meeting) is CallState.ACTIVE
    calls.invite("m", "d", ["e"], at(41))  # rung again
    assert member_state(meeting, "e") is MemberState.RINGING

    for login in ("a", "b"):
        calls.leave("m", login, at(50))
    assert state(meeting) is CallState.ACTIVE  # d is still in
    events = calls.leave("m", "d", at(51))
    assert (state(meeting), meeting.reason) == (CallState.ENDED, EndReason.EMPTY)
    assert meeting.members["e"].state is MemberState.MISSED
    assert RoomClosed("m") in events


def test_publications_speaker_rejoin_dropped_and_shutdown() -> None:
    calls = Calls()
    meeting, _ = calls.start("m", CallKind.MEETING, "a", ["b"], at(0))
    calls.join("m", "b", at(1))
    screen = Publication("b~2s/0", "b", "video", Source.SCREEN)
    assert calls.published("m", screen) and meeting.members["b"].screen
    assert calls.published("gone", screen) == []
    calls.unpublished("m", screen)
    assert (meeting.members["b"].screen, meeting.publications) == (False, {})
    assert calls.speaking("m", "b") is meeting and meeting.speaker == "b"
    assert calls.speaking("m", "b") is None  # no change
    assert calls.speaking("m", "mallory") is None
    assert calls.join("m", "b", at(2))[0] == MediaJoin("m", "b", rejoin=True)
    calls.dropped("m", "b", at(3))
    assert member_state(meeting, "b") is MemberState.LEFT
    assert calls.get("m", "a").speaker is None
    events = calls.shutdown(at(4))
    assert meeting.reason is EndReason.SHUTDOWN and InCall("a", False) in events


def test_the_active_speaker_takes_the_floor_with_hysteresis() -> None:
    d = SpeakerDetector(threshold=60, margin=6, hold=1.0)
    assert not d.tick(0.0)  # nobody spoke
    for _ in range(10):
        d.level("a", 30)  # -30 dBov: speech
        d.level("b", 127)  # silence
    assert d.tick(0.5) and d.current == "a"
    for _ in range(10):
        d.level("a", 30)
        d.level("b", 20)  # louder, but too soon after the last change
    assert not d.tick(1.0)
    for _ in range(10):
        d.level("a", 32)
        d.level("b", 29)  # louder, but not by the margin
    assert not d.tick(2.0)
    for _ in range(10):
        d.level("a", 110)  # a falls silent
        d.level("b", 40)
    assert d.tick(3.0) and d.current == "b"
    for _ in range(10):
        d.level("b", 127)
    assert not d.tick(5.0) and d.current == "b"  # the last speaker keeps the floor
    assert d.forget("b")
    assert not d.forget("zz")
    assert d.current is None


VALID = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\n"
    "a=fingerprint:sha-256 00:11\r\n"
    "a=candidate:1 1 udp 2122260223 192.0.2.2 54321 typ host generation 0\r\n"
    "a=candidate:2 1 udp 2122260223 3f2a1c9e-5b7d-4f00-8a1b-0c9d8e7f6a5b.local 5000 typ host\r\n"
)


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("", "the SDP is empty"),
        ("x" * 300_000, "too long"),
        ("v=1\r\n", "must start with v=0"),
        ("v=0\r\nm\r\n", "line 2 is not of the form"),
        ("v=0\r\nM=audio\r\n", "line 2 is not of the form"),
        ("v=0\r\ns=\x1b[31m\r\n", "line 2 holds a control character"),
        ("v=0\r\ns=-\r\n", "no media section"),
        (VALID.replace("a=ice-pwd", "a=x-pwd"), "no ICE password"),
        (VALID.replace("a=fingerprint", "a=x"), "no DTLS fingerprint"),
        (VALID.replace("typ host generation", "host generation"), "line 9: not an ICE"),
        (VALID.replace("2122260223 192", "high 192"), "line 9: an ICE candidate needs numbers"),
        (VALID.replace("54321", "65536"), "port 65536 is not a port"),
        (VALID.replace("192.0.2.2", "edge.example"), "'edge.example' is neither an IP"),
    ],
)
def test_sdp_that_is_not_webrtc_shaped_is_refused_with_a_reason(sdp: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        check_sdp(sdp)


def test_a_control_character_anywhere_in_a_line_is_refused_and_tab_is_not() -> None:
    # RFC 8866's text: no control character but tab (CR and LF end lines)
    for code in range(0x100):
        if chr(code) == "\n":
            continue
        sdp = VALID.replace("s=-", f"s=a{chr(code)}b")
        if code < 0x20 and code != 0x09 or code == 0x7F:
            with pytest.raises(SdpError, match="line 3 holds a control character"):
                check_sdp(sdp)
        else:
            assert check_sdp(sdp) == sdp, hex(code)


def test_webrtc_shaped_sdp_passes() -> None:
    assert check_sdp(VALID) == VALID
    assert check_sdp(VALID.replace("\r\n", "\n")) == VALID.replace("\r\n", "\n")


@given(st.text(max_size=400))
def test_any_text_is_either_sdp_shaped_or_refused_with_sdp_error(text: str) -> None:
    try:
        check_sdp(text)
    except SdpError:
        pass


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=120))
def test_any_candidate_line_is_either_accepted_or_refused_with_sdp_error(value: str) -> None:
    try:
        check_sdp(VALID + f"a=candidate:{value}\r\n")
    except SdpError:
        pass


def test_records_keep_how_each_call_went_for_each_person() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(conn, schema.COMPONENT, schema.MIGRATIONS)
    calls = Calls(ring_for=RING)
    direct, _ = calls.start("d", CallKind.DIRECT, "a", ["b"], at(0))
    save(conn, [record_of(direct)])  # saved at the start: a crash leaves it unended
    assert history(conn, "b")[0][1].ended_ms is None
    calls.tick(at(31))
    meeting, _ = calls.start("m", CallKind.MEETING, "b", ["a", "c"], at(40))
    calls.join("m", "a", at(41))
    calls.decline("m", "c", at(42))
    calls.leave("m", "a", at(43))
    calls.leave("m", "b", at(44))
    save(conn, [record_of(direct), record_of(meeting)])

    mine = history(conn, "a")
    assert [r.id for _, r in mine] == ["m", "d"]  # newest first
    (seq_m, m), (seq_d, d) = mine
    assert (d.reason, d.answered_ms, d.ended_ms) == ("missed", None, 1_795_348_831_000)
    assert {x.login: x.outcome for x in d.members} == {"a": "missed", "b": "missed"}
    assert [x.login for x in m.members] == ["b", "a", "c"]  # the moderator first
    assert {x.login: x.outcome for x in m.members} == {
        "a": "answered",
        "b": "answered",
        "c": "declined",
    }
    assert [r.id for _, r in history(conn, "a", before=seq_m)] == ["d"]
    assert [r.id for _, r in history(conn, "c")] == ["m"]
    assert history(conn, "nobody") == []
    assert seq_m > seq_d
