"""The SFU's per-packet Python alone: the forwarder's fan-out and the ingress parser.

    .venv/bin/python bench/forwarder.py [--tree DIR] [--packets N] [--copies K] [--forward-only]

No sockets, no SRTP, no event loop: one video publication feeding ``K`` subscriber slots
(mid and abs-send-time extensions, as a browser negotiates them), ``N`` inter-frame
packets of 1,107 payload bytes two milliseconds apart through ``Forwarder.forward``, with
CPU time per packet; then aiortc's ``RtpPacket.parse`` and, where the tree has it,
``packets.parse_media`` on a packet with a mid and an audio-level extension; then an RTCP
compound of each kind the fast ingress meets most (a publisher's sender report and SDES, a
subscriber's receiver report and REMB) parsed and routed by aiortc's ``RtcpPacket.parse``
and ``RtpRouter.route_rtcp`` and, where the tree has them, by ``packets.parse_rtcp_routed``
and ``ingress.rtcp_recipients``. ``--tree``
imports ``edge`` from another checkout (``git worktree add DIR REV``) to compare two
revisions in one session. On a shared VM even these CPU times move by ±30 % between spells;
for a steady comparison count instructions instead, the difference between two packet
counts giving the instructions per packet::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/forwarder.py --forward-only --packets 2000 [--tree DIR]
    # and the same with --packets 6000; (Collected at 6000 - at 2000) / 4000
"""

from __future__ import annotations

import argparse
import random
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", help="import edge from this checkout")
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--forward-only", action="store_true", help="skip the parsers")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap, RtpPacket

    from edge.sfu import packets
    from edge.sfu.forwarder import Codec, Forwarder, ForwarderConfig, Kind
    from edge.sfu.packets import ExtensionIds

    publisher = Codec("video/VP8", 90_000, 96, rtx_payload_type=97)
    subscriber = Codec("video/VP8", 90_000, 100, rtx_payload_type=101)
    forwarder = Forwarder(ForwarderConfig(), random.Random(1))
    forwarder.publish("a/v", Kind.VIDEO, publisher)
    for i in range(args.copies):
        slot = f"s{i}/v"
        forwarder.add_slot(
            slot,
            Kind.VIDEO,
            subscriber,
            0x100 + i,
            rtx_ssrc=0x200 + i,
            extensions=ExtensionIds(mid=1, abs_send_time=3),
            mid=str(i),
            subscriber=f"s{i}",
        )
        forwarder.assign(slot, "a/v", 0.0)
    make = getattr(packets, "MediaPacket", RtpPacket)  # (trees before it forwarded aiortc's)
    keyframe = bytes([0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00]) + bytes(1100)
    inter = bytes([0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00]) + bytes(1100)
    forwarder.forward("a/v", make(96, 0, 1, 0, 0x1000, keyframe), 1.0)
    count = args.packets
    batch = [make(96, 0, (2 + i) & 0xFFFF, 3000 * (i // 5), 0x1000, inter) for i in range(count)]
    before = forwarder.stats.forwarded
    start = time.process_time()
    for i, packet in enumerate(batch):
        forwarder.forward("a/v", packet, 1.0 + i * 0.002)
    elapsed = time.process_time() - start
    copies = forwarder.stats.forwarded - before
    print(
        f"forward: {elapsed / count * 1e6:.2f} µs a packet, {copies / count:.2f} copies each "
        f"({'edge from ' + args.tree if args.tree else 'this tree'})"
    )
    if args.forward_only:
        return

    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri=packets.MID_URI),
                RTCRtpHeaderExtensionParameters(id=2, uri=packets.AUDIO_LEVEL_URI),
            ]
        )
    )
    audio = bytes([0x90, 111]) + bytes(10) + bytes([0xBE, 0xDE, 0, 1, 0x10, 0x30, 0x20, 0x25])
    audio += bytes(80)
    start = time.process_time()
    for _ in range(count):
        RtpPacket.parse(audio, extensions)
    print(f"aiortc RtpPacket.parse: {(time.process_time() - start) / count * 1e6:.2f} µs")
    parse_media = getattr(packets, "parse_media", None)
    if parse_media is not None:
        start = time.process_time()
        for _ in range(count):
            parse_media(audio, 2)
        print(f"packets.parse_media: {(time.process_time() - start) / count * 1e6:.2f} µs")
    rtcp(count // 4)


def rtcp(count: int) -> None:
    """An RTCP compound as the fast ingress meets it, parsed and routed: aiortc's parser
    and router, and (where the tree has them) the compiled ones."""
    from aiortc.rtcdtlstransport import RtpRouter
    from aiortc.rtp import (
        RtcpPacket,
        RtcpPsfbPacket,
        RtcpReceiverInfo,
        RtcpRrPacket,
        RtcpSdesPacket,
        RtcpSenderInfo,
        RtcpSourceInfo,
        RtcpSrPacket,
        pack_remb_fci,
    )

    from edge.sfu import ingress, packets

    info = RtcpSenderInfo(ntp_timestamp=1 << 40, rtp_timestamp=9, packet_count=5, octet_count=9)
    cname = [(1, b"{4b2f5a7e-0d1c-4c8e-9b1a-2f6d3e8c7a51}")]
    block = RtcpReceiverInfo(
        ssrc=1, fraction_lost=0, packets_lost=0, highest_sequence=99, jitter=3, lsr=0, dlsr=0
    )
    compounds = {
        "SR+SDES (a publisher's)": bytes(RtcpSrPacket(ssrc=7, sender_info=info))
        + bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=7, items=cname)])),
        "RR+REMB (a subscriber's)": bytes(RtcpRrPacket(ssrc=5, reports=[block]))
        + bytes(RtcpPsfbPacket(fmt=15, ssrc=5, media_ssrc=0, fci=pack_remb_fci(300_000, [1]))),
    }
    router = RtpRouter()
    router.register_receiver("receiver", [7], [96])  # type: ignore[arg-type]
    router.register_sender("sender", 1)  # type: ignore[arg-type]
    ours = getattr(packets, "parse_rtcp_routed", None), getattr(ingress, "rtcp_recipients", None)
    for name, wire in compounds.items():
        start = time.process_time()
        for _ in range(count):
            for packet in RtcpPacket.parse(wire):
                router.route_rtcp(packet)
        line = f"{name}: aiortc {(time.process_time() - start) / count * 1e6:.2f} µs"
        parse, recipients = ours
        if parse is not None and recipients is not None:
            start = time.process_time()
            for _ in range(count):
                for packet in parse(wire):
                    recipients(router.ssrc_table, router.senders, packet)
            line += f", compiled {(time.process_time() - start) / count * 1e6:.2f} µs"
        print(f"RTCP parsed and routed, {line}")


if __name__ == "__main__":
    main()
