"""Calls over the real edge server: the state machine through the API, the push frames, the
records, presence, moderation, and media through the SFU with real aiortc peers (THREATS W5).

Theory of operation
-------------------
One server per module (``edge.web.server.serve`` on 127.0.0.1:0 over TLS, in a thread, with
a clock the test moves), four people of this plant with accounts (alice, bob, carol,
mallory) and dave of another plant. Requests go over ``http.client``, pushes are read from
each person's own WebSocket over TLS (``wsproto``), as in ``tests/test_edge_server.py``.
Media tests run headless aiortc clients in this process (``bench.sfu_clients``: pre-encoded
VP8 + Opus out, frames decoded in) against the edge's SFU, ICE over this host's own
non-loopback addresses, no ICE servers.

Rings run out on the edge's clock: the missed-call test moves it past the ring time and the
edge notices within a second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiortc import RTCSessionDescription

from bench.sfu_clients import Clip, Publisher, Subscriber, make_clip, wait_for
from edge.config import EdgeConfig, WebSettings
from pki.names import Role
from tests.conftest import enroll_node, make_ca
from tests.edgeserver import serving_edge
from tests.test_edge_api import Clock, Edge
from tests.test_edge_chat_api import load_people
from tests.test_edge_server import REAL_NOW, Live, Reply, WsClient

pytestmark = pytest.mark.slow

PEOPLE = ("alice", "bob", "carol", "mallory")
RING = dt.timedelta(seconds=30)  # the edge's default ring time


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("calls-live")
    ca = make_ca(tmp / "ca", REAL_NOW)
    creds = enroll_node(ca, tmp / "node", Role.EDGE, "plant-a", dns=("localhost",), now=REAL_NOW)
    accounts = Edge(tmp)
    accounts.clock.now = REAL_NOW
    for login in PEOPLE:
        accounts.enroll(login)
    load_people(accounts)
    accounts.close()
    config = EdgeConfig(
        site="plant-a",
        data_dir=tmp / "data",
        node_dir=tmp / "node",
        host="127.0.0.1",
        port=0,
        web=WebSettings(ws_frames_per_second=50),
    )
    clock = Clock(REAL_NOW + dt.timedelta(minutes=2))
    state = Live(tmp, ca, creds, config, clock, accounts.phones)
    with serving_edge(config, state.clock) as serving:
        state.serving = serving
        yield state


class Person:
    """A logged-in user: requests with the session's cookie and CSRF token, and a WebSocket."""

    def __init__(self, live: Live, login: str) -> None:
        self.live = live
        self.login = login
        r = live.login(login)
        assert r.status == 200, r.body
        self.cookie = r.cookie()
        self.csrf = r.json()["csrf_token"]
        self.ws = WsClient(live, self.cookie, f"https://localhost:{live.port}")
        self.unread: list[dict[str, Any]] = []
        assert self.ws.receive()["type"] == "hello"

    def call(self, method: str, path: str, body: object = None) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        headers = {"X-CSRF-Token": self.csrf}
        return self.live.call(method, path, data, cookie=self.cookie, headers=headers)

    def ok(self, method: str, path: str, body: object = None, status: int = 200) -> Any:
        r = self.call(method, path, body)
        assert r.status == status, (method, path, r.status, r.body)
        return r.json()

    def frame(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first pushed frame not taken yet that matches (others wait for their turn)."""
        for i, frame in enumerate(self.unread):
            if match(frame):
                return self.unread.pop(i)
        while True:
            frame = self.ws.receive(presence=True)
            if match(frame):
                return frame
            self.unread.append(frame)

    def call_frame(self, call_id: str, **want: object) -> dict[str, Any]:
        """The next ``call`` frame of ``call_id`` whose call has the fields ``want``."""

        def match(f: dict[str, Any]) -> bool:
            call = f.get("call") or {}
            return (
                f["type"] == "call"
                and call.get("id") == call_id
                and all(call.get(k) == v for k, v in want.items())
            )

        found: dict[str, Any] = self.frame(match)["call"]
        return found

    def presence(self, login: str, state: str) -> dict[str, Any]:
        """The presence change of ``login`` to ``state``, alone or in a ``presence_many``."""

        def match(f: dict[str, Any]) -> bool:
            changes = f["presence"] if f["type"] == "presence_many" else [f]
            return f["type"] in ("presence", "presence_many") and any(
                c["login"] == login and c["state"] == state for c in changes
            )

        return self.frame(match)

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def people(live: Live) -> Iterator[dict[str, Person]]:
    found = {login: Person(live, login) for login in PEOPLE}
    yield found
    for person in found.values():
        person.close()


def member(call: dict[str, Any], login: str) -> dict[str, Any]:
    return next(m for m in call["members"] if m["login"] == login)


def record(person: Person, call_id: str) -> dict[str, Any]:
    records = person.ok("GET", "/api/calls/history")["records"]
    return next(r for r in records if r["id"] == call_id)


def eventually(check: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    import time

    end = time.monotonic() + limit
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.05)


# The state machine through the API


def test_a_1_1_call_rings_is_answered_shows_in_a_call_and_is_recorded(
    live: Live, people: dict[str, Person]
) -> None:
    alice, bob = people["alice"], people["bob"]
    call = alice.ok("POST", "/api/calls", {"kind": "direct", "invite": ["bob"]}, status=201)
    cid = call["id"]
    assert call["state"] == "ringing" and call["moderator"] == "alice"
    assert member(call, "alice")["state"] == "joined"
    assert member(call, "bob")["state"] == "ringing"
    assert member(call, "bob")["name"] == "Боб Бобров <script>alert(1)</script>"  # as is
    rung = bob.call_frame(cid, state="ringing")
    assert member(rung, "bob")["state"] == "ringing"
    assert [c["id"] for c in bob.ok("GET", "/api/calls")["calls"]] == [cid]
    bob.presence("alice", "in_call")  # the caller is in a call while it rings

    answered = bob.ok("POST", f"/api/calls/{cid}/join")
    assert answered["state"] == "active" and answered["answered_ms"] is not None
    alice.call_frame(cid, state="active")
    alice.presence("bob", "in_call")

    # a third person knows nothing of it: the same 404 as a made-up id (W4)
    carol = people["carol"]
    for path in (f"/api/calls/{cid}", "/api/calls/made-up-id"):
        r = carol.call("GET", path)
        assert (r.status, r.json()) == (404, {"error": "no such call"})
    for action in ("join", "decline", "leave"):
        r = carol.call("POST", f"/api/calls/{cid}/{action}")
        assert (r.status, r.json()) == (404, {"error": "no such call"})
    assert carol.call("POST", f"/api/calls/{cid}/subscribe").status == 404

    # a 1:1 call takes nobody else; the second person in a call is busy for others
    r = alice.call("POST", f"/api/calls/{cid}/invite", {"logins": ["carol"]})
    assert r.status == 409 and "start a meeting" in r.json()["error"]
    busy = carol.ok("POST", "/api/calls", {"kind": "direct", "invite": ["bob"]}, status=201)
    assert (busy["state"], busy["reason"]) == ("ended", "busy")
    assert member(busy, "bob")["state"] == "busy"
    assert bob.call_frame(busy["id"], state="ended")["reason"] == "busy"  # told, not rung

    ended = bob.ok("POST", f"/api/calls/{cid}/leave")
    assert (ended["state"], ended["reason"]) == ("ended", "hung_up")
    assert alice.call_frame(cid, state="ended")["reason"] == "hung_up"
    alice.presence("bob", "online")
    bob.presence("alice", "online")
    r = bob.call("POST", f"/api/calls/{cid}/join")
    assert (r.status, r.json()) == (409, {"error": "the call has ended"})

    mine = record(alice, cid)
    assert (mine["kind"], mine["reason"], mine["outcome"]) == ("direct", "hung_up", "answered")
    assert {m["login"]: m["outcome"] for m in mine["members"]} == {
        "alice": "answered",
        "bob": "answered",
    }
    assert record(bob, busy["id"])["outcome"] == "busy"
    assert record(carol, busy["id"])["outcome"] == "busy"


def test_declined_cancelled_and_missed_calls_are_recorded(
    live: Live, people: dict[str, Person]
) -> None:
    alice, bob = people["alice"], people["bob"]

    declined = alice.ok("POST", "/api/calls", {"kind": "direct", "invite": ["bob"]}, 201)["id"]
    bob.call_frame(declined, state="ringing")
    r = alice.call("POST", f"/api/calls/{declined}/decline")  # not rung: nothing to decline
    assert r.status == 409 and r.json() == {"error": "this call is not ringing for you"}
    assert bob.ok("POST", f"/api/calls/{declined}/decline")["reason"] == "declined"
    alice.call_frame(declined, state="ended", reason="declined")
    assert record(alice, declined)["outcome"] == "declined"
    assert record(bob, declined)["outcome"] == "declined"

    cancelled = alice.ok("POST", "/api/calls", {"kind": "direct", "invite": ["bob"]}, 201)["id"]
    bob.call_frame(cancelled, state="ringing")
    alice.ok("POST", f"/api/calls/{cancelled}/leave")
    gone = bob.call_frame(cancelled, state="ended")
    assert gone["reason"] == "cancelled" and member(gone, "bob")["state"] == "missed"
    assert record(bob, cancelled)["outcome"] == "missed"
    assert record(alice, cancelled)["outcome"] == "cancelled"

    missed = alice.ok("POST", "/api/calls", {"kind": "direct", "invite": ["bob"]}, 201)["id"]
    bob.call_frame(missed, state="ringing")
    live.clock.tick(RING - dt.timedelta(seconds=1))
    assert bob.ok("GET", f"/api/calls/{missed}")["state"] == "ringing"
    live.clock.tick(dt.timedelta(seconds=2))  # past the ring time: the edge notices
    gone = bob.call_frame(missed, state="ended")
    assert gone["reason"] == "missed" and member(gone, "bob")["state"] == "missed"
    alice.call_frame(missed, state="ended", reason="missed")
    assert record(bob, missed)["outcome"] == "missed"
    assert record(alice, missed)["outcome"] == "missed"
    history = [r["id"] for r in bob.ok("GET", "/api/calls/history?limit=3")["records"]]
    assert history == [missed, cancelled, declined]  # newest first
    # each ended call's record is queued for the core once (event "call", metadata only)
    conn = sqlite3.connect(live.config.db)
    try:
        sent = [
            json.loads(data)
            for (data,) in conn.execute(
                "SELECT data FROM fed_outbox WHERE kind = 'zastava.event.call' ORDER BY id"
            )
        ]
    finally:
        conn.close()
    by_id = {e["id"]: e for e in sent}
    assert len(by_id) == len(sent) and {declined, cancelled, missed} <= set(by_id)
    assert by_id[missed]["reason"] == "missed"
    assert {m["login"]: m["outcome"] for m in by_id[declined]["members"]} == {
        "alice": "declined",
        "bob": "declined",
    }

    # refusals with reasons
    r = alice.call("POST", "/api/calls", {"kind": "direct", "invite": ["dave"]})
    assert r.status == 400 and "not a person of a plant this edge reaches" in r.json()["error"]
    r = alice.call("POST", "/api/calls", {"kind": "direct", "invite": ["bob", "carol"]})
    assert r.status == 400 and r.json() == {"error": "a 1:1 call rings exactly one other person"}
    r = alice.call("POST", "/api/calls", {"kind": "direct", "invite": ["alice"]})
    assert r.status == 400 and r.json() == {"error": "nobody to call"}
    r = alice.call("POST", "/api/calls", {"kind": "video", "invite": ["bob"]})
    assert r.status == 400 and "kind" in r.json()["error"]


def test_a_meeting_from_a_conversation_with_a_moderator(
    live: Live, people: dict[str, Person]
) -> None:
    alice, bob, carol, mallory = (people[x] for x in PEOPLE)
    group = alice.ok(
        "POST", "/api/chat/groups", {"name": "Смена", "members": ["bob", "carol", "dave"]}
    )
    r = mallory.call("POST", "/api/calls", {"kind": "meeting", "conversation": group["id"]})
    assert r.status == 404  # not a member of the conversation
    meeting = alice.ok(
        "POST", "/api/calls", {"kind": "meeting", "conversation": group["id"]}, status=201
    )
    mid = meeting["id"]
    assert meeting["state"] == "active" and meeting["conversation"] == group["id"]
    # the members of this plant are rung; dave (plant B) is not
    assert {m["login"]: m["state"] for m in meeting["members"]} == {
        "alice": "joined",
        "bob": "ringing",
        "carol": "ringing",
    }
    bob.call_frame(mid)
    carol.call_frame(mid)
    bob.ok("POST", f"/api/calls/{mid}/join")
    assert carol.ok("POST", f"/api/calls/{mid}/decline")["state"] == "active"
    assert mallory.call("POST", f"/api/calls/{mid}/join").status == 404  # not invited

    # only the moderator mutes or removes; a participant may ring more people
    r = bob.call("POST", f"/api/calls/{mid}/participants/alice/mute")
    assert (r.status, r.json()) == (403, {"error": "only the moderator can do this"})
    assert bob.call("DELETE", f"/api/calls/{mid}/participants/alice").status == 403
    invited = bob.ok("POST", f"/api/calls/{mid}/invite", {"logins": ["mallory", "carol"]})
    assert member(invited, "mallory")["state"] == "ringing"
    assert member(invited, "carol")["state"] == "ringing"  # rung again after declining
    mallory.call_frame(mid)
    mallory.ok("POST", f"/api/calls/{mid}/join")

    muted = alice.ok("POST", f"/api/calls/{mid}/participants/bob/mute")
    assert member(muted, "bob")["audio_muted"] and member(muted, "bob")["held"]
    bob.frame(lambda f: f["type"] == "call" and member(f["call"], "bob")["held"])  # told
    unmuted = bob.ok("PUT", f"/api/calls/{mid}/mute", {"audio": False, "video": False})
    assert not member(unmuted, "bob")["held"]

    removed = alice.ok("DELETE", f"/api/calls/{mid}/participants/mallory")
    assert member(removed, "mallory")["state"] == "removed"
    r = mallory.call("POST", f"/api/calls/{mid}/join")
    assert (r.status, r.json()) == (403, {"error": "the moderator removed you from this meeting"})

    bob.ok("POST", f"/api/calls/{mid}/leave")
    assert alice.ok("GET", f"/api/calls/{mid}")["state"] == "active"
    live.clock.tick(RING + dt.timedelta(seconds=1))  # carol never answers the second ring
    alice.call_frame(mid, state="active")
    eventually(
        lambda: member(alice.ok("GET", f"/api/calls/{mid}"), "carol")["state"] == "missed",
        "carol's ring ran out",
    )
    ended = alice.ok("POST", f"/api/calls/{mid}/leave")
    assert (ended["state"], ended["reason"]) == ("ended", "empty")
    outcomes = {m["login"]: m["outcome"] for m in record(alice, mid)["members"]}
    assert outcomes == {
        "alice": "answered",
        "bob": "answered",
        "carol": "missed",
        "mallory": "answered",
    }


# Media through the SFU


async def polled(check: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    """``check`` (blocking: requests) in a thread until it holds."""
    await asyncio.to_thread(eventually, check, what, limit)


def clip() -> Clip:
    return make_clip(seconds=4.0, fps=10, width=160, height=120, bitrate=150_000)


def answer_sdp(offer: str) -> str:
    """An SDP shaped like an answer (for a request that must be refused before use)."""
    return offer.replace("a=setup:actpass", "a=setup:active")


def malformed(offer: str) -> list[tuple[str, str]]:
    """Offers that must be refused, each with (part of) the reason the answer gives."""
    cand = r"(a=candidate:\S+ \d \S+ \d+ )(\S+) (\d+)"
    return [
        ("", "the SDP is empty"),
        ("hello", "the SDP must start with v=0"),
        ("v=0\r\nnot sdp\r\n", "SDP line 2 is not of the form x=value"),
        ("v=0\r\ns=\x00\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "SDP line 2 holds a control"),
        ("v=0\r\ns=-\r\n", "the SDP has no media section (m=)"),
        ("v=0\r\nm=video x\r\n", "the SDP has no ICE username fragment"),
        (re.sub(r"a=fingerprint:[^\r]*\r\n", "", offer), "no DTLS fingerprint"),
        (re.sub(r"a=candidate:[^\r]*", "a=candidate:x", offer), "not an ICE candidate"),
        (re.sub(cand, r"\g<1>evil.example \3", offer), "neither an IP address nor an mDNS"),
        (re.sub(cand, r"\g<1>999.1.1.1 \3", offer), "neither an IP address nor an mDNS"),
        (re.sub(cand, r"\g<1>\2 99999", offer), "port 99999 is not a port"),
        # shaped right, refused by aiortc's parser: its reason is passed on
        (re.sub(r"VP8/90000", "VP8/fast", offer), "publish offer was refused: invalid literal"),
        (offer.replace("a=setup:actpass", "a=setup:bogus"), "publish offer was refused"),
    ]


def test_w5_malformed_sdp_is_refused_and_the_sfu_serves_on(
    live: Live, people: dict[str, Person]
) -> None:
    alice, bob = people["alice"], people["bob"]
    cid = alice.ok("POST", "/api/calls", {"kind": "direct", "invite": ["bob"]}, 201)["id"]
    bob.ok("POST", f"/api/calls/{cid}/join")

    async def scenario() -> None:
        def post(person: Person, path: str, body: object = None) -> Any:
            return asyncio.to_thread(person.call, "POST", path, body)

        publisher = Publisher(clip())
        offer = await publisher.offer()
        r = await post(alice, f"/api/calls/{cid}/publish", {"sdp": offer.sdp})
        assert r.status == 200, r.body
        await publisher.pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))

        await polled(lambda: len(bob_publications()) == 2, "alice's two publications")

        # W5: a malformed answer closes bob's subscribe connection and nothing else
        r = await post(bob, f"/api/calls/{cid}/subscribe")
        assert r.status == 200 and r.json()["sdp"] is not None, r.body
        r = await post(bob, f"/api/calls/{cid}/answer", {"sdp": "v=0\r\nm=audio\r\n"})
        assert r.status == 400 and "no ICE username fragment" in r.json()["error"]
        # refused before any parser saw it: the offer still waits; an offer as the answer
        # reaches aiortc, which refuses it, and the subscribe connection is closed
        r = await post(bob, f"/api/calls/{cid}/answer", {"sdp": offer.sdp})
        assert r.status == 400 and "subscribe answer was refused: DTLS setup" in r.json()["error"]
        r = await post(bob, f"/api/calls/{cid}/answer", {"sdp": answer_sdp(offer.sdp)})
        assert (r.status, r.json()) == (409, {"error": "there is no subscribe offer to answer"})

        subscriber = Subscriber()
        r = await post(bob, f"/api/calls/{cid}/subscribe")  # a new connection
        assert r.status == 200, r.body
        offered = r.json()
        assert offered["sdp"] is not None
        assert offered["slots"] == []  # none until answered
        answer = await subscriber.answer(RTCSessionDescription(offered["sdp"], "offer"))
        r = await post(bob, f"/api/calls/{cid}/answer", {"sdp": answer.sdp})
        assert r.status == 200, r.body
        slots = r.json()["slots"]
        assert sorted(s["kind"] for s in slots) == ["audio", "video"]
        assert {s["publication"]["login"] for s in slots} == {"alice"}
        await wait_for(lambda: subscriber.received.frames["video"] >= 10, 10, "video at bob")

        # W5: each malformed offer is refused with its reason; bob keeps receiving
        for sdp, reason in malformed(offer.sdp):
            r = await post(bob, f"/api/calls/{cid}/publish", {"sdp": sdp})
            assert r.status == 400 and reason in r.json()["error"], (reason, r.body)
        r = await post(bob, f"/api/calls/{cid}/publish", {"sdp": offer.sdp, "source": "tv"})
        assert r.status == 400 and "source" in r.json()["error"]
        before = subscriber.received.frames["video"]
        await wait_for(
            lambda: subscriber.received.frames["video"] >= before + 10, 10, "video after W5"
        )
        r = await post(alice, f"/api/calls/{cid}/publish", {"sdp": offer.sdp})
        assert r.status == 409 and "already publishing" in r.json()["error"]

        await subscriber.close()
        await publisher.close()

    def bob_publications() -> list[dict[str, Any]]:
        return list(bob.ok("GET", f"/api/calls/{cid}")["publications"])

    asyncio.run(asyncio.wait_for(scenario(), 40))
    bob.ok("POST", f"/api/calls/{cid}/leave")
