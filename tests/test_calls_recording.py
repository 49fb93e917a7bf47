"""Recording a meeting over the real edge server (issue 7): the moderator starts and stops it
while two participants publish, the meeting's end stops it too, and only who was in the
meeting while it recorded lists and downloads it; someone who joins while it records is in
it, tracks of their own from when they came, and may download it too.

Theory of operation
-------------------
The server, the people and their WebSockets are those of ``tests/test_calls_api.py`` (its
module fixtures, imported: one server for this module). alice (the moderator) and bob publish
pre-encoded VP8 + Opus from headless aiortc clients (``bench.sfu_clients``) through the
edge's SFU; the recordings land under the edge's ``data_dir/recordings``. The download is
read over HTTPS and opened with PyAV, which must find both participants' tracks and decode
video frames from it. carol was rung and declined (a member of the call, never in it), mallory
was never invited, and a guest let in from the lobby holds a pass: none of them gets a
recording.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from typing import Any

import av
import pytest
from aiortc import RTCSessionDescription

from bench.sfu_clients import Publisher, make_clip
from tests.test_calls_api import Person, clip, live, member, people, polled
from tests.test_calls_guests import Guest, new_link
from tests.test_edge_server import Live

__all__ = ["live", "people"]  # module fixtures of tests/test_calls_api.py, used here

pytestmark = pytest.mark.slow

RECORD_SECONDS = 2.5
media = clip()  # the publishers' frames, encoded once


def recording_frame(person: Person, cid: str, recording: bool) -> dict[str, Any]:
    return person.call_frame(cid, recording=recording)


def listed(person: Person, cid: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = person.ok("GET", f"/api/calls/{cid}/recordings")["recordings"]
    return found


def test_a_meeting_is_recorded_listed_and_downloaded_by_its_participants_only(
    live: Live, people: dict[str, Person]
) -> None:
    alice, bob, carol, mallory = (people[x] for x in ("alice", "bob", "carol", "mallory"))
    call = alice.ok("POST", "/api/calls", {"kind": "meeting", "invite": ["bob", "carol"]}, 201)
    cid = call["id"]
    assert call["recording"] is False
    bob.call_frame(cid)
    bob.ok("POST", f"/api/calls/{cid}/join")
    carol.ok("POST", f"/api/calls/{cid}/decline")

    # nothing is published yet: nothing to record
    r = alice.call("POST", f"/api/calls/{cid}/recording", {"recording": True})
    assert r.status == 409 and "nothing to record" in r.json()["error"], r.body

    async def publish(person: Person) -> Publisher:
        publisher = Publisher(clip())
        offer = await publisher.offer()
        r = await asyncio.to_thread(
            person.call, "POST", f"/api/calls/{cid}/publish", {"sdp": offer.sdp}
        )
        assert r.status == 200, r.body
        await publisher.pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
        return publisher

    def publications() -> int:
        return len(alice.ok("GET", f"/api/calls/{cid}")["publications"])

    def post(person: Person, path: str, body: object = None) -> Any:
        return asyncio.to_thread(person.call, "POST", path, body)

    # a guest let in while it records gets nothing: the routes are for sessions of this plant
    guest = Guest(live)
    outcome: dict[str, Any] = {}

    def let_a_guest_in() -> None:
        gid = guest.enter(new_link(alice, cid)["token"], "Гость").json()["id"]
        alice.ok("POST", f"/api/calls/{cid}/lobby/{gid}/admit")

    async def scenario() -> None:
        publishers = [await publish(alice), await publish(bob)]
        try:
            await polled(lambda: publications() == 4, "alice's and bob's publications", 10)

            # only the moderator records; the others are told
            r = await post(bob, f"/api/calls/{cid}/recording", {"recording": True})
            assert (r.status, r.json()) == (403, {"error": "only the moderator can do this"})
            r = await post(mallory, f"/api/calls/{cid}/recording", {"recording": True})
            assert (r.status, r.json()) == (404, {"error": "no such call"})
            r = await post(alice, f"/api/calls/{cid}/recording", {"recording": True})
            assert r.status == 200 and r.json()["recording"] is True, r.body
            await asyncio.to_thread(recording_frame, bob, cid, True)
            r = await post(alice, f"/api/calls/{cid}/recording", {"recording": True})
            assert r.status == 409 and "recorded already" in r.json()["error"]
            await asyncio.sleep(RECORD_SECONDS)
            r = await post(bob, f"/api/calls/{cid}/recording", {"recording": False})
            assert r.status == 403
            r = await post(alice, f"/api/calls/{cid}/recording", {"recording": False})
            assert r.status == 200 and r.json()["recording"] is False, r.body
            await asyncio.to_thread(recording_frame, bob, cid, False)
            r = await post(alice, f"/api/calls/{cid}/recording", {"recording": False})
            assert r.status == 409 and "not being recorded" in r.json()["error"]

            # a second recording (a minute later on the edge's clock), stopped by the end of
            # the meeting
            live.clock.tick(dt.timedelta(minutes=1))
            r = await post(alice, f"/api/calls/{cid}/recording", {"recording": True})
            assert r.status == 200 and r.json()["recording"] is True, r.body
            await asyncio.sleep(1.5)
            assert len(listed(alice, cid)) == 1  # a running recording is not listed yet
            await asyncio.to_thread(let_a_guest_in)
            await post(bob, f"/api/calls/{cid}/leave")
            r = await post(alice, f"/api/calls/{cid}/leave")  # the meeting ends
            assert r.status == 200, r.body
            outcome["ended"] = r.json()
        finally:
            for publisher in publishers:
                await publisher.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))

    ended = outcome["ended"]
    assert (ended["state"], ended["reason"], ended["recording"]) == ("ended", "empty", False)

    first, second = mine = listed(alice, cid)
    assert listed(bob, cid) == mine
    assert second["started_ms"] - first["started_ms"] == 60_000
    assert abs(first["duration_ms"] / 1000 - RECORD_SECONDS) < 1.0, first
    assert 1000 <= second["duration_ms"] <= 4000, second
    assert all(r["size"] > 10_000 for r in mine), mine

    # carol was a member but never in: an empty list; mallory, never invited: 404
    assert listed(carol, cid) == []
    for person in (carol, mallory):
        for path in (f"/api/calls/{cid}/recordings/{first['id']}", "/api/calls/x/recordings/y"):
            r = person.call("GET", path)
            assert (r.status, r.json()) == (404, {"error": "no such recording"}), (path, r.body)
    for path in (f"/api/calls/{cid}/recordings", "/api/calls/made-up/recordings"):
        r = mallory.call("GET", path)
        assert (r.status, r.json()) == (404, {"error": "no such call"})
    for path in (f"/api/calls/{cid}/recordings", f"/api/calls/{cid}/recordings/{first['id']}"):
        r = guest.call("GET", path)
        assert r.status == 401, (path, r.status, r.body)
    for bad in ("..", "%2E%2E", "a%2Fb", first["id"] + ".json"):
        r = bob.call("GET", f"/api/calls/{cid}/recordings/{bad}")
        assert r.status == 404, (bad, r.status, r.body)

    # the download: a WebM attachment that PyAV opens and decodes
    for person, recording in ((bob, first), (alice, second)):
        r = person.call("GET", f"/api/calls/{cid}/recordings/{recording['id']}")
        assert r.status == 200, r.body
        assert r.headers["Content-Type"] == "video/webm"
        assert r.headers["Content-Disposition"].startswith("attachment; filename*=UTF-8''")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert len(r.body) == recording["size"] == int(r.headers["Content-Length"])
        assert r.body[:4] == b"\x1a\x45\xdf\xa3"  # EBML
        sent = {"video": set(media.video) | set(media.keyframes), "audio": set(media.audio)}
        with av.open(io.BytesIO(r.body), mode="r", format="webm") as container:
            kinds = sorted(s.codec_context.name for s in container.streams)
            assert kinds == ["opus", "opus", "vp8", "vp8"]  # alice's and bob's
            # libvpx, as in the browsers: ffmpeg's own VP8 decoder refuses the test
            # publisher's inter frames after a substituted keyframe (bench.sfu_clients)
            videos = {s.index for s in container.streams.video}
            decoders = {i: av.CodecContext.create("libvpx", "r") for i in videos}
            packets = {s.index: 0 for s in container.streams}
            frames = dict.fromkeys(videos, 0)
            for packet in container.demux():
                if packet.size == 0:
                    continue
                kind = packet.stream.type
                assert bytes(packet) in sent[kind], f"a {kind} frame that was not sent"
                packets[packet.stream.index] += 1
                if kind == "video":
                    index = packet.stream.index
                    frames[index] += len(decoders[index].decode(packet))
        assert all(packets.values()), packets  # every track has frames
        assert all(frames[i] == packets[i] for i in videos), (frames, packets)

    # the files are where the edge's data lives, each with its sidecar
    directory = live.config.data_dir / "recordings" / cid
    sidecars = sorted(directory.glob("*.json"))
    assert [p.stem for p in sidecars] == [first["id"], second["id"]]
    for sidecar in sidecars:
        assert json.loads(sidecar.read_text())["participants"] == ["alice", "bob"]
    assert member(ended, "carol")["state"] == "declined"


def test_a_late_joiner_is_in_the_recording_and_may_download_it(
    live: Live, people: dict[str, Person]
) -> None:
    """bob joins the meeting after alice started recording it, publishes, and leaves before
    it stops: his audio and video are tracks of the one file (his bytes, from when he came to
    when he left, decodable), and he, who was never in while it started, lists and
    downloads it; carol, who declined, still gets nothing."""
    alice, bob, carol = (people[x] for x in ("alice", "bob", "carol"))
    call = alice.ok("POST", "/api/calls", {"kind": "meeting", "invite": ["bob", "carol"]}, 201)
    cid = call["id"]
    carol.ok("POST", f"/api/calls/{cid}/decline")
    bob_media = make_clip(seconds=4.0, fps=10, width=176, height=144, bitrate=120_000, tone=660.0)
    sent = {
        "alice": set(media.video) | set(media.keyframes) | set(media.audio),
        "bob": set(bob_media.video) | set(bob_media.keyframes) | set(bob_media.audio),
    }
    assert not sent["alice"] & sent["bob"]

    async def publish(person: Person, frames: Any) -> Publisher:
        publisher = Publisher(frames)
        offer = await publisher.offer()
        r = await asyncio.to_thread(
            person.call, "POST", f"/api/calls/{cid}/publish", {"sdp": offer.sdp}
        )
        assert r.status == 200, r.body
        await publisher.pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
        return publisher

    def publications() -> int:
        return len(alice.ok("GET", f"/api/calls/{cid}")["publications"])

    def post(person: Person, path: str, body: object = None) -> Any:
        return asyncio.to_thread(person.call, "POST", path, body)

    async def scenario() -> None:
        publishers = [await publish(alice, clip())]
        try:
            await polled(lambda: publications() == 2, "alice's publications", 10)
            r = await post(alice, f"/api/calls/{cid}/recording", {"recording": True})
            assert r.status == 200 and r.json()["recording"] is True, r.body
            await asyncio.sleep(1.0)

            await asyncio.to_thread(bob.call_frame, cid)
            r = await post(bob, f"/api/calls/{cid}/join")
            assert r.status == 200 and r.json()["recording"] is True, r.body
            publishers.append(await publish(bob, bob_media))
            await polled(lambda: publications() == 4, "bob's publications", 10)
            await asyncio.sleep(2.0)
            r = await post(bob, f"/api/calls/{cid}/leave")  # his publications end
            assert r.status == 200, r.body
            await polled(lambda: publications() == 2, "bob's publications gone", 10)
            await asyncio.sleep(1.0)
            r = await post(alice, f"/api/calls/{cid}/recording", {"recording": False})
            assert r.status == 200 and r.json()["recording"] is False, r.body
            await post(alice, f"/api/calls/{cid}/leave")
        finally:
            for publisher in publishers:
                await publisher.close()

    asyncio.run(asyncio.wait_for(scenario(), 40))

    (recording,) = listed(bob, cid)
    assert listed(alice, cid) == [recording] and listed(carol, cid) == []
    r = bob.call("GET", f"/api/calls/{cid}/recordings/{recording['id']}")
    assert r.status == 200 and len(r.body) == recording["size"], r.body[:200]
    owners: dict[int, str] = {}
    first: dict[int, float] = {}
    with av.open(io.BytesIO(r.body), mode="r", format="webm") as container:
        kinds = sorted(s.codec_context.name for s in container.streams)
        assert kinds == ["opus", "opus", "vp8", "vp8"]  # alice's and bob's
        videos = {s.index for s in container.streams.video}
        decoders = {i: av.CodecContext.create("libvpx", "r") for i in videos}
        frames = dict.fromkeys(videos, 0)
        packets: dict[int, int] = {}
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None or packet.time_base is None:
                continue
            index = packet.stream.index
            whose = [who for who, theirs in sent.items() if bytes(packet) in theirs]
            assert len(whose) == 1, f"stream {index}: a frame nobody sent"
            assert owners.setdefault(index, whose[0]) == whose[0], f"stream {index} mixes"
            first.setdefault(index, float(packet.pts * packet.time_base))
            packets[index] = packets.get(index, 0) + 1
            if index in videos:
                frames[index] += len(decoders[index].decode(packet))
    assert sorted(owners.values()) == ["alice", "alice", "bob", "bob"], owners
    assert all(frames[i] == packets[i] > 5 for i in videos), (frames, packets)
    # bob's tracks begin a second or more into the file, alice's at its start
    assert all(first[i] >= 0.8 for i, who in owners.items() if who == "bob"), first
    assert all(first[i] < 1.0 for i, who in owners.items() if who == "alice"), first
    sidecar = live.config.data_dir / "recordings" / cid / f"{recording['id']}.json"
    assert json.loads(sidecar.read_text())["participants"] == ["alice", "bob"]
