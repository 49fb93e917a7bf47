"""The forwarding core of one SFU worker: publications, slots, and the packets between them.

Theory of operation: a *publication* is one track a participant sends (audio or video); a
*slot* is one stream a subscriber receives, with its own SSRC, payload types, header
extension ids and mid, fed by at most one publication at a time (:meth:`Forwarder.assign`).
For every packet of a publication (:meth:`Forwarder.forward`) each slot it feeds rewrites
SSRC, payload type, sequence number and timestamp (``rewrite.StreamRewriter``), writes a
header of its own (``packets.HeaderWriter``) in front of the publisher's payload, keeps
header and payload in its send history, and hands the bytes out as :class:`SendRtp`.
Payloads are never decoded; a video payload's first bytes are read only while a slot waits
for a keyframe.

Feedback flows back the same way (:meth:`Forwarder.subscriber_rtcp`): a NACK is answered
from the slot's history (RTX when the slot negotiated it, else the packet again) and what
the history lacks is translated to the publisher's numbering; PLI/FIR become one throttled
keyframe request per publisher; REMBs are folded into one cap per publisher; receiver
reports stay here (they describe the SFU's own leg). A publisher's sender report
(:meth:`Forwarder.publisher_rtcp`) is re-issued per slot with the slot's SSRC, timestamp
offset and counters. :meth:`Forwarder.tick` (every 50-100 ms) sends what was deferred.

Adaptive quality (``edge.sfu.adapt``): slots added with a ``subscriber`` are grouped per
subscriber; each publication's ingress rate and upstream loss are measured here, each
subscriber's receiver reports and REMBs go to its :class:`adapt.SubscriberLink`, and every
``adapt.interval`` the link may pause its lowest-priority video slots (a paused slot sends
nothing: :class:`SlotPaused`) or resume one (:class:`SlotResumed`; it waits for a keyframe
and asks for one, as a new slot does). :meth:`Forwarder.set_priority` is the signalling
layer's order. A publisher is asked for the minimum REMB of the slots it feeds that are
not paused, never less than ``min_bitrate``: a receiver below that loses tiles instead of
everyone losing quality.

Nothing here does I/O or reads a clock, but for a slot's *sink* (:meth:`Forwarder.set_sink`:
the worker's fast egress, which takes a copy as it is made, or declines it and the copy is
an event as any other); time comes in as ``now`` (monotonic seconds) and
randomness (initial sequence numbers and timestamps) from the injected ``random.Random``.
Malformed input raises ``ValueError``; :meth:`Forwarder.forward` counts and drops instead,
as one bad packet from a publisher must not stop the room (THREATS W5).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
)

from edge.sfu import adapt
from edge.sfu.feedback import BitrateCap, KeyframeThrottle, UpstreamLoss, rewrite_sender_report
from edge.sfu.history import SendHistory
from edge.sfu.keyframes import KeyframeTest, keyframe_test
from edge.sfu.limits import IngressLimit, TokenBucket
from edge.sfu.packets import (
    ExtensionIds,
    HeaderWriter,
    MediaPacket,
    abs_send_time,
    mid_element,
    parse_remb,
    write_rtx,
)
from edge.sfu.rewrite import SlotPhase, Source, StreamRewriter

NO_EXTENSIONS = ExtensionIds()


class Kind(enum.Enum):
    AUDIO = "audio"
    VIDEO = "video"


@dataclass(frozen=True)
class Codec:
    """What the forwarder needs of a codec negotiated on one leg."""

    mime_type: str  # e.g. "video/VP8"
    clock_rate: int
    payload_type: int
    rtx_payload_type: int | None = None

    def carries(self, other: Codec) -> bool:
        return (
            self.mime_type.lower() == other.mime_type.lower()
            and self.clock_rate == other.clock_rate
        )


@dataclass(frozen=True)
class ForwarderConfig:
    keyframe_interval: float = 0.5  # at most one keyframe request per publisher per interval
    keyframe_retry: float = 1.0  # re-request while a slot still waits for a keyframe
    history_size: int = 512  # packets per video slot (about 3 s at 1.5 Mbit/s)
    max_bitrate: int = 2_500_000  # ceiling announced to video publishers (REMB)
    # floor announced to video publishers: a subscriber whose REMB is below it loses tiles
    # (adapt) instead of every subscriber of that publisher losing quality
    min_bitrate: int = 300_000
    bitrate_interval: float = 1.0
    nack_retry_interval: float = 0.1
    nack_max_tries: int = 3
    # ingress limits per publication (THREATS C4): above what an honest publisher sends
    video_ingress_packets: int = 1_000  # packets/s (5 Mbit/s in 1,200-byte packets + RTX)
    video_ingress_bitrate: int = 6_000_000  # bit/s, over 2x max_bitrate
    audio_ingress_packets: int = 200  # packets/s (Opus 10 ms frames are 100/s)
    audio_ingress_bitrate: int = 512_000  # bit/s
    ingress_burst: float = 0.5  # seconds of either rate a publication may send at once
    retransmissions_per_second: int = 300  # per slot: a NACK storm cannot make the SFU flood
    # one packet is resent at most once per interval, however often it is NACKed: aiortc
    # NACKs every missing number again at each new gap, and on a weak link answering each
    # NACK multiplied the overload (5-8 Mbit/s offered to a 400 kbit/s link)
    resend_interval: float = 0.05
    adapt: adapt.AdaptConfig = field(default_factory=adapt.AdaptConfig)  # adaptive quality

    def __post_init__(self) -> None:
        if not 0 <= self.min_bitrate <= self.max_bitrate:
            raise ValueError(
                f"min_bitrate must be between 0 and max_bitrate ({self.max_bitrate}), "
                f"not {self.min_bitrate}"
            )


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendRtp:
    slot: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SendRtcp:
    slot: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestKeyframe:
    publication: str
    ssrc: int


@dataclass(frozen=True, slots=True)
class NackPublisher:
    publication: str
    ssrc: int
    sequence_numbers: tuple[int, ...]  # ascending, no repeats (aiortc's NACK packer needs it)

    @classmethod
    def of(cls, publication: str, ssrc: int, lost: list[int]) -> NackPublisher:
        return cls(publication, ssrc, tuple(sorted(set(lost))))


@dataclass(frozen=True, slots=True)
class LimitBitrate:
    publication: str
    ssrc: int
    bitrate: int


@dataclass(frozen=True, slots=True)
class SlotIdle:
    """The publication feeding a slot ended; the slot forwards nothing until reassigned."""

    slot: str
    publication: str


@dataclass(frozen=True, slots=True)
class SlotPaused:
    """The subscriber's link cannot carry this video slot: it sends nothing for now."""

    slot: str
    subscriber: str
    publication: str


@dataclass(frozen=True, slots=True)
class SlotResumed:
    """A paused slot is forwarded again, from the publication's next keyframe."""

    slot: str
    subscriber: str
    publication: str


Event = (
    SendRtp
    | SendRtcp
    | RequestKeyframe
    | NackPublisher
    | LimitBitrate
    | SlotIdle
    | SlotPaused
    | SlotResumed
)


@dataclass
class ForwardingStats:
    received: int = 0
    forwarded: int = 0
    dropped_malformed: int = 0
    dropped_unknown_payload_type: int = 0
    dropped_foreign_ssrc: int = 0  # media or RTX from another SSRC than the publication's
    dropped_rate_limited: int = 0  # over the publication's ingress limit (C4)
    retransmitted_from_history: int = 0
    retransmissions_refused: int = 0  # over a slot's retransmission budget (C4)
    retransmissions_repeated: int = 0  # of those refused: NACKed again within resend_interval
    nacks_to_publishers: int = 0
    keyframe_requests: int = 0
    slots_paused: int = 0  # adaptive quality: a subscriber's link could not carry them
    slots_resumed: int = 0


# -- state (mutable, owned by the forwarder) ------------------------------------------------


@dataclass(eq=False)
class _Publication:
    key: str
    kind: Kind
    codec: Codec
    source: Source
    is_keyframe: KeyframeTest
    throttle: KeyframeThrottle
    loss: UpstreamLoss
    cap: BitrateCap
    limit: IngressLimit
    meter: adapt.RateMeter
    upstream: adapt.SequenceLoss
    ssrc: int | None = None
    rtx_ssrc: int | None = None
    slots: list[_Slot] = field(default_factory=list)


@dataclass(eq=False)
class _Slot:
    key: str
    kind: Kind
    codec: Codec
    ssrc: int
    rtx_ssrc: int | None
    rewriter: StreamRewriter
    history: SendHistory | None
    rtx_sequence: int
    retransmit_budget: TokenBucket
    header: HeaderWriter  # writes its packets' headers (payload type, SSRC, extensions)
    resent: dict[int, float] = field(default_factory=dict)  # out sequence -> last resent
    packets: int = 0
    octets: int = 0
    fraction_lost: int = 0
    publication: str | None = None  # the publication assigned last (current or pending)
    subscriber: str | None = None  # slots of one subscriber share a link (adapt)
    paused: bool = False  # adapt: the link cannot carry it; ``publication`` is kept
    order: int = 0  # when ``publication`` was assigned (priority among unpinned slots)
    sink: Sink | None = None  # sends a forwarded copy at once (see Forwarder.set_sink)
    connected: bool = True  # its subscriber can receive (False: keyframes asked at connect)


Sink = Callable[[bytes, bytes], bool]  # (RTP header, payload) -> sent; False: emit the event


class Forwarder:
    def __init__(self, config: ForwarderConfig | None = None, rng: random.Random | None = None):
        self.config = config or ForwarderConfig()
        self._rng = rng or random.Random()
        self._publications: dict[str, _Publication] = {}
        self._slots: dict[str, _Slot] = {}
        self._links: dict[str, adapt.SubscriberLink] = {}  # subscriber -> its link
        self._assignments = 0
        self._adapt_due = 0.0
        self.stats = ForwardingStats()

    # -- membership -----------------------------------------------------------------------

    def publish(self, key: str, kind: Kind, codec: Codec) -> None:
        if key in self._publications:
            raise ValueError(f"publication {key} already exists")
        config = self.config
        self._publications[key] = _Publication(
            key=key,
            kind=kind,
            codec=codec,
            source=Source(key, kind is Kind.VIDEO, codec.clock_rate),
            is_keyframe=keyframe_test(codec.mime_type),
            throttle=KeyframeThrottle(config.keyframe_interval),
            loss=UpstreamLoss(config.nack_retry_interval, config.nack_max_tries),
            cap=BitrateCap(config.bitrate_interval),
            limit=IngressLimit(
                config.video_ingress_packets
                if kind is Kind.VIDEO
                else config.audio_ingress_packets,
                config.video_ingress_bitrate
                if kind is Kind.VIDEO
                else config.audio_ingress_bitrate,
                config.ingress_burst,
            ),
            meter=adapt.RateMeter(config.adapt.rate_window),
            upstream=adapt.SequenceLoss(config.adapt.loss_window),
        )

    def unpublish(self, key: str) -> list[Event]:
        """Remove a publication; every slot it fed goes idle (or back to its old source)."""
        publication = self._publications.pop(key, None)
        if publication is None:
            return []
        events: list[Event] = []
        for slot in publication.slots:
            slot.rewriter.drop(publication.source)
            publication.cap.forget(slot.key)
            if slot.publication == key:
                slot.publication = None
                events.append(SlotIdle(slot.key, key))
        for slot in self._slots.values():  # paused slots are in no publication's list
            if slot.paused and slot.publication == key:
                slot.paused = False
                slot.publication = None
                events.append(SlotIdle(slot.key, key))
        return events

    def add_slot(
        self,
        key: str,
        kind: Kind,
        codec: Codec,
        ssrc: int,
        *,
        rtx_ssrc: int | None = None,
        extensions: ExtensionIds = NO_EXTENSIONS,
        mid: str | None = None,
        subscriber: str | None = None,
        connected: bool = True,
    ) -> None:
        """A stream a subscriber receives. Slots of one ``subscriber`` share its link and
        may be paused when it is too weak (adaptive quality); without one (a recorder's
        tap), never. A slot not ``connected`` yet (its subscriber's connection is still
        being set up) asks for no keyframe until :meth:`slot_connected`: one it asked for
        would be forwarded before the subscriber could receive it, and lost."""
        if key in self._slots:
            raise ValueError(f"slot {key} already exists")
        history = None
        if kind is Kind.VIDEO:
            history = SendHistory(self.config.history_size)
        self._slots[key] = _Slot(
            key=key,
            kind=kind,
            codec=codec,
            ssrc=ssrc,
            rtx_ssrc=rtx_ssrc if codec.rtx_payload_type is not None else None,
            rewriter=StreamRewriter(
                codec.clock_rate, self._rng.randrange(0x8000), self._rng.randrange(1 << 32)
            ),
            history=history,
            rtx_sequence=self._rng.randrange(0x8000),
            retransmit_budget=TokenBucket(
                self.config.retransmissions_per_second,
                self.config.retransmissions_per_second * self.config.ingress_burst,
            ),
            header=HeaderWriter(codec.payload_type, ssrc, extensions, mid_element(extensions, mid)),
            subscriber=subscriber,
            connected=connected,
        )
        if subscriber is not None:
            self._link(subscriber).add_slot(key, ssrc)

    def slot_connected(self, key: str, now: float) -> list[Event]:
        """The slot's subscriber can receive now: a keyframe for whatever feeds it (what
        was forwarded to it before is lost, a keyframe among it or not)."""
        slot = self._slots.get(key)
        if slot is None or slot.connected:
            return []
        slot.connected = True
        return self.request_keyframe(key, now)

    def set_sink(self, key: str, sink: Sink | None) -> None:
        """Hand this slot's forwarded RTP copies to ``sink`` as :meth:`forward` makes them, as
        (header, payload) (the worker's fast egress, so a copy leaves without an event and a
        dispatch, nor a bytes object joining them); a copy the sink does not take (it
        returns False) is emitted as :class:`SendRtp` as before."""
        self._slots[key].sink = sink

    def remove_slot(self, key: str) -> None:
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        for publication in self._publications.values():
            if slot in publication.slots:
                publication.slots.remove(slot)
                publication.cap.forget(key)
        link = self._links.get(slot.subscriber) if slot.subscriber is not None else None
        if link is not None and slot.subscriber is not None:
            link.remove_slot(key)
            if not link.slots:
                del self._links[slot.subscriber]

    def assign(self, slot_key: str, publication_key: str | None, now: float) -> list[Event]:
        """Feed a slot from a publication (``None``: from nothing) from now on."""
        slot = self._slot(slot_key)
        if publication_key is None:
            slot.rewriter.switch(None)
            slot.publication = None
            slot.paused = False  # an idle slot is neither paused nor resumed
            return []
        publication = self._publication(publication_key)
        if publication.kind is not slot.kind or not slot.codec.carries(publication.codec):
            raise ValueError(
                f"slot {slot_key} ({slot.kind.value} {slot.codec.mime_type}) cannot carry "
                f"{publication_key} ({publication.kind.value} {publication.codec.mime_type})"
            )
        if slot.publication != publication_key:
            self._assignments += 1
            slot.order = self._assignments
        slot.publication = publication_key
        if slot.paused:
            return []  # still paused: it resumes (on a keyframe) when its link allows
        return self._feed(slot, publication, now)

    def set_priority(self, subscriber: str, publications: Sequence[str], now: float) -> None:
        """The subscriber's slots of these publications are the last to be paused, in this
        order (the first the very last): the signalling layer pins the active speaker or a
        screen share. Publications pinned before rank next, most recently pinned first;
        then the others, in the order they were assigned."""
        for key in publications:
            self._publication(key)
        self._link(subscriber).pin(publications, now)

    def paused(self, slot_key: str) -> bool:
        """True while adaptive quality holds this slot back."""
        return self._slot(slot_key).paused

    def publication_rate(self, key: str, now: float) -> float:
        """Bit/s a publication sends (RTP header + payload), over ``adapt.rate_window``."""
        return self._publication(key).meter.rate(now)

    def link_estimate(self, subscriber: str, now: float) -> adapt.Estimate:
        """What adaptive quality makes of a subscriber's link now (for tests and metrics)."""
        link = self._links.get(subscriber)
        if link is None:
            raise ValueError(f"no subscriber {subscriber}")
        return link.estimate(now, self._views(link, now))

    def phase(self, slot_key: str) -> SlotPhase:
        return self._slot(slot_key).rewriter.phase

    def publication_ssrcs(self, key: str) -> tuple[int | None, int | None]:
        """(media SSRC, RTX SSRC) a publication is bound to; ``None`` until first seen."""
        publication = self._publications.get(key)
        if publication is None:
            return None, None
        return publication.ssrc, publication.rtx_ssrc

    def publication_codec(self, key: str) -> tuple[Kind, Codec]:
        publication = self._publication(key)
        return publication.kind, publication.codec

    def request_keyframe(self, slot_key: str, now: float) -> list[Event]:
        """A keyframe for whatever feeds this slot (as a PLI from its subscriber would)."""
        slot = self._slot(slot_key)
        return self.subscriber_rtcp(
            slot_key, RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0, media_ssrc=slot.ssrc), now
        )

    def slot_counters(self, slot_key: str) -> tuple[int, int]:
        """(packets, octets) written to a slot."""
        slot = self._slot(slot_key)
        return slot.packets, slot.octets

    # -- media ----------------------------------------------------------------------------

    def forward(self, publication_key: str, packet: MediaPacket, now: float) -> list[Event]:
        """One RTP packet from a publisher: the copies to send, and any NACK to send back."""
        publication = self._publications.get(publication_key)
        if publication is None:
            return []
        self.stats.received += 1
        codec = publication.codec
        payload = packet.payload
        sequence = packet.sequence_number
        events: list[Event] = []
        # A publication is one stream: its first media packet binds the SSRC, its first RTX
        # packet the RTX SSRC; packets from any other SSRC are dropped (C4: a participant
        # cannot add streams, or grow per-SSRC state, by inventing SSRCs).
        if packet.payload_type == codec.payload_type:
            if publication.ssrc is None:
                publication.ssrc = packet.ssrc
            elif packet.ssrc != publication.ssrc:
                self.stats.dropped_foreign_ssrc += 1
                return events
        elif packet.payload_type == codec.rtx_payload_type and codec.rtx_payload_type is not None:
            if publication.rtx_ssrc is None:
                publication.rtx_ssrc = packet.ssrc
            elif packet.ssrc != publication.rtx_ssrc:
                self.stats.dropped_foreign_ssrc += 1
                return events
            if len(payload) < 2:
                self.stats.dropped_malformed += 1
                return events
            sequence = (payload[0] << 8) | payload[1]
            payload = payload[2:]
        else:
            self.stats.dropped_unknown_payload_type += 1
            return events
        if not publication.limit.admit(len(payload) + 12, now):
            # Dropped on purpose: not NACKed upstream either (that would ask the flood again).
            self.stats.dropped_rate_limited += 1
            if publication.source.video:
                publication.loss.received(sequence, now)
            return events

        publication.meter.add(len(payload) + 12, now)
        publication.upstream.packet(sequence)
        source = publication.source
        video = source.video
        if video:
            lost = publication.loss.received(sequence, now)
            if lost and publication.ssrc is not None:
                self.stats.nacks_to_publishers += 1
                events.append(NackPublisher.of(publication_key, publication.ssrc, lost))
            send_time = abs_send_time(now)
            audio_level = None
        else:
            send_time = None
            audio_level = packet.audio_level

        keyframe: bool | None = None
        timestamp = packet.timestamp
        marker = packet.marker
        feedback, sent = len(events), 0  # events so far (a NACK); copies the sinks took
        for slot in publication.slots:
            rewriter = slot.rewriter
            if keyframe is None and rewriter.wants_keyframe(source):
                try:
                    keyframe = publication.is_keyframe(payload)
                except ValueError:
                    self.stats.dropped_malformed += 1
                    keyframe = False
            mapped = rewriter.rewrite(source, sequence, timestamp, bool(keyframe), now)
            if mapped is None:
                continue
            header = slot.header.write(marker, mapped[0], mapped[1], audio_level, send_time)
            if slot.history is not None:
                slot.history.store(mapped[0], header, payload)
            slot.packets += 1
            slot.octets += len(payload)
            sink = slot.sink
            if sink is not None and sink(header, payload):
                sent += 1
            else:
                events.append(SendRtp(slot.key, header + payload))
        self.stats.forwarded += sent + len(events) - feedback
        return events

    # -- feedback -------------------------------------------------------------------------

    def publisher_rtcp(
        self, publication_key: str, packet: AnyRtcpPacket, now: float
    ) -> list[Event]:
        """RTCP from a publisher: sender reports are re-issued to every slot it feeds."""
        publication = self._publications.get(publication_key)
        if publication is None or not isinstance(packet, RtcpSrPacket):
            return []
        if packet.ssrc != publication.ssrc:
            return []
        events: list[Event] = []
        for slot in publication.slots:
            timestamp = slot.rewriter.output_timestamp(
                publication.source, packet.sender_info.rtp_timestamp
            )
            if timestamp is None or not slot.packets:
                continue
            events.append(
                SendRtcp(
                    slot.key,
                    rewrite_sender_report(packet, slot.ssrc, timestamp, slot.packets, slot.octets),
                )
            )
        return events

    def subscriber_rtcp(self, slot_key: str, packet: AnyRtcpPacket, now: float) -> list[Event]:
        """RTCP from a subscriber about one slot: NACK, PLI/FIR, REMB, receiver reports."""
        slot = self._slots.get(slot_key)
        if slot is None:
            return []
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            if packet.media_ssrc != slot.ssrc or slot.paused:
                # a paused slot sends nothing, retransmissions neither: its link is full,
                # and it restarts on a keyframe
                return []
            return self._answer_nack(slot, packet.lost, now)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            events: list[Event] = []
            for source in (slot.rewriter.current, slot.rewriter.pending):
                publication = self._publications.get(source.key) if source else None
                if publication is not None and publication.source is source:
                    events += self._request_keyframe(publication, now)
            return events
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            bitrate, ssrcs = parse_remb(packet.fci)
            current = slot.rewriter.current  # None while paused: a paused slot has no say
            if slot.ssrc in ssrcs and current is not None:
                publication = self._publications.get(current.key)
                if publication is not None:
                    publication.cap.report(slot.key, bitrate, now)
            if slot.subscriber is not None:
                self._links[slot.subscriber].report_remb(ssrcs, bitrate, now)
            return []
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == slot.ssrc:
                    slot.fraction_lost = report.fraction_lost
                    self._report_loss(slot, report.highest_sequence, report.packets_lost, now)
        return []

    def tick(self, now: float) -> list[Event]:
        """Deferred keyframe requests, NACK retries and bitrate caps that are due."""
        events: list[Event] = []
        config = self.config
        for publication in self._publications.values():
            ssrc = publication.ssrc
            if ssrc is None:
                continue
            source, throttle = publication.source, publication.throttle
            if throttle.due(now):
                self.stats.keyframe_requests += 1
                events.append(RequestKeyframe(publication.key, ssrc))
            elif (
                source.video
                and throttle.last is not None
                and now - throttle.last >= config.keyframe_retry
                and any(
                    s.connected and s.rewriter.wants_keyframe(source) for s in publication.slots
                )
            ):
                events += self._request_keyframe(publication, now)
            if source.video:
                again = publication.loss.due(now)
                if again:
                    self.stats.nacks_to_publishers += 1
                    events.append(NackPublisher.of(publication.key, ssrc, again))
                bitrate = publication.cap.due(now, config.max_bitrate, config.min_bitrate)
                if bitrate is not None:
                    events.append(LimitBitrate(publication.key, ssrc, bitrate))
        if now >= self._adapt_due:
            self._adapt_due = now + config.adapt.interval
            self._prune_slots()
            if config.adapt.enabled:
                events += self._adapt(now)
        return events

    def _prune_slots(self) -> None:
        """Drop from each publication's list the slots that moved to another source. Until
        then such a slot only costs a ``rewrite`` that declines each packet: every use of
        the list checks the slot's source."""
        for publication in self._publications.values():
            source = publication.source
            publication.slots = [
                s
                for s in publication.slots
                if s.rewriter.current is source or s.rewriter.pending is source
            ]

    # -- adaptive quality -----------------------------------------------------------------

    def _link(self, subscriber: str) -> adapt.SubscriberLink:
        link = self._links.get(subscriber)
        if link is None:
            link = self._links[subscriber] = adapt.SubscriberLink(self.config.adapt)
        return link

    def _views(
        self, link: adapt.SubscriberLink, now: float, rates: dict[str, float] | None = None
    ) -> list[adapt.SlotView]:
        """``rates``: publication -> its rate now, filled as met (one pass over every
        subscriber asks each publication's rate once, not once per subscriber)."""
        views = []
        for key in link.slots:
            slot = self._slots[key]
            publication = (
                self._publications.get(slot.publication) if slot.publication is not None else None
            )
            if publication is None:
                continue
            rate = rates.get(publication.key) if rates is not None else None
            if rate is None:
                rate = publication.meter.rate(now)
                if rates is not None:
                    rates[publication.key] = rate
            views.append(
                adapt.SlotView(
                    key, publication.key, slot.kind is Kind.VIDEO, rate, slot.paused, slot.order
                )
            )
        return views

    def _report_loss(self, slot: _Slot, highest: int, lost: int, now: float) -> None:
        if slot.subscriber is None:
            return
        current = slot.rewriter.current
        publication = self._publications.get(current.key) if current is not None else None
        upstream = publication.upstream.fraction() if publication is not None else 0.0
        self._links[slot.subscriber].report_loss(slot.key, highest, lost, upstream, now)

    def _adapt(self, now: float) -> list[Event]:
        for publication in self._publications.values():
            publication.upstream.sample(now)
        events: list[Event] = []
        rates: dict[str, float] = {}
        for subscriber, link in list(self._links.items()):
            decision = link.decide(now, self._views(link, now, rates))
            for key in decision.pause:
                events += self._pause(self._slots[key], subscriber)
            for key in decision.resume:
                events += self._resume(self._slots[key], subscriber, now)
        return events

    def _pause(self, slot: _Slot, subscriber: str) -> list[Event]:
        publication_key = slot.publication
        if slot.paused or publication_key is None:
            return []
        slot.rewriter.switch(None)
        slot.paused = True
        publication = self._publications.get(publication_key)
        if publication is not None:
            if slot in publication.slots:
                publication.slots.remove(slot)
            publication.cap.forget(slot.key)  # its REMB no longer holds the publisher back
        self.stats.slots_paused += 1
        return [SlotPaused(slot.key, subscriber, publication_key)]

    def _resume(self, slot: _Slot, subscriber: str, now: float) -> list[Event]:
        publication = (
            self._publications.get(slot.publication) if slot.publication is not None else None
        )
        if not slot.paused or publication is None:
            return []
        slot.paused = False
        self.stats.slots_resumed += 1
        events: list[Event] = [SlotResumed(slot.key, subscriber, publication.key)]
        return events + self._feed(slot, publication, now)

    # -- internals ------------------------------------------------------------------------

    def _feed(self, slot: _Slot, publication: _Publication, now: float) -> list[Event]:
        """Point the slot at the publication: it waits for a keyframe and asks for one."""
        slot.rewriter.switch(publication.source)
        if slot not in publication.slots:
            publication.slots.append(slot)
        if slot.connected and slot.rewriter.wants_keyframe(publication.source):
            return self._request_keyframe(publication, now)
        return []

    def _answer_nack(self, slot: _Slot, lost: list[int], now: float) -> list[Event]:
        events: list[Event] = []
        upstream: list[int] = []
        for out_sequence in lost:
            out_sequence &= 0xFFFF
            entry = slot.history.get(out_sequence) if slot.history is not None else None
            if entry is not None:
                last = slot.resent.get(out_sequence)
                if last is not None and now - last < self.config.resend_interval:
                    self.stats.retransmissions_repeated += 1
                    self.stats.retransmissions_refused += 1
                    continue
                if not slot.retransmit_budget.take(1, now):
                    self.stats.retransmissions_refused += 1
                    continue
                header, payload = entry
                if slot.rtx_ssrc is not None and slot.codec.rtx_payload_type is not None:
                    data = write_rtx(
                        header,
                        payload,
                        slot.codec.rtx_payload_type,
                        slot.rtx_sequence,
                        slot.rtx_ssrc,
                    )
                    slot.rtx_sequence = (slot.rtx_sequence + 1) & 0xFFFF
                else:
                    data = header + payload
                self.stats.retransmitted_from_history += 1
                self._resent(slot, out_sequence, now)
                events.append(SendRtp(slot.key, data))
                continue
            sequence = slot.rewriter.source_sequence(out_sequence)
            if sequence is not None:
                upstream.append(sequence)
        current = slot.rewriter.current
        publication = self._publications.get(current.key) if current is not None else None
        if upstream and publication is not None and publication.ssrc is not None:
            fresh = publication.loss.requested(upstream, now)
            if fresh:
                self.stats.nacks_to_publishers += 1
                events.append(NackPublisher.of(publication.key, publication.ssrc, fresh))
        return events

    def _resent(self, slot: _Slot, out_sequence: int, now: float) -> None:
        resent = slot.resent
        resent.pop(out_sequence, None)  # keep insertion order = time order
        resent[out_sequence] = now
        if len(resent) > self.config.history_size:  # bounded like the history it indexes
            for key in list(resent)[: len(resent) - self.config.history_size]:
                del resent[key]

    def _request_keyframe(self, publication: _Publication, now: float) -> list[Event]:
        if publication.ssrc is None:
            # Nothing received yet: the first packet tells the SSRC; tick() asks then.
            publication.throttle.defer()
            return []
        if publication.throttle.request(now):
            self.stats.keyframe_requests += 1
            return [RequestKeyframe(publication.key, publication.ssrc)]
        return []

    def _slot(self, key: str) -> _Slot:
        try:
            return self._slots[key]
        except KeyError:
            raise ValueError(f"no slot {key}") from None

    def _publication(self, key: str) -> _Publication:
        try:
            return self._publications[key]
        except KeyError:
            raise ValueError(f"no publication {key}") from None
