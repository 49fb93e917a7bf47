"""Adaptive quality, sans-IO: a weak subscriber loses its lowest-priority video slots, never
audio, never the pinned ones first; slots come back one at a time after quiet; a resumed slot
starts on a keyframe; the publisher's REMB is not dragged down by a paused or weak subscriber.

The forwarder is driven in simulated time (:class:`Sim`): three video publications and one
audio publication send at fixed rates, two subscribers ("strong", "weak") receive all four,
and the tests play the subscribers' receiver reports and REMBs.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sfu.adapt import (
    AdaptConfig,
    Decision,
    RateMeter,
    SequenceLoss,
    SlotView,
    SubscriberLink,
)
from edge.sfu.forwarder import (
    Codec,
    Event,
    Forwarder,
    ForwarderConfig,
    Kind,
    LimitBitrate,
    RequestKeyframe,
    SendRtp,
    SlotPaused,
    SlotResumed,
)
from edge.sfu.packets import MediaPacket, parse_rtp
from edge.sfu.rewrite import SlotPhase

VP8 = Codec("video/VP8", 90_000, 96)
OPUS = Codec("audio/opus", 48_000, 111)
KEY = bytes([0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00])  # VP8 descriptor, keyframe start
INTER = bytes([0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00])
VIDEOS = ("alice/v", "bob/v", "carol/v")
AUDIO = "alice/a"
PUBLICATIONS = (*VIDEOS, AUDIO)
SSRC = {key: 0x1000 + i for i, key in enumerate(PUBLICATIONS)}
# per publication: packets per step (10 ms) and payload bytes (+ 12 of RTP header):
# video 200 kbit/s, audio 64 kbit/s; weak's link below carries 400 kbit/s: one video fits
RATE = {**{v: (1, 238) for v in VIDEOS}, AUDIO: (1, 68)}
WEAK = 400_000


class Sim:
    """A forwarder in simulated time with publishers that answer keyframe requests."""

    step = 0.01

    def __init__(self, config: ForwarderConfig | None = None) -> None:
        self.fwd = Forwarder(config or ForwarderConfig(), random.Random(3))
        self.now = 0.0
        self.seq = dict.fromkeys(PUBLICATIONS, 1000)
        self.want_key = set(PUBLICATIONS)
        self.answer_keyframes = True  # publishers send a keyframe when asked
        self.events: list[tuple[float, Event]] = []
        self.slot_ssrc: dict[str, int] = {}
        self.received: dict[str, int] = {}  # slot -> packets sent to it (the receiver's view)
        self.reported: dict[str, tuple[int, int]] = {}  # slot -> (highest, cumulative lost)
        self.upstream_drop: Callable[[MediaPacket], bool] | None = None  # lost before the SFU
        for key in VIDEOS:
            self.fwd.publish(key, Kind.VIDEO, VP8)
        self.fwd.publish(AUDIO, Kind.AUDIO, OPUS)
        for n, who in enumerate(("strong", "weak")):
            for i, key in enumerate(PUBLICATIONS):
                slot = f"{who}#{key}"
                ssrc = 0x10_000 * (n + 1) + i
                video = key in VIDEOS
                self.fwd.add_slot(
                    slot,
                    Kind.VIDEO if video else Kind.AUDIO,
                    VP8 if video else OPUS,
                    ssrc,
                    subscriber=who,
                )
                self.slot_ssrc[slot] = ssrc
                self._record(self.fwd.assign(slot, key, self.now))

    def _record(self, events: list[Event]) -> None:
        for event in events:
            self.events.append((self.now, event))
            if isinstance(event, SendRtp):
                self.received[event.slot] = self.received.get(event.slot, 0) + 1
            elif isinstance(event, RequestKeyframe) and self.answer_keyframes:
                self.want_key.add(event.publication)

    def run(self, seconds: float, every: float = 0.5, feedback: object = None) -> None:
        """Media for ``seconds``; every ``every`` s call ``feedback(sim)`` (reports)."""
        end = self.now + seconds
        next_feedback = self.now
        while self.now < end - 1e-9:
            self.now = round(self.now + self.step, 6)
            for key in PUBLICATIONS:
                count, size = RATE[key]
                for _ in range(count):
                    self.seq[key] = (self.seq[key] + 1) & 0xFFFF
                    head = KEY if key in self.want_key else INTER
                    self.want_key.discard(key)
                    packet = MediaPacket(
                        payload_type=VP8.payload_type if key in VIDEOS else OPUS.payload_type,
                        sequence_number=self.seq[key],
                        timestamp=int(self.now * 90_000),
                        ssrc=SSRC[key],
                        payload=head + bytes(size - len(head)),
                    )
                    if self.upstream_drop is None or not self.upstream_drop(packet):
                        self._record(self.fwd.forward(key, packet, self.now))
            self._record(self.fwd.tick(self.now))
            if feedback is not None and self.now >= next_feedback:
                next_feedback = self.now + every
                feedback(self)  # type: ignore[operator]

    def rr(self, slot: str, fraction: float) -> None:
        """A receiver report: ``fraction`` of what was sent since the last one was lost
        (cumulative counters, as RFC 3550 has them; the sequence number wraps at 2^16)."""
        highest, lost = self.reported.get(slot, (0, 0))
        sent = self.received.get(slot, 0) - highest
        lost += round(sent * fraction)
        highest += sent
        self.reported[slot] = (highest, lost)
        report = RtcpReceiverInfo(
            ssrc=self.slot_ssrc[slot],
            fraction_lost=min(255, int(fraction * 256)),
            packets_lost=lost,
            highest_sequence=(0xFFF0 + highest) & 0xFFFF,
            jitter=0,
            lsr=0,
            dlsr=0,
        )
        packet = RtcpRrPacket(ssrc=1, reports=[report])
        self._record(self.fwd.subscriber_rtcp(slot, packet, self.now))

    def remb(self, slot: str, bitrate: int, slots: list[str] | None = None) -> None:
        ssrcs = [self.slot_ssrc[s] for s in (slots or [slot])]
        packet = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs)
        )
        self._record(self.fwd.subscriber_rtcp(slot, packet, self.now))

    def loss(self, who: str, fraction: float) -> None:
        """Every active slot of ``who`` reports ``fraction`` lost."""
        for key in PUBLICATIONS:
            slot = f"{who}#{key}"
            if not self.fwd.paused(slot):
                self.rr(slot, fraction)

    def paused(self, who: str) -> list[str]:
        return [k for k in PUBLICATIONS if self.fwd.paused(f"{who}#{k}")]

    def of(self, kind: type, since: float = 0.0) -> list:  # type: ignore[type-arg]
        return [e for t, e in self.events if isinstance(e, kind) and t >= since]

    def sent_to(self, slot: str, since: float) -> list[bytes]:
        return [
            e.data
            for t, e in self.events
            if isinstance(e, SendRtp) and e.slot == slot and t >= since
        ]


def weak_link(capacity: float) -> object:
    """Feedback from a link that carries ``capacity`` bit/s: weak's reports show the loss
    its active slots' rates would suffer; strong reports none."""

    def feedback(sim: Sim) -> None:
        need = sum(
            sim.fwd.publication_rate(key, sim.now)
            for key in PUBLICATIONS
            if not sim.fwd.paused(f"weak#{key}")
        )
        loss = max(0.0, 1 - capacity / need) if need else 0.0
        sim.loss("weak", loss)
        sim.loss("strong", 0.0)

    return feedback


# -- measuring ------------------------------------------------------------------------------


def test_rate_meter_measures_bytes_over_a_sliding_window() -> None:
    meter = RateMeter(2.0)
    assert meter.rate(0.0) == 0.0
    for i in range(400):  # 1,000 bytes every 10 ms: 800 kbit/s for 4 s
        meter.add(1_000, i * 0.01)
    assert meter.rate(4.0) == pytest.approx(800_000, rel=0.1)
    assert meter.rate(5.0) == pytest.approx(400_000, rel=0.15)  # half the window is silent
    assert meter.rate(6.5) == 0.0
    early = RateMeter(2.0)
    for i in range(50):  # the first half second: not diluted over the whole window
        early.add(1_000, 10.0 + i * 0.01)
    assert early.rate(10.5) == pytest.approx(800_000, rel=0.3)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=65_535), min_size=1, max_size=300),
    st.integers(min_value=0, max_value=65_535),
)
def test_upstream_loss_is_a_fraction_whatever_arrives(steps: list[int], start: int) -> None:
    loss = SequenceLoss(3.0)
    sequence = start
    for i, step in enumerate(steps):
        sequence = (sequence + step) & 0xFFFF
        loss.packet(sequence)
        loss.sample(i * 0.1)
        assert 0.0 <= loss.fraction() <= 1.0


def test_upstream_loss_counts_gaps_not_restarts() -> None:
    loss = SequenceLoss(10.0)
    t = 0.0
    for sequence in range(65_000, 65_000 + 1_000):
        if sequence % 10 != 0:  # every tenth packet lost on the publisher's leg
            loss.packet(sequence & 0xFFFF)  # across the 2^16 wrap
        t += 0.01
        loss.sample(t)
    assert loss.fraction() == pytest.approx(0.1, abs=0.01)
    clean = SequenceLoss(10.0)
    for i in range(100):
        clean.packet(i)
        clean.sample(i * 0.01)
    for i in range(100):  # the stream restarts 30,000 numbers on: not 30,000 losses
        clean.packet(30_000 + i)
        clean.sample(1 + i * 0.01)
    assert clean.fraction() == pytest.approx(0.0, abs=0.02)


# -- pausing --------------------------------------------------------------------------------


def test_a_weak_subscriber_loses_its_lowest_priority_videos_first_and_never_audio() -> None:
    sim = Sim()
    sim.run(3.0, feedback=weak_link(10e6))
    assert sim.paused("weak") == [] and sim.of(SlotPaused) == []
    # weak's link now carries 400 kbit/s: audio 64 + one video 200 fits, not two
    start = sim.now
    sim.run(2.5, feedback=weak_link(WEAK))
    paused = sim.of(SlotPaused)
    assert {(e.subscriber, e.slot) for e in paused} == {
        ("weak", "weak#carol/v"),
        ("weak", "weak#bob/v"),
    }
    # latest-assigned first, in one decision: the estimate says how much must go
    assert [e.publication for e in paused] == ["carol/v", "bob/v"]
    assert len({t for t, e in sim.events if isinstance(e, SlotPaused)}) == 1
    assert sim.paused("weak") == ["bob/v", "carol/v"]
    assert sim.paused("strong") == []
    # not at the first bad report: the overload had to last (hysteresis)
    first = min(t for t, e in sim.events if isinstance(e, SlotPaused))
    assert first - start >= sim.fwd.config.adapt.pause_after
    # a paused slot sends nothing; the others (strong's all, weak's audio and alice) flow
    later = first + 0.05
    assert sim.sent_to("weak#bob/v", later) == []
    assert sim.sent_to("weak#carol/v", later) == []
    for slot in ("weak#alice/v", "weak#alice/a", *(f"strong#{k}" for k in PUBLICATIONS)):
        assert sim.sent_to(slot, later), slot
    assert sim.fwd.stats.slots_paused == 2


def test_a_paused_slot_retransmits_nothing() -> None:
    sim = Sim()
    sim.run(2.0, feedback=weak_link(10e6))
    sent = sim.sent_to("weak#bob/v", 0.0)
    sim.run(3.0, feedback=weak_link(WEAK))
    assert sim.fwd.paused("weak#bob/v")
    last = parse_rtp(sent[-1]).sequence_number
    nack = RtcpRtpfbPacket(
        fmt=RTCP_RTPFB_NACK,
        ssrc=1,
        media_ssrc=sim.slot_ssrc["weak#bob/v"],
        lost=[last, (last - 1) & 0xFFFF],
    )
    assert sim.fwd.subscriber_rtcp("weak#bob/v", nack, sim.now) == []
    # the same NACK on an active slot is answered from its history
    strong = parse_rtp(sim.sent_to("strong#bob/v", 0.0)[-1]).sequence_number
    nack = RtcpRtpfbPacket(
        fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sim.slot_ssrc["strong#bob/v"], lost=[strong]
    )
    assert len(sim.fwd.subscriber_rtcp("strong#bob/v", nack, sim.now)) == 1


def test_audio_is_never_paused_even_when_nothing_fits() -> None:
    sim = Sim()
    sim.run(2.0, feedback=weak_link(10e6))
    sim.run(3.0, feedback=weak_link(30_000))  # less than audio alone
    assert sim.paused("weak") == list(VIDEOS)
    assert sim.sent_to("weak#alice/a", sim.now - 1.0)
    assert all(e.publication != AUDIO for e in sim.of(SlotPaused))


def test_pinned_slots_are_kept_and_pinning_swaps_a_paused_slot_in() -> None:
    sim = Sim()
    sim.fwd.set_priority("weak", ["carol/v"], sim.now)  # e.g. carol shares her screen
    sim.run(2.0, feedback=weak_link(10e6))
    sim.run(3.0, feedback=weak_link(WEAK))
    assert sim.paused("weak") == ["alice/v", "bob/v"]  # carol kept though assigned last
    # bob becomes the active speaker: pinned first, he is swapped in for carol before any
    # probe (the same load, and the link is not over)
    swap_at = sim.now
    sim.fwd.set_priority("weak", ["bob/v"], sim.now)
    sim.run(1.0, feedback=weak_link(WEAK))
    assert sim.paused("weak") == ["alice/v", "carol/v"]
    assert [e.publication for e in sim.of(SlotResumed, swap_at)] == ["bob/v"]
    assert [e.publication for e in sim.of(SlotPaused, swap_at)] == ["carol/v"]
    # the link recovers: carol, pinned a moment ago, outranks alice (most recently active)
    recovered = sim.now
    sim.run(15.0, feedback=weak_link(10e6))
    assert [e.publication for e in sim.of(SlotResumed, recovered)] == ["carol/v", "alice/v"]


def test_unknown_publication_in_a_priority_is_refused() -> None:
    sim = Sim()
    with pytest.raises(ValueError, match="no publication dave/v"):
        sim.fwd.set_priority("weak", ["alice/v", "dave/v"], 0.0)
    with pytest.raises(ValueError, match="names a publication twice"):
        sim.fwd.set_priority("weak", ["alice/v", "alice/v"], 0.0)


# -- resuming -------------------------------------------------------------------------------


def test_resume_one_at_a_time_after_quiet_and_on_a_keyframe() -> None:
    sim = Sim()
    config = sim.fwd.config.adapt
    sim.run(2.0, feedback=weak_link(10e6))
    sim.run(3.0, feedback=weak_link(WEAK))
    assert sim.paused("weak") == ["bob/v", "carol/v"]
    paused_at = max(t for t, e in sim.events if isinstance(e, SlotPaused))
    # the link recovers: no loss any more
    sim.run(20.0, feedback=weak_link(10e6))
    resumed = [(t, e) for t, e in sim.events if isinstance(e, SlotResumed)]
    assert [e.publication for _, e in resumed] == ["bob/v", "carol/v"]  # priority order
    first, second = resumed[0][0], resumed[1][0]
    assert first - paused_at >= config.resume_after  # quiet for a while, not at once
    assert second - first >= config.resume_after  # one at a time, each a probe
    assert sim.paused("weak") == []
    # each resumed slot asked its publisher for a keyframe and started on one
    for t, event in resumed:
        assert RequestKeyframe(event.publication, SSRC[event.publication]) in [
            e for u, e in sim.events if u == t
        ]
        (first_packet, *_) = sim.sent_to(event.slot, t)
        assert parse_rtp(first_packet).payload.startswith(KEY)
    assert sim.fwd.stats.slots_resumed == 2


def test_a_resumed_slot_waits_for_its_keyframe() -> None:
    sim = Sim()
    sim.run(2.0, feedback=weak_link(10e6))
    sim.run(3.0, feedback=weak_link(WEAK))
    assert sim.paused("weak") == ["bob/v", "carol/v"]
    since = sim.now
    sim.want_key.clear()
    sim.answer_keyframes = False  # publishers ignore keyframe requests now
    sim.run(5.0, feedback=weak_link(10e6))
    (resumed, *_) = sim.of(SlotResumed)
    assert sim.fwd.phase(resumed.slot) is SlotPhase.WAITING_KEYFRAME
    assert sim.sent_to(resumed.slot, since) == []
    sim.want_key.add(resumed.publication)
    sim.run(0.05)
    assert sim.fwd.phase(resumed.slot) is SlotPhase.FORWARDING


def test_a_failed_probe_doubles_the_wait() -> None:
    sim = Sim()
    config = sim.fwd.config.adapt
    sim.run(2.0, feedback=weak_link(10e6))
    sim.run(33.0, feedback=weak_link(WEAK))  # stays weak: every probe fails
    resumes = [t for t, e in sim.events if isinstance(e, SlotResumed)]
    pauses = sorted({t for t, e in sim.events if isinstance(e, SlotPaused)})
    assert len(resumes) >= 2
    # each probe was paused again; the quiet wait before each probe grew (the wait counts
    # from the first report that shows the link quiet, a second or two after the pause)
    waits = [r - max(p for p in pauses if p < r) for r in resumes]
    assert all(b > a + config.resume_after for a, b in zip(waits, waits[1:], strict=False))
    assert waits[0] >= config.resume_after
    assert waits[-1] <= config.resume_after_max + config.settle + 0.5
    assert sim.paused("weak") == ["bob/v", "carol/v"]
    assert sim.paused("strong") == []


def test_upstream_loss_is_not_blamed_on_the_subscriber() -> None:
    sim = Sim()

    def feedback(sim: Sim) -> None:
        # every subscriber reports 20 % lost, because the publishers' legs lose 20 %
        sim.loss("weak", 0.2)
        sim.loss("strong", 0.2)

    sim.upstream_drop = lambda packet: packet.sequence_number % 5 == 0
    sim.run(10.0, feedback=feedback)
    assert sim.of(SlotPaused) == []


# -- the publisher's REMB -------------------------------------------------------------------


def test_the_publisher_is_not_dragged_down_by_a_paused_or_weak_subscriber() -> None:
    sim = Sim()

    def feedback(sim: Sim) -> None:
        weak_link(WEAK)(sim)  # type: ignore[operator]
        for key in VIDEOS:
            sim.remb(f"strong#{key}", 1_500_000)
            sim.remb(f"weak#{key}", 190_000)  # far below the others, and below the floor

    sim.run(3.5, feedback=feedback)
    assert sim.paused("weak") == ["bob/v", "carol/v"]
    paused_at = max(t for t, e in sim.events if isinstance(e, SlotPaused))
    since = sim.now
    sim.run(paused_at + sim.fwd.config.adapt.resume_after - since - 0.5, feedback=feedback)
    assert sim.paused("weak") == ["bob/v", "carol/v"]  # no probe yet
    late = sim.of(LimitBitrate, since)
    floor = sim.fwd.config.min_bitrate
    for key in VIDEOS:
        asked = [e.bitrate for e in late if e.publication == key]
        assert asked, key
        # bob and carol: only strong's REMB counts (weak's slots are paused);
        # alice: weak still receives her, but not below the floor
        expected = floor if key == "alice/v" else 1_500_000
        assert all(abs(b - expected) <= expected * 0.01 for b in asked), (key, asked)
    assert min(e.bitrate for e in sim.of(LimitBitrate)) >= floor


def test_a_transport_wide_remb_sizes_the_cut_when_the_link_loses_some() -> None:
    # a browser's REMB names every SSRC of the transport: one estimate for all slots
    weak_videos = [f"weak#{k}" for k in VIDEOS]

    def feedback(loss: float) -> object:
        def send(sim: Sim) -> None:
            sim.loss("weak", loss)
            sim.loss("strong", 0.0)
            for slot in weak_videos:  # routed to every slot it names
                sim.remb(slot, 250_000, weak_videos)

        return send

    # 3 x 200 kbit/s under a 250 kbit/s estimate (less than half) and no loss: a receiver's
    # REMB alone is not trusted with a tile (aiortc's read 0.35 of what its link carried)
    alone = Sim()
    alone.run(10.0, feedback=feedback(0.0))
    assert alone.of(SlotPaused) == []
    assert not alone.fwd.link_estimate("weak", alone.now).over
    # with 4 % loss (GCC's hold band) the REMB decides, and sizes the cut: one video fits
    sim = Sim()
    sim.run(4.0, feedback=feedback(0.04))
    assert sim.paused("weak") == ["bob/v", "carol/v"]
    assert len({t for t, e in sim.events if isinstance(e, SlotPaused)}) == 1
    estimate = sim.fwd.link_estimate("weak", sim.now)
    assert estimate.remb == pytest.approx(250_000, rel=0.01)
    assert not estimate.over


def test_a_subscriber_without_feedback_or_adaptation_is_left_alone() -> None:
    sim = Sim(ForwarderConfig(adapt=AdaptConfig(enabled=False)))
    sim.run(10.0, feedback=weak_link(100_000))
    assert sim.of(SlotPaused) == []
    quiet = Sim()
    quiet.run(10.0)  # no reports at all: nothing is known, nothing changes
    assert quiet.of(SlotPaused) == [] and quiet.of(SlotResumed) == []


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="resume_loss <= pause_loss"):
        AdaptConfig(pause_loss=0.01, resume_loss=0.05)
    with pytest.raises(ValueError, match="min_bitrate must be between"):
        ForwarderConfig(min_bitrate=3_000_000)


def test_unpublishing_a_paused_slot_idles_it() -> None:
    sim = Sim()
    sim.run(2.0, feedback=weak_link(10e6))
    sim.run(3.0, feedback=weak_link(WEAK))
    assert sim.fwd.paused("weak#carol/v")
    events = sim.fwd.unpublish("carol/v")
    assert {e.slot for e in events} == {"strong#carol/v", "weak#carol/v"}  # type: ignore[union-attr]
    assert not sim.fwd.paused("weak#carol/v")
    assert sim.fwd.phase("weak#carol/v") is SlotPhase.IDLE


# -- the policy as a property ---------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[SlotView], list[tuple[str, float, float]]]:
    count = draw(st.integers(min_value=1, max_value=5))
    slots = [
        SlotView(
            f"s{i}",
            f"p{i}",
            video=draw(st.booleans()) or i == 0,
            rate=draw(st.floats(min_value=0, max_value=2e6)),
            paused=False,
            order=i,
        )
        for i in range(count)
    ]
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["loss", "remb", "pin", "wait"]),
                st.floats(min_value=0, max_value=1),
                st.floats(min_value=0.01, max_value=3.0),
            ),
            max_size=60,
        )
    )
    return slots, steps


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_decisions_follow_priority_and_hysteresis(
    scenario: tuple[list[SlotView], list[tuple[str, float, float]]],
) -> None:
    slots, steps = scenario
    config = AdaptConfig()
    link = SubscriberLink(config)
    for i, slot in enumerate(slots):
        link.add_slot(slot.key, 100 + i)
    state = {s.key: s for s in slots}
    counters = dict.fromkeys(state, (0, 0))  # slot -> (highest, cumulative lost)
    now = 0.0
    last_change: float | None = None
    for what, value, dt in steps:
        now += dt
        active = [s for s in state.values() if not s.paused]
        if what == "loss":
            for slot in active:
                highest, lost = counters[slot.key]
                counters[slot.key] = (highest + 50, lost + round(50 * value))
                link.report_loss(slot.key, *counters[slot.key], 0.0, now)
        elif what == "remb":
            link.report_remb([100 + i for i in range(len(slots))], value * 4e6, now)
        elif what == "pin":
            pins = [s.publication for s in slots if value > 0.5 or s.order % 2]
            link.pin(pins, now)
        views = list(state.values())
        ranked = link.rank(v for v in views if v.video)
        decision: Decision = link.decide(now, views)
        if not decision.pause and not decision.resume:
            continue
        # never audio, never twice within the settle time
        assert all(state[k].video for k in (*decision.pause, *decision.resume))
        if last_change is not None:
            assert now - last_change >= config.settle
        last_change = now
        active_ranked = [v.key for v in ranked if not v.paused]
        paused_ranked = [v.key for v in ranked if v.paused]
        if decision.pause and not decision.resume:
            # the lowest-priority active slots, from the bottom up
            assert list(decision.pause) == active_ranked[::-1][: len(decision.pause)]
        if decision.resume:
            assert list(decision.resume) == paused_ranked[:1]  # one, the highest priority
        for key in decision.pause:
            state[key] = dataclasses.replace(state[key], paused=True)
        for key in decision.resume:
            state[key] = dataclasses.replace(state[key], paused=False)


def drive(
    link: SubscriberLink, slots: list[SlotView], loss: float, remb: float, seconds: float
) -> list[SlotView]:
    """Receiver reports with ``loss`` on every active slot and one REMB of ``remb`` naming
    them all, every 0.25 s; the slots as the link's decisions leave them."""
    state = {s.key: s for s in slots}
    counters = dict.fromkeys(state, (0, 0))
    now = 0.0
    while now < seconds:
        now += 0.25
        for slot in state.values():
            if not slot.paused:
                highest, lost = counters[slot.key]
                counters[slot.key] = (highest + 50, lost + round(50 * loss))
                link.report_loss(slot.key, *counters[slot.key], 0.0, now)
        link.report_remb([100 + i for i in range(len(slots))], remb, now)
        decision = link.decide(now, list(state.values()))
        for key in decision.pause:
            state[key] = dataclasses.replace(state[key], paused=True)
        for key in decision.resume:
            state[key] = dataclasses.replace(state[key], paused=False)
    return list(state.values())


def videos(count: int, link: SubscriberLink) -> list[SlotView]:
    slots = [SlotView(f"v{i}", f"p{i}", True, 500_000, False, i) for i in range(count)]
    for i, slot in enumerate(slots):
        link.add_slot(slot.key, 100 + i)
    return slots


def test_the_last_video_goes_only_at_last_video_loss() -> None:
    config = AdaptConfig()
    # C2 in a 1:1 call: 5 % loss and jitter, a GCC receiver's REMB far below the stream
    link = SubscriberLink(config)
    after = drive(link, videos(1, link), loss=0.05, remb=50_000, seconds=20)
    assert [s.paused for s in after] == [False]
    # reordering read as loss over pause_loss, still under last_video_loss: kept
    link = SubscriberLink(config)
    after = drive(link, videos(1, link), loss=0.15, remb=50_000, seconds=20)
    assert [s.paused for s in after] == [False]
    # with three videos the same link keeps one: the highest priority
    link = SubscriberLink(config)
    after = drive(link, videos(3, link), loss=0.15, remb=50_000, seconds=20)
    assert [s.paused for s in after] == [False, True, True]
    # loss at last_video_loss: the last video goes too (audio would stay)
    link = SubscriberLink(config)
    after = drive(link, videos(1, link), loss=0.3, remb=50_000, seconds=20)
    assert [s.paused for s in after] == [True]
