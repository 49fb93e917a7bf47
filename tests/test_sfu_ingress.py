"""The SFU's fast ingress (edge.sfu.ingress) with real aiortc peers.

A publisher's media is taken in the socket callback (libsrtp on the transport's own inbound
session) and still reaches a real aiortc subscriber, which decodes it; the receive
statistics behind the SFU's receiver reports and the transport's counters see every packet;
a replayed, forged or foreign-sourced datagram is refused as aiortc refuses it; a failing
handler loses one packet, not the connection; a publisher that leaves gets its sockets'
own callbacks back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtp import AnyRtcpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sfu import hooks, native
from edge.sfu.forwarder import Kind
from edge.sfu.ingress import RECEIVE_QUEUE_LIMIT, Ingress, rtcp_recipients
from edge.sfu.room import Room
from tests.test_sfu_egress import alice_to_bob, run, wait_for
from tests.test_sfu_packets import rtcp_packets

pytestmark = pytest.mark.slow


SSRCS = st.sampled_from([0, 1, 2, 0xFFFFFFFF])  # few, so that packets name the tables' SSRCs


@settings(max_examples=300, deadline=None)
@given(
    receivers=st.dictionaries(SSRCS, st.sampled_from(["r1", "r2"]), max_size=4),
    senders=st.dictionaries(SSRCS, st.sampled_from(["s1", "s2", "s3"]), max_size=4),
    packet=rtcp_packets(SSRCS),
)
def test_rtcp_is_routed_as_aiortcs_router_routes_it(
    receivers: dict[int, str], senders: dict[int, str], packet: AnyRtcpPacket
) -> None:
    router = RtpRouter()
    for ssrc, name in receivers.items():
        router.register_receiver(name, [ssrc], [])  # type: ignore[arg-type]
    for ssrc, name in senders.items():
        router.register_sender(name, ssrc)  # type: ignore[arg-type]
    found = rtcp_recipients(router.ssrc_table, router.senders, packet)
    assert len(found) == len(set(found))  # each once
    assert set(found) == router.route_rtcp(packet)


def video_ingress(room: Room) -> tuple[Ingress, Any]:
    """Alice's ingress and her video receiver."""
    worker = room.worker
    key = next(
        k
        for k in worker._receivers
        if k.startswith("alice/") and worker.forwarder.publication_codec(k)[0] is Kind.VIDEO
    )
    receiver = worker._receivers[key]
    ingress = worker.ingress_of(receiver)
    assert ingress is not None, "alice's video is not bound to a fast ingress"
    return ingress, receiver


class Tap:
    """Records the SRTP datagrams reaching alice's nominated socket (before the ingress)."""

    def __init__(self, receiver: Any) -> None:
        self.protocol = receiver.transport.transport._connection._nominated[1].protocol
        self.seen: list[tuple[bytes, tuple[Any, ...]]] = []  # SRTP (not SRTCP) only
        self.held: list[tuple[bytes, tuple[Any, ...]]] = []  # everything, while holding
        self.holding = False
        self.inner = self.protocol.datagram_received

        def tapped(data: bytes, addr: tuple[Any, ...]) -> None:
            if self.holding:
                self.held.append((data, addr))
                return
            if 127 < data[0] < 192 and not 191 < data[1] < 224:
                self.seen.append((data, addr))
            self.inner(data, addr)

        self.protocol.datagram_received = tapped

    def inject(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.inner(data, addr)  # as the socket would hand it over


@pytest.fixture(params=["c-unprotect", "cffi"])
def unprotect_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the fast ingress unprotects: the C unprotector where it is built
    (edge/sfu/_sendpath.c), libsrtp through cffi without it."""
    if request.param == "cffi":
        monkeypatch.setattr(hooks, "_unprotector", lambda ctx: None)
    return str(request.param)


def check_way(ingress: Ingress, way: str) -> None:
    route = ingress._route
    assert route is not None and route.fast
    if way == "cffi" or native.active():  # (the C one where the build is there: CI)
        assert (route.unprotector is None) == (way == "cffi"), way


def test_publisher_media_takes_the_fast_ingress_and_the_subscriber_decodes(
    unprotect_way: str,
) -> None:
    async def scenario() -> None:
        async with alice_to_bob("ingress-host", 11) as (room, bob):
            await wait_for(lambda: bob.received.frames["video"] >= 5, 30, "first frames")
            ingress, receiver = video_ingress(room)
            check_way(ingress, unprotect_way)
            dtls = receiver.transport
            fast, frames = ingress.fast, dict(bob.received.frames)
            received = room.stats.received
            receivers = [r for k, r in room.worker._receivers.items() if k.startswith("alice/")]
            assert len(receivers) == 2  # audio and video, one transport

            def counted_by_aiortc() -> int:
                tables = [hooks.receiver_statistics(r) for r in receivers]
                return sum(s.packets_received for t in tables for s in t.values())

            counted = counted_by_aiortc()
            rx = dtls._get_stats()
            rx_packets = next(v.packetsReceived for v in rx.values() if v.type == "transport")
            await wait_for(
                lambda: (
                    bob.received.frames["video"] >= frames["video"] + 15
                    and bob.received.frames["audio"] >= frames["audio"] + 50
                ),
                40,
                "more frames",
            )
            taken = ingress.fast - fast
            forwarded_in = room.stats.received - received
            report = f"taken {taken} forwarder received {forwarded_in} frames {bob.received}"
            # nearly every packet the forwarder got came through the fast ingress (the rest:
            # first packets of an SSRC, which aiortc's router binds)
            assert taken >= 60 and taken >= 0.95 * forwarded_in, report
            # aiortc's receive statistics (its receiver reports to alice) see them (every
            # media packet, not the RTX ones)...
            now_counted = counted_by_aiortc()
            assert now_counted - counted >= 0.9 * taken, (now_counted, counted, report)
            # ...and so do the transport's counters (getStats)
            rx = dtls._get_stats()
            now_rx = next(v.packetsReceived for v in rx.values() if v.type == "transport")
            assert now_rx - rx_packets >= taken, (now_rx, rx_packets, report)

    run(scenario)


def test_replayed_forged_and_foreign_datagrams_are_refused(unprotect_way: str) -> None:
    async def scenario() -> None:
        async with alice_to_bob("ingress-hostile", 12) as (room, bob):
            await wait_for(lambda: bob.received.packets["video"] >= 20, 30, "first packets")
            ingress, receiver = video_ingress(room)
            check_way(ingress, unprotect_way)
            tap = Tap(receiver)
            await wait_for(lambda: len(tap.seen) >= 5, 20, "datagrams at the tap")
            data, addr = tap.seen[-1]
            received = room.stats.received
            # a replay of a datagram already taken: libsrtp's replay window refuses it
            tap.inject(data, addr)
            assert room.stats.received == received
            # the same from another address: not taken here, aiortc's way refuses it too
            fast = ingress.fast
            tap.inject(data, ("127.0.0.9", 9))
            await wait_for(lambda: True, 1, "aiortc's queue")
            assert ingress.fast == fast
            # a forged datagram (a flipped payload bit: the tag fails) is dropped and does not
            # spoil the replay window for the genuine packet behind it
            tap.holding = True  # hold alice's datagrams from now on
            await wait_for(
                lambda: any(127 < d[0] < 192 and not 191 < d[1] < 224 for d, _ in tap.held),
                20,
                "a held packet",
            )
            tap.holding = False
            genuine, source = next(
                (d, a) for d, a in tap.held if 127 < d[0] < 192 and not 191 < d[1] < 224
            )
            forged = bytearray(genuine)
            forged[20] ^= 0x01
            received = room.stats.received
            tap.inject(bytes(forged), source)
            assert room.stats.received == received
            tap.inject(genuine, source)
            assert room.stats.received == received + 1
            for d, a in tap.held:
                if d is not genuine:
                    tap.inject(d, a)
            # media flows on, on the fast path
            fast, packets = ingress.fast, bob.received.packets["video"]
            await wait_for(
                lambda: ingress.fast > fast + 20 and bob.received.packets["video"] > packets + 20,
                20,
                "media after the hostile datagrams",
            )

    run(scenario)


def test_a_failing_handler_loses_its_packet_not_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with alice_to_bob("ingress-raise", 13) as (room, bob):
            await wait_for(lambda: bob.received.packets["video"] >= 20, 30, "first packets")
            ingress, receiver = video_ingress(room)
            sink = ingress.sink(receiver)
            assert sink is not None
            failures = 0

            def failing(packet: Any) -> None:
                nonlocal failures
                failures += 1
                if failures <= 3:
                    raise RuntimeError("a handler bug")
                sink(packet)

            ingress.bind(receiver, failing)
            packets = bob.received.packets["video"]
            await wait_for(lambda: bob.received.packets["video"] > packets + 20, 20, "media on")
            assert failures > 3

    with caplog.at_level(logging.ERROR, logger="edge.sfu.ingress"):
        run(scenario)
    assert any(r.exc_info and "a handler bug" in str(r.exc_info[1]) for r in caplog.records)


def test_a_publisher_that_leaves_gets_its_sockets_callbacks_back() -> None:
    async def scenario() -> None:
        async with alice_to_bob("ingress-leave", 14) as (room, bob):
            await wait_for(lambda: bob.received.packets["video"] >= 20, 30, "first packets")
            _, receiver = video_ingress(room)
            protocols = hooks.ice_protocols(receiver.transport)
            assert all("datagram_received" in vars(p) for p in protocols)
            await room.leave("alice")
            assert room.worker.ingress_of(receiver) is None
            assert not any("datagram_received" in vars(p) for p in protocols)
            assert receiver.transport not in room.worker._ingress
            # bob's connection has one too, for the RTCP of his slots; gone when he leaves
            assert len(room.worker._ingress) == 1
            await room.leave("bob")
            assert not room.worker._ingress

    run(scenario)


def test_rtcp_takes_the_fast_ingress_on_both_connections() -> None:
    async def scenario() -> None:
        async with alice_to_bob("ingress-rtcp", 15) as (room, bob):
            await wait_for(lambda: bob.received.frames["video"] >= 5, 30, "first frames")
            worker = room.worker
            _, receiver = video_ingress(room)
            from_alice = worker._ingress[receiver.transport]
            (slot_sender,) = [s for s in worker._senders.values() if s.kind == "video"]
            from_bob = worker._ingress[slot_sender.transport]

            async def noted_report() -> Any:  # aiortc's note of alice's last sender report
                stats = await receiver.getStats()
                return max(
                    (s.timestamp for s in stats.values() if s.type == "remote-outbound-rtp"),
                    default=None,
                )

            # alice's sender reports are taken, noted by aiortc (its receiver reports and
            # getStats) and re-issued to bob (tests/test_sfu_egress.py checks what bob gets)
            taken, noted = from_alice.fast_rtcp, await noted_report()
            await wait_for(lambda: from_alice.fast_rtcp >= taken + 2, 20, "alice's reports")
            now_noted = await noted_report()
            assert now_noted is not None and (noted is None or now_noted > noted)

            # bob's keyframe requests are taken on his connection and reach alice
            (bob_video,) = [t.receiver for t in bob.pc.getTransceivers() if t.kind == "video"]
            requests, taken = room.stats.keyframe_requests, from_bob.fast_rtcp
            for _ in range(40):
                await bob_video._send_rtcp_pli(slot_sender._ssrc)
                await asyncio.sleep(0.25)
                if room.stats.keyframe_requests > requests:
                    break
            assert room.stats.keyframe_requests > requests
            assert from_bob.fast_rtcp > taken

            # a replayed SRTCP datagram: libsrtp's replay window refuses it
            tap = Tap(slot_sender)
            tap.holding = True
            await wait_for(
                lambda: any(191 < d[1] < 209 for d, _ in tap.held), 20, "an RTCP datagram"
            )
            tap.holding = False
            genuine, source = next((d, a) for d, a in tap.held if 191 < d[1] < 209)
            taken = from_bob.fast_rtcp
            tap.inject(genuine, source)
            assert from_bob.fast_rtcp == taken + 1
            tap.inject(genuine, source)
            assert from_bob.fast_rtcp == taken + 1
            for d, a in tap.held:
                if d is not genuine:
                    tap.inject(d, a)

    run(scenario)


def test_a_flood_the_loop_cannot_drain_is_dropped_not_queued() -> None:
    """Datagrams aioice queues for aiortc (not STUN, not taken by the ingress) wait at most
    RECEIVE_QUEUE_LIMIT at a time: 10,000 arriving inside one turn of the loop (its reader
    cannot drain any) leave the queue at the limit, the rest dropped and counted; media
    flows on."""

    async def scenario() -> None:
        async with alice_to_bob("ingress-flood", 16) as (room, bob):
            await wait_for(lambda: bob.received.frames["video"] >= 5, 30, "first frames")
            ingress, receiver = video_ingress(room)
            bound = ingress.queue_bound
            assert bound is not None and bound.limit == RECEIVE_QUEUE_LIMIT
            assert hooks.bound_receive_queue(receiver.transport, 5) is bound  # one per transport
            connection = receiver.transport.transport._connection
            pair = connection._nominated[1]
            dropped = bound.dropped
            for i in range(10_000):  # not STUN (no magic cookie), not RTP: aioice queues it
                pair.protocol.datagram_received(bytes([1, i % 256]) + bytes(40), pair.remote_addr)
            assert connection._queue.qsize() <= RECEIVE_QUEUE_LIMIT
            assert bound.dropped - dropped >= 10_000 - RECEIVE_QUEUE_LIMIT
            frames = bob.received.frames["video"]
            await wait_for(lambda: connection._queue.qsize() == 0, 10, "the queue drained")
            await wait_for(
                lambda: bob.received.frames["video"] >= frames + 10, 20, "frames after the flood"
            )

    run(scenario)


def test_a_receive_queue_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1, not 0"):
        hooks.ReceiveQueueBound(object(), 0)
