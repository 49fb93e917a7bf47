"""Bridge legs between plants (edge/calls/bridge.py), the edge's media half: two (or three)
plants' rooms in one process, joined SFU to SFU through a real coturn on loopback with
relay-only ICE (THREATS C3), real aiortc publishers and viewers at each plant.

Each plant is a :class:`LocalMedia` with its :class:`Bridges`; the signalling between the
plants is an in-memory transport that passes JSON (the real one is signed, end-to-end
encrypted envelopes over the relay) and grants TURN credentials minted with
``sync.turn.issue`` from the test turnserver's secret, as the relay does. Publishers send
pre-encoded VP8 + Opus (``bench.sfu_clients``); viewers decode and count frames per mid.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from bench.sfu_clients import Publisher, wait_for
from edge.calls import bridge as bridge_wire
from edge.calls.bridge import BridgeConfig, Bridges, LegState, LegStatus
from edge.calls.local_media import LocalMedia
from edge.calls.media import (
    BridgeError,
    BridgeLink,
    LinkState,
    MediaEvent,
    RemotePublished,
    RemoteUnpublished,
    Source,
)
from sync import turn
from tests.test_calls_media import Viewer, clip, grows, publish, still, subscribe
from tests.test_sfu_room import CodecWatch
from tests.test_turn import Turnserver, config, relay_range, start_turnserver, udp_port

ROOM = "call-1"  # tests.test_calls_media's helpers use this room
A, B, C = "plant-a", "plant-b", "plant-c"


def run(test: Callable[[], Awaitable[None]], limit: float = 120) -> None:
    asyncio.run(asyncio.wait_for(test(), limit))


@pytest.fixture
def turnserver(tmp_path: Path) -> Iterator[Turnserver]:
    """coturn on 127.0.0.1 as the relay runs it (sync.turn.render), loopback peers allowed:
    both ends of every leg are allocations on it."""
    c = config(tmp_path, port=udp_port(), relay_ports=relay_range())
    turn.write_secret(c.secret_file, turn.new_secret())
    c.state_dir.mkdir(mode=0o700)
    text = turn.render(
        c, secret=turn.load_secret(c.secret_file), peers=[], allow_loopback_peers=True
    )
    c.conf_file.write_text(text + "verbose\n")
    c.conf_file.chmod(0o600)
    ts = start_turnserver(c)
    try:
        yield ts
    finally:
        ts.stop()


class Fabric:
    """The plants' signalling and the relay's TURN grants, in memory. Every message goes
    through JSON (plain data only) and is kept for the test to look at."""

    def __init__(self, ts: Turnserver) -> None:
        self.ts = ts
        self.secret = turn.load_secret(ts.config.secret_file)
        self.plants: dict[str, Plant] = {}
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.grants: list[tuple[str, str]] = []
        self.passwords: list[str] = []  # every credential granted (a secret: never shown)
        self.bad_grants: dict[str, str] = {}  # site -> "forged" | "expired"

    async def send(self, origin: str, site: str, message: dict[str, Any]) -> None:
        data = json.loads(json.dumps(message))
        self.sent.append((origin, site, data))
        target = self.plants.get(site)
        if target is not None:
            await target.bridges.receive(origin, data)

    async def grant(self, origin: str, site: str, room: str) -> dict[str, Any]:
        self.grants.append((origin, site))
        now, secret = dt.datetime.now(dt.UTC), self.secret
        bad = self.bad_grants.get(origin)
        if bad == "forged":
            secret = turn.new_secret()
        if bad == "expired":
            now -= dt.timedelta(hours=2)
        cred = turn.issue(secret, f"{room}.{origin}.{site}", now=now, ttl=dt.timedelta(hours=1))
        host, port = self.ts.address
        self.passwords.append(cred.password)
        return {
            "urls": [f"turn:{host}:{port}?transport=udp"],
            "username": cred.username,
            "credential": cred.password,
        }

    def messages(self, kind: str, origin: str | None = None) -> list[dict[str, Any]]:
        return [m for o, _, m in self.sent if m["type"] == kind and origin in (None, o)]


class SiteTransport:
    def __init__(self, fabric: Fabric, site: str) -> None:
        self.fabric, self.site = fabric, site

    async def send(self, site: str, message: dict[str, Any]) -> None:
        await self.fabric.send(self.site, site, message)

    async def grant(self, site: str, room: str, *, answering: bool = False) -> dict[str, Any]:
        return await self.fabric.grant(self.site, site, room)


FAST = BridgeConfig(retry_initial=0.3, retry_max=2.0, connect_timeout=20.0, answer_timeout=20.0)


class Plant:
    """One edge's media side and its bridges; every media event goes to both the test's
    list and the bridges (as the edge routes them to the call service and the bridges)."""

    def __init__(self, fabric: Fabric, site: str) -> None:
        self.site = site
        self.events: list[MediaEvent] = []
        self.statuses: list[LegStatus] = []
        self.media = LocalMedia(self._event)
        self.bridges = Bridges(
            self.media,
            SiteTransport(fabric, site),
            site=site,
            config=FAST,
            on_status=self.statuses.append,
        )
        fabric.plants[site] = self

    async def _event(self, event: MediaEvent) -> None:
        self.events.append(event)
        await self.bridges.on_media(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def remote(self) -> dict[str, tuple[str, str, str]]:
        """Live remote publications: id -> (login, site, kind)."""
        live: dict[str, tuple[str, str, str]] = {}
        for e in self.events:
            if isinstance(e, RemotePublished):
                p = e.publication
                live[p.id] = (p.participant, str(p.site), p.kind)
            elif isinstance(e, RemoteUnpublished):
                live.pop(e.publication.id, None)
        return live

    def remote_of(self, login: str, kind: str) -> str | None:
        return next((k for k, v in self.remote().items() if v[0] == login and v[2] == kind), None)

    def leg(self, site: str) -> bridge_wire.BridgeLeg:
        leg = self.bridges.leg(ROOM, site)
        assert leg is not None
        return leg

    async def close(self) -> None:
        await self.bridges.close_all()
        await self.media.close()


def relay_pairs(pc: RTCPeerConnection) -> list[tuple[str, str]]:
    """(local type, remote type) of the nominated ICE pair of each transport in use."""
    pairs = []
    for transport in {
        id(t.receiver.transport): t.receiver.transport for t in pc.getTransceivers()
    }.values():
        connection = transport.transport._connection  # aioice
        for pair in connection._nominated.values():
            pairs.append((pair.local_candidate.type, pair.remote_candidate.type))
    return pairs


def sockets_to(pc: RTCPeerConnection) -> set[tuple[str, int]]:
    """Where every socket the connection's ICE agent holds sends: a relay-only agent holds
    only TURN client sockets, connected to the TURN server (so every datagram of it goes
    to the TURN port)."""
    peers = set()
    for t in pc.getTransceivers():
        connection = t.receiver.transport.transport._connection
        for protocol in connection._protocols:
            assert protocol.local_candidate.type == "relay", protocol.local_candidate
            inner = getattr(protocol.transport, "_TurnTransport__inner_protocol")  # noqa: B009
            peers.add(inner.transport.get_extra_info("peername"))
    return peers


_USAGE = re.compile(
    r"session \d+: usage: realm=<[^>]*>, username=<\d+:[^.>]+\.([a-z0-9-]+)\.[a-z0-9-]+>, "
    r"rp=(\d+), rb=\d+, sp=(\d+)"
)


async def wait_for_usage(ts: Turnserver, sessions: int) -> dict[str, int]:
    """Packets coturn sent to each plant's allocations (``sp`` of its usage lines), once
    ``sessions`` allocations have ended and logged their usage."""
    await wait_for(lambda: len(_USAGE.findall(ts.log())) >= sessions, 30, "usage lines")
    relayed: dict[str, int] = {}
    for site, _, sent in _USAGE.findall(ts.log()):
        relayed[site] = relayed.get(site, 0) + int(sent)
    return relayed


def connected(plant: Plant, site: str) -> Callable[[], bool]:
    return lambda: plant.leg(site).state is LegState.CONNECTED


def remote_count(plant: Plant, n: int) -> Callable[[], bool]:
    return lambda: len(plant.remote()) == n


async def video_grows(viewer: Viewer, mid: str, by: int = 10, limit: float = 30) -> None:
    start = viewer.frames[mid]
    await wait_for(lambda: viewer.frames[mid] >= start + by, limit, f"{by} frames on mid {mid}")


async def view(plant: Plant, login: str, viewer: Viewer) -> dict[str, str | None]:
    """The viewer's slots (mid -> publication) after subscribing to what is there now."""
    return await subscribe(plant.media, login, viewer)


def mid_of(slots: dict[str, str | None], publication: str | None) -> str:
    assert publication is not None
    return next(mid for mid, pub in slots.items() if pub == publication)


@pytest.mark.slow
def test_a_leg_carries_each_plants_media_to_the_other_through_turn_only(
    turnserver: Turnserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ivanov publishes at A, sidorov at B; petrov at B decodes ivanov's video and kuznetsov
    at A decodes sidorov's, through both SFUs' slots and a leg that is relay-only through
    the TURN server; no SFU builds a decoder or an encoder (C3)."""
    watch = CodecWatch(monkeypatch)

    async def scenario() -> None:
        fabric = Fabric(turnserver)
        a, b = Plant(fabric, A), Plant(fabric, B)
        ivanov, sidorov = Publisher(clip()), Publisher(clip())
        petrov, kuznetsov = Viewer(), Viewer()
        try:
            await publish(a.media, "ivanov", ivanov)
            await publish(b.media, "sidorov", sidorov)
            await a.bridges.open(ROOM, B)
            await b.bridges.open(ROOM, A)
            await wait_for(lambda: len(b.remote()) == 2 and len(a.remote()) == 2, 30, "remote")
            assert sorted(b.remote().values()) == [
                ("ivanov", A, "audio"),
                ("ivanov", A, "video"),
            ]
            assert sorted(v[:2] for v in a.remote().values()) == [(("sidorov", B))] * 2
            source = {e.publication.source for e in b.of(RemotePublished)}
            assert source == {Source.CAMERA}
            await b.media.join(ROOM, "petrov")
            await a.media.join(ROOM, "kuznetsov")
            at_b = await view(b, "petrov", petrov)
            at_a = await view(a, "kuznetsov", kuznetsov)
            # a plant's own publications are offered to its viewers, and the other's
            assert len(at_b) == 4 and len(at_a) == 4
            await video_grows(petrov, mid_of(at_b, b.remote_of("ivanov", "video")))
            await video_grows(kuznetsov, mid_of(at_a, a.remote_of("sidorov", "video")))
            for plant, other in ((a, B), (b, A)):
                await wait_for(connected(plant, other), 10, f"{plant.site}'s leg up")

            # relay only: both connections of the leg at both ends use a relay candidate
            # pair and hold no socket but TURN clients of this server
            for plant, other in ((a, B), (b, A)):
                pcs = plant.media.bridge_peer_connections(ROOM, other)
                assert sorted(pcs) == ["in", "out"]
                for pc in pcs.values():
                    assert relay_pairs(pc) == [("relay", "relay")]
                    assert sockets_to(pc) == {turnserver.address}
            # one fresh grant per connection and end, and the grants went to the SDPs only
            assert sorted(fabric.grants) == [(A, B), (A, B), (B, A), (B, A)]
            for _, _, message in fabric.sent:
                assert "credential" not in json.dumps(message)
                if "sdp" in message:
                    assert bridge_wire.candidate_types(message["sdp"]) == {"relay"}

            # the SFUs forwarded, never decoded or encoded; the clients did (the watch works)
            assert watch.built_by(a.media.rooms()[ROOM]) == (0, 0)
            assert watch.built_by(b.media.rooms()[ROOM]) == (0, 0)
            assert len(watch.decoders) >= 4 and len(watch.encoders) >= 2
            assert fabric.secret not in turnserver.log()
            for plant, other in ((a, B), (b, A)):
                incoming = plant.media.bridge_peer_connections(ROOM, other)["in"]
                for _ in range(100):  # media flows on: wait for over 100 packets (a busy
                    stats = await incoming.getStats()  # host may not be there yet)
                    received[plant.site] = sum(
                        s.packetsReceived for s in stats.values() if s.type == "inbound-rtp"
                    )
                    if received[plant.site] > 100:
                        break
                    await asyncio.sleep(0.2)
        finally:
            for client in (ivanov, sidorov, petrov, kuznetsov):
                await client.close()
            await a.close()
            await b.close()
        # counted on the relay's side: coturn (verbose) logs each allocation's packets when
        # it ends; what it relayed to each plant is at least what that plant's SFU received
        # from the other over the leg (RTP only: RTCP, STUN and DTLS come on top)
        relayed = await wait_for_usage(turnserver, 4)
        print(f"coturn relayed to each plant {relayed}; RTP its SFU received {received}")
        for site in (A, B):
            assert relayed[site] >= received[site] > 100, (relayed, received)

    received: dict[str, int] = {}
    run(scenario)


@pytest.mark.slow
def test_publishers_come_and_go_across_the_leg_and_a_lost_connection_is_made_again(
    turnserver: Turnserver,
) -> None:
    """A publisher joining at A appears at B (renegotiation: a new slot on the same
    connection); one leaving at A ends at B (its slot goes inactive); A's connection losing
    its TURN allocation is made again by A with a new grant, and B's viewer decodes again."""

    async def scenario() -> None:
        fabric = Fabric(turnserver)
        a, b = Plant(fabric, A), Plant(fabric, B)
        ivanov, smirnov = Publisher(clip()), Publisher(clip())
        petrov = Viewer()
        try:
            await publish(a.media, "ivanov", ivanov)
            await a.bridges.open(ROOM, B)
            await b.bridges.open(ROOM, A)
            await b.media.join(ROOM, "petrov")
            await wait_for(lambda: len(b.remote()) == 2, 30, "ivanov's publications at B")
            slots = await view(b, "petrov", petrov)
            ivanov_video = b.remote_of("ivanov", "video")
            await video_grows(petrov, mid_of(slots, ivanov_video))
            leg = a.leg(B)
            first = leg.out_connection
            assert leg.attempts == 1 and first is not None

            # the moderator at A holds ivanov's microphone: B hears nothing of it either
            ivanov_audio = mid_of(slots, b.remote_of("ivanov", "audio"))
            await grows(petrov, ivanov_audio, by=20)
            await a.media.hold(ROOM, "ivanov", True)
            assert await still(petrov, ivanov_audio)
            await a.media.hold(ROOM, "ivanov", False)
            await grows(petrov, ivanov_audio, by=20)

            # smirnov joins at A: one renegotiation of the same connection adds his two
            await publish(a.media, "smirnov", smirnov)
            await wait_for(lambda: b.remote_of("smirnov", "video") is not None, 20, "smirnov")
            await wait_for(lambda: len(b.remote()) == 4, 10, "smirnov's audio too")
            assert leg.out_connection == first and leg.attempts == 1
            offers = fabric.messages("offer", A)
            assert [o["fresh"] for o in offers][:1] == [True] and not offers[-1]["fresh"]
            slots = await view(b, "petrov", petrov)
            await video_grows(petrov, mid_of(slots, b.remote_of("smirnov", "video")))

            # smirnov leaves at A: his publications end at B, ivanov's picture goes on
            gone = {b.remote_of("smirnov", "audio"), b.remote_of("smirnov", "video")}
            await a.media.leave(ROOM, "smirnov")
            await wait_for(lambda: b.remote_of("smirnov", "video") is None, 20, "smirnov gone")
            await wait_for(lambda: b.remote_of("smirnov", "audio") is None, 10, "audio gone")
            ended = {e.publication.id for e in b.of(RemoteUnpublished)}
            assert gone <= ended and ivanov_video not in ended
            last = fabric.messages("offer", A)[-1]
            assert sorted(e["login"] for e in last["map"].values()) == ["ivanov", "ivanov"]
            assert " inactive" not in last["sdp"] and "a=inactive" in last["sdp"]
            await video_grows(petrov, mid_of(slots, ivanov_video))

            # A's connection loses its TURN allocation (the ICE transport closes): A makes a
            # new connection with a new grant; B's remote publications end and come back
            grants = len(fabric.grants)
            out = a.media.bridge_peer_connections(ROOM, B)["out"]
            video = next(t for t in out.getTransceivers() if t.kind == "video")
            await video.sender.transport.transport.stop()
            await wait_for(
                lambda: leg.out_connection not in (None, first) and leg.state is LegState.CONNECTED,
                30,
                "a new connection",
            )
            assert leg.attempts == 2 and len(fabric.grants) > grants
            assert any(
                e.state is LinkState.DROPPED and e.connection == first for e in a.of(BridgeLink)
            )
            await wait_for(
                lambda: ivanov_video in {e.publication.id for e in b.of(RemoteUnpublished)},
                20,
                "ended at B",
            )
            await wait_for(lambda: b.remote_of("ivanov", "video") is not None, 20, "back at B")
            again = b.remote_of("ivanov", "video")
            assert again != ivanov_video  # a new id: nothing stale mistaken for the new stream
            slots = await view(b, "petrov", petrov)  # the idle slots are re-pointed
            await video_grows(petrov, mid_of(slots, again))
        finally:
            for client in (ivanov, smirnov, petrov):
                await client.close()
            await a.close()
            await b.close()

    run(scenario)


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["forged", "expired"])
def test_a_leg_without_the_relays_grant_connects_nothing_and_says_why(
    turnserver: Turnserver, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    """C3: plant A's grants are forged (another secret) or expired; its leg gathers no relay
    candidate, sends no offer, says why (the TURN server's 401, the expiry) and keeps
    trying with a new grant each time; B gets nothing."""

    async def scenario() -> None:
        fabric = Fabric(turnserver)
        fabric.bad_grants[A] = bad
        caplog.set_level(logging.DEBUG)
        a, b = Plant(fabric, A), Plant(fabric, B)
        ivanov = Publisher(clip())
        try:
            await publish(a.media, "ivanov", ivanov)
            await a.bridges.open(ROOM, B)
            await b.bridges.open(ROOM, A)
            leg = a.leg(B)
            await wait_for(lambda: len(fabric.grants) >= 3, 30, "attempts with new grants")
            assert leg.state is LegState.RETRYING and leg.reason is not None
            assert "gathered no relay candidate" in leg.reason
            assert "refused the allocation: 401" in leg.reason
            if bad == "expired":
                assert "the TURN credential expired at" in leg.reason
            assert not fabric.messages("offer", A)
            assert not b.remote() and b.media.bridge_peer_connections(ROOM, A) == {}
            pcs = a.media.bridge_peer_connections(ROOM, B).values()  # an attempt may be on
            assert all(pc.connectionState != "connected" for pc in pcs)
            assert all(s.state is not LegState.CONNECTED for s in a.statuses)
            # nothing secret in what the leg says or logs
            said = " ".join(s.reason or "" for s in a.statuses) + caplog.text
            assert fabric.passwords and not any(p in said for p in fabric.passwords)
        finally:
            await ivanov.close()
            await a.close()
            await b.close()

    run(scenario)


@pytest.mark.slow
def test_three_plants_in_a_full_mesh_each_decode_the_other_two(turnserver: Turnserver) -> None:
    """A, B and C each publish one person and open a leg to each other plant; every plant's
    viewer decodes both others' video, and a leg carries only its own plant's publications
    (nothing is sent back or passed on)."""

    async def scenario() -> None:
        fabric = Fabric(turnserver)
        plants = {site: Plant(fabric, site) for site in (A, B, C)}
        people = {A: "ivanov", B: "sidorov", C: "orlov"}
        publishers = {site: Publisher(clip()) for site in plants}
        viewers = {site: Viewer() for site in plants}
        try:
            for site, plant in plants.items():
                await publish(plant.media, people[site], publishers[site])
                for other in plants:
                    if other != site:
                        await plant.bridges.open(ROOM, other)
            for site, plant in plants.items():
                await wait_for(remote_count(plant, 4), 40, f"remote at {site}")
                expected = sorted((people[o], o) for o in plants if o != site)
                assert sorted({v[:2] for v in plant.remote().values()}) == expected
            for site, plant in plants.items():
                await plant.media.join(ROOM, "viewer")
                slots = await view(plant, "viewer", viewers[site])
                for other in plants:
                    if other != site:
                        mid = mid_of(slots, plant.remote_of(people[other], "video"))
                        await video_grows(viewers[site], mid, limit=40)
            for origin, _, message in fabric.sent:
                if message["type"] == "offer":
                    logins = {e["login"] for e in message["map"].values()}
                    assert logins == {people[origin]}
                    assert {e["site"] for e in message["map"].values()} == {origin}
        finally:
            for publisher in publishers.values():
                await publisher.close()
            for viewer in viewers.values():
                await viewer.close()
            for plant in plants.values():
                await plant.close()

    run(scenario, 180)


@pytest.mark.slow
def test_a_tampered_or_malformed_offer_is_refused_with_its_reason(turnserver: Turnserver) -> None:
    """W5 at the receiving SFU: a real offer from A's SFU, altered, is refused by B's media
    side with the reason (and nothing is published); the unaltered one is then taken. An
    offer for a call B has no leg in is answered with a restart saying so."""

    async def scenario() -> None:
        fabric = Fabric(turnserver)
        a, b = Plant(fabric, A), Plant(fabric, B)
        ivanov = Publisher(clip())
        try:
            await publish(a.media, "ivanov", ivanov)
            await a.media.bridge_open(ROOM, B, await fabric.grant(A, B, ROOM))
            offer = await a.media.bridge_offer(ROOM, B)
            entries = {m: {**e, "site": A} for m, e in offer["map"].items()}
            good = {**offer, "map": entries}
            await b.media.bridge_open(ROOM, A, await fabric.grant(B, A, ROOM))
            audio = next(m for m, e in entries.items() if e["kind"] == "audio")
            video = next(m for m, e in entries.items() if e["kind"] == "video")
            host = re.sub(r"typ relay raddr \S+ rport \d+", "typ host", offer["sdp"])
            bad: list[tuple[dict[str, Any], str]] = [
                ({**good, "map": {audio: entries[audio]}}, "but its SDP sends on"),
                ({**good, "map": {**entries, video: {**entries[video], "site": C}}}, "of plant"),
                (
                    {**good, "map": {**entries, video: {**entries[video], "kind": "audio"}}},
                    "is video",
                ),
                (
                    {**good, "map": {**entries, audio: {**entries[audio], "login": "Ivan Ov"}}},
                    "login",
                ),
                ({**good, "map": {**entries, audio: {**entries[audio], "source": "x"}}}, "source"),
                ({**good, "map": []}, "must be an object"),
                ({**good, "sdp": host}, "candidates of type host"),
                ({**good, "sdp": "v=0\r\nm=video x\r\n"}, "ICE username fragment"),
                ({**good, "fresh": "yes"}, "fresh"),
                ({**good, "fresh": False}, "is not here any more"),
            ]
            for tampered, reason in bad:
                with pytest.raises(ValueError, match=re.escape(reason)):
                    await b.media.bridge_accept(ROOM, A, tampered)
            assert not b.remote() and b.media.bridge_peer_connections(ROOM, A) == {}
            answer = await b.media.bridge_accept(ROOM, A, good)
            await a.media.bridge_answer(ROOM, B, answer)
            assert sorted(v[2] for v in b.remote().values()) == ["audio", "video"]
            with pytest.raises(ValueError, match="no bridge offer"):
                await a.media.bridge_answer(ROOM, B, answer)  # answered already

            # through the transport: B has no leg for another call, and says so
            await b.bridges.receive(A, {**good, "type": "offer", "room": "call-9"})
            (restart,) = fabric.messages("restart", B)
            assert restart["room"] == "call-9" and "has no leg to plant-a" in restart["reason"]
            await b.bridges.receive(A, {"type": "offer", "room": ROOM})  # malformed: dropped
            assert len(fabric.sent) == 1
        finally:
            await ivanov.close()
            await a.close()
            await b.close()

    run(scenario)


# --- the pure checks (no network) ------------------------------------------------------------


def test_messages_maps_and_grants_are_checked_with_reasons() -> None:
    ok = {"type": "answer", "room": "r", "connection": "ab12", "sdp": "v=0"}
    assert bridge_wire.check_message(ok) == ok
    bye = bridge_wire.check_message({"type": "bye", "room": "r", "reason": "x" * 900})
    assert len(bye["reason"]) == bridge_wire.MAX_REASON
    for message, reason in [
        ([], "must be an object"),
        ({"type": "hello", "room": "r"}, "unknown bridge message type"),
        ({"type": "bye"}, "needs its room"),
        ({**ok, "connection": "ZZ"}, "connection id"),
        ({**ok, "sdp": None}, "needs its SDP"),
        ({**ok, "type": "offer", "fresh": 1}, "fresh"),
    ]:
        with pytest.raises(BridgeError, match=re.escape(reason)):
            bridge_wire.check_message(message)

    entry = {"publication": "ivanov~3/1", "login": "ivanov", "site": A, "source": "camera"}
    assert bridge_wire.check_map({"1": {**entry, "kind": "video"}}, A)["1"].source is Source.CAMERA
    with pytest.raises(BridgeError, match="needs publication, login, site, source and kind"):
        bridge_wire.check_map({"1": entry}, A)
    with pytest.raises(BridgeError, match="bad mid"):
        bridge_wire.check_map({"a b": {**entry, "kind": "video"}}, A)
    with pytest.raises(BridgeError, match="more than 512 mids"):
        bridge_wire.check_map({str(i): {} for i in range(513)}, A)

    grant = {"urls": ["turn:10.0.0.1:3478?transport=udp"], "username": "1:x", "credential": "s3"}
    ice = bridge_wire.relay_ice(grant)
    assert ice.urls == ("turn:10.0.0.1:3478?transport=udp",) and "s3" not in repr(ice)
    changes: list[tuple[dict[str, Any], str]] = [
        ({"urls": ["stun:10.0.0.1"]}, "must be turn: (UDP or TCP)"),
        ({"urls": ["turns:10.0.0.1?transport=tcp"]}, "must be turn: (UDP or TCP)"),
        ({"urls": ["http://x"]}, "is not a TURN URL"),
        ({"urls": []}, "needs urls"),
        ({"credential": None}, "needs a username and a credential"),
    ]
    for changed, reason in changes:
        with pytest.raises(BridgeError, match=re.escape(reason)):
            bridge_wire.relay_ice({**grant, **changed})

    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\n"
        "a=candidate:1 1 udp 1 10.0.0.1 5000 typ relay raddr 0.0.0.0 rport 9\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:1\r\na=inactive\r\n"
        "m=video 0 UDP/TLS/RTP/SAVPF 97\r\na=mid:2\r\na=sendonly\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:3\r\n"
    )
    assert bridge_wire.sending_media(sdp) == {"0": "audio", "3": "video"}
    assert bridge_wire.candidate_types(sdp) == {"relay"}
    bridge_wire.check_relay_only(sdp, "plant-b")
    with pytest.raises(BridgeError, match="candidates of type host, srflx"):
        bridge_wire.check_relay_only(
            sdp + "a=candidate:2 1 udp 1 10.0.0.2 5 typ host\r\n"
            "a=candidate:3 1 udp 1 10.0.0.3 5 typ srflx raddr 0.0.0.0 rport 9\r\n",
            "plant-b",
        )
