"""The SFU's fast egress (edge.sfu.egress) with real aiortc peers, and coturn for a relay leg.

On a host-candidate connection the forwarded packets leave through the fast path (libsrtp on
the transport's own session, straight to the nominated pair's socket) and a real aiortc
subscriber authenticates, decrypts and decodes them; on a relay-only connection (a bridge
leg through TURN) every packet goes through aiortc's ``_send_rtp`` and still decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from aiortc.rtp import AnyRtcpPacket, RtcpByePacket, RtcpSrPacket

from bench.sfu_clients import Clip, Publisher, Subscriber, make_clip, wait_for
from edge.sfu import egress as egress_module
from edge.sfu import hooks, native
from edge.sfu.egress import Egress
from edge.sfu.room import RelayIce, Room
from sync import turn
from tests.test_turn import Turnserver, config, relay_range, start_turnserver, udp_port

pytestmark = pytest.mark.slow


def clip() -> Clip:
    return make_clip(seconds=4.0, fps=10, width=160, height=120, bitrate=150_000)


def run(test: Callable[[], Awaitable[None]], limit: float = 90) -> None:
    asyncio.run(asyncio.wait_for(test(), limit))


async def publish(room: Room, name: str, publisher: Publisher) -> None:
    await room.join(name)
    answer = await room.publish(name, await publisher.offer())
    await publisher.pc.setRemoteDescription(answer)


async def subscribe(room: Room, name: str, subscriber: Subscriber) -> None:
    answer = await subscriber.answer(await room.subscribe(name, None))
    await room.answer(name, answer)


def egresses(room: Room) -> list[Egress]:
    found: dict[str, Egress] = room.worker._egress
    return list(found.values())


def transport_stats(room: Room) -> tuple[int, int]:
    """(packets, bytes) sent by the SFU's DTLS transports, as aiortc's getStats counts them."""
    packets = octets = 0
    for pc in room.peer_connections():
        for transceiver in pc.getTransceivers():
            if transceiver.direction == "sendonly":
                stats = transceiver.sender.transport._get_stats()
                for value in stats.values():
                    if value.type == "transport":
                        packets, octets = packets + value.packetsSent, octets + value.bytesSent
                break  # one bundled transport per connection
    return packets, octets


@contextlib.asynccontextmanager
async def alice_to_bob(name: str, seed: int) -> AsyncIterator[tuple[Room, Subscriber]]:
    """A room where alice publishes the clip and bob, on host candidates, receives it."""
    room = Room(name, rng=random.Random(seed))
    alice, bob = Publisher(clip()), Subscriber()
    try:
        await publish(room, "alice", alice)
        await room.join("bob")
        await subscribe(room, "bob", bob)
        yield room, bob
    finally:
        await room.close()
        await alice.close()
        await bob.close()


@pytest.mark.parametrize("c_sender", [True, False], ids=["c-sender", "cffi"])
def test_a_host_connection_takes_the_fast_path_and_the_subscriber_decodes(
    c_sender: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways the fast path protects and sends: the C sender where it is built
    (edge/sfu/_sendpath.c), libsrtp through cffi and the transport's ``sendto`` without it."""
    if not c_sender:
        monkeypatch.setattr(hooks, "_sender", lambda ctx, transport, address: None)

    async def scenario() -> None:
        async with alice_to_bob("egress-host", 1) as (room, bob):
            await wait_for(lambda: bob.received.frames["video"] >= 5, 30, "first frames")
            slots = egresses(room)
            assert len(slots) == 2, slots  # bob's audio and video slots
            slow_before = sum(e.slow for e in slots)
            fast_before = sum(e.fast for e in slots)
            frames_before = dict(bob.received.frames)
            packets_before = dict(bob.received.packets)
            await wait_for(
                lambda: (
                    bob.received.frames["video"] >= frames_before["video"] + 15
                    and bob.received.frames["audio"] >= frames_before["audio"] + 50
                ),
                40,
                "more frames",
            )
            report = (
                f"fast {[e.fast for e in slots]} slow {[e.slow for e in slots]} "
                f"why {[e.why_not_fast for e in slots]} frames {bob.received.frames} "
                f"packets {bob.received.packets}"
            )
            # once connected, every forwarded packet left on the fast path...
            assert all(e.why_not_fast == "" for e in slots), report
            assert sum(e.slow for e in slots) == slow_before, report
            fast = sum(e.fast for e in slots) - fast_before
            received = sum(bob.received.packets.values()) - sum(packets_before.values())
            assert fast >= 60, report
            # ...and the subscriber authenticated and decrypted them (aiortc drops a packet
            # whose SRTP tag fails before its receiver sees it) and decoded the frames
            assert received >= 0.9 * fast, report
            # the transport's statistics count them as aiortc's _send_rtp would
            packets, octets = transport_stats(room)
            assert packets >= sum(e.fast for e in slots), (packets, report)
            assert octets > 100 * packets, (octets, packets)
            senders = [e._sender for e in slots]
            if c_sender and native.active():  # built: every fast copy went through C
                assert all(s is not None for s in senders), report
                assert sum(s.counts()[0] for s in senders) >= fast, report
            else:
                assert senders == [None, None], report

    run(scenario)


def test_a_slot_sends_the_publishers_reports_not_its_own_and_a_bye_when_it_ends() -> None:
    async def scenario() -> None:
        seen: list[AnyRtcpPacket] = []  # RTCP reaching bob's receivers
        async with alice_to_bob("egress-slot-rtcp", 12) as (room, bob):
            for transceiver in bob.pc.getTransceivers():
                receiver = transceiver.receiver
                original = receiver._handle_rtcp_packet

                async def noted(packet: AnyRtcpPacket, original: Any = original) -> None:
                    seen.append(packet)
                    await original(packet)

                setattr(receiver, "_handle_rtcp_packet", noted)  # noqa: B010
            await wait_for(
                lambda: sum(isinstance(p, RtcpSrPacket) for p in seen) >= 6, 30, "sender reports"
            )
            reports = [p for p in seen if isinstance(p, RtcpSrPacket)]
            # the reports are alice's, re-issued per slot (packets counted), never the
            # slot sender's own report of zeros
            assert all(r.sender_info.packet_count > 0 for r in reports), reports
            senders = [
                t.sender
                for pc in room.peer_connections()
                for t in pc.getTransceivers()
                if t.direction == "sendonly"
            ]
            slots = {s._ssrc for s in senders}
            assert len(slots) == 2 and {r.ssrc for r in reports} == slots
            # the slots' RTCP tasks sleep until they are stopped (no periodic wake-up)...
            for sender in senders:
                task = sender._RTCRtpSender__rtcp_task  # type: ignore[attr-defined]
                assert not task.done() and "silence_sender_reports" in task.get_coro().__qualname__
            # ...then each says BYE, which reaches bob
            await room.leave("bob")
            await wait_for(
                lambda: (
                    {s for p in seen if isinstance(p, RtcpByePacket) for s in p.sources} == slots
                ),
                10,
                "a BYE from each slot",
            )

    run(scenario)


def test_fast_egress_follows_the_nominated_pair_and_falls_back_without_one() -> None:
    async def scenario() -> None:
        from aioice.ice import CandidatePair

        async with alice_to_bob("egress-pair", 2) as (room, bob):
            await wait_for(lambda: bob.received.packets["video"] >= 20, 30, "first packets")
            video = next(e for e in egresses(room) if e.fast > 0)
            dtls = video._dtls
            nominated = dtls.transport._connection._nominated
            # no nominated pair (as aioice leaves it between two nominations): the egress
            # declines and sends nothing. Put back before the loop runs again: aioice's own
            # receive path raises without a pair, which would end the connection.
            pair = nominated.pop(1)
            try:
                fast = video.fast
                assert not video.send(b"\x80\x60" + bytes(30), False)
                assert video.why_not_fast == "no nominated ICE pair"
                assert video.fast == fast
            finally:
                nominated[1] = pair
            # another pair nominated (a new object, as a renomination makes): resolved
            # again, fast again, and bob decrypts what it sends
            renominated = CandidatePair(pair.protocol, pair.remote_candidate)
            renominated.nominated = True
            nominated[1] = renominated
            fast, received = video.fast, bob.received.packets["video"]
            await wait_for(lambda: video.fast > fast + 20, 20, "fast path again")
            assert video.why_not_fast == ""
            assert video._route is not None and video._route.pair is renominated
            await wait_for(
                lambda: bob.received.packets["video"] > received + 20, 20, "packets decrypted"
            )

    run(scenario)


def test_a_wrapped_send_rtp_keeps_every_packet_unless_egress_is_observed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    original = RTCDtlsTransport._send_rtp
    metered = [0]

    async def _send_rtp(self: Any, data: bytes) -> None:  # a benchmark's meter
        metered[0] += 1
        await original(self, data)

    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", _send_rtp)
    observed: list[bool] = []

    async def scenario() -> None:
        async with alice_to_bob("egress-meter", 3) as (room, bob):
            try:
                await wait_for(lambda: bob.received.packets["video"] >= 20, 30, "first packets")
                slots = egresses(room)
                assert sum(e.fast for e in slots) == 0
                assert "wrapped" in slots[0].why_not_fast
                egress_module.observe(lambda data, rtcp: observed.append(rtcp))
                for e in slots:  # the state is unchanged: force a new resolution
                    e._route = None
                await wait_for(lambda: len(observed) >= 20, 20, "observed fast packets")
                assert sum(e.fast for e in slots) >= 20
            finally:
                egress_module.observe(None)

    run(scenario)
    assert metered[0] > 0


@pytest.fixture
def turnserver(tmp_path: Path) -> Iterator[Turnserver]:
    c = config(tmp_path, port=udp_port(), relay_ports=relay_range())
    turn.write_secret(c.secret_file, turn.new_secret())
    c.state_dir.mkdir(mode=0o700)
    text = turn.render(
        c, secret=turn.load_secret(c.secret_file), peers=[], allow_loopback_peers=True
    )
    c.conf_file.write_text(text)
    c.conf_file.chmod(0o600)
    ts = start_turnserver(c)
    try:
        yield ts
    finally:
        ts.stop()


def test_a_relay_connection_falls_back_to_aiortcs_send_path(turnserver: Turnserver) -> None:
    secret = turn.load_secret(turnserver.config.secret_file)
    host, port = turnserver.address

    def credential(leg: str) -> turn.Credential:
        return turn.issue(secret, leg, now=dt.datetime.now(dt.UTC), ttl=dt.timedelta(hours=1))

    async def scenario() -> None:
        url = f"turn:{host}:{port}?transport=udp"
        sfu_side, client_side = credential("call.plant-a.plant-b"), credential("call.plant-b.a")
        room = Room("egress-relay", rng=random.Random(4))
        alice = Publisher(clip())
        await publish(room, "alice", alice)
        bob = Subscriber()
        unused = bob.pc
        bob.pc = RTCPeerConnection(  # the other plant's SFU: relay-only too
            RTCConfiguration(
                iceServers=[RTCIceServer([url], client_side.username, client_side.password)],
                iceTransportPolicy=RTCIceTransportPolicy.RELAY,
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            )
        )
        bob.pc.on("track", bob._on_track)
        await unused.close()
        await room.join("bob", RelayIce((url,), sfu_side.username, sfu_side.password))
        await subscribe(room, "bob", bob)
        try:
            await wait_for(lambda: bob.received.frames["video"] >= 10, 60, "relayed frames")
            slots = egresses(room)
            report = (
                f"fast {[e.fast for e in slots]} slow {[e.slow for e in slots]} "
                f"why {[e.why_not_fast for e in slots]} frames {bob.received.frames}"
            )
            assert sum(e.fast for e in slots) == 0, report
            assert all(e.why_not_fast == "the nominated pair is a TURN relay" for e in slots), (
                report
            )
            assert sum(e.slow for e in slots) >= 50, report
        finally:
            await room.close()
            await alice.close()
            await bob.close()

    run(scenario, 120)


def test_the_sfus_receiver_reports_reach_the_publisher_by_the_fast_egress() -> None:
    """What the SFU's publisher receivers send (aiortc's periodic receiver reports; PLI,
    NACK and REMB the same way) leaves through a fast egress of the publisher's transport,
    and alice's aiortc sender reads the reports (its remote-inbound statistics)."""

    async def scenario() -> None:
        room = Room("egress-rtcp-out", rng=random.Random(21))
        alice, bob = Publisher(clip()), Subscriber()
        try:
            await publish(room, "alice", alice)
            await room.join("bob")
            await subscribe(room, "bob", bob)
            await wait_for(lambda: bob.received.frames["video"] >= 5, 30, "first frames")
            worker = room.worker
            (transport,) = {r.transport for r in worker._receivers.values()}
            out = worker._rtcp_egress[transport]
            (alice_video,) = [s for s in alice.pc.getSenders() if s.kind == "video"]

            async def reports_read() -> int:
                stats = await alice_video.getStats()
                return sum(1 for s in stats.values() if s.type == "remote-inbound-rtp")

            sent = out.fast
            await wait_for(lambda: out.fast >= sent + 2, 20, "receiver reports sent")
            assert out.slow == 0 and out.why_not_fast == ""
            for _ in range(40):
                if await reports_read():
                    break
                await asyncio.sleep(0.25)
            assert await reports_read() >= 1
            # and once alice leaves, her transport's RTCP egress goes with her publications
            for key in [k for k in worker._receivers if k.startswith("alice/")]:
                worker.detach_publisher(key)
            assert transport not in worker._rtcp_egress
        finally:
            await room.close()
            await alice.close()
            await bob.close()

    run(scenario)
