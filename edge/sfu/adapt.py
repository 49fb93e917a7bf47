"""Adaptive quality: which of a subscriber's video slots its link can carry (sans-IO).

Theory of operation: the SFU cannot make one publisher's stream smaller for one receiver
(no simulcast, no scalable layers, no transcoding: see ``docs/sfu.md``, "Adaptive
quality"), so a receiver on a weak link gets *fewer* streams instead: its lowest-priority
video slots are paused, never its audio, and resumed one at a time when the link shows
headroom again. Everybody else keeps every stream at the publisher's full rate.

Per publication the forwarder measures, on ingress, the rate it sends (:class:`RateMeter`,
bytes over a sliding window) and the loss on the publisher's own leg
(:class:`SequenceLoss`, sequence numbers expected against packets received). Per
subscriber (the slots of one participant's subscribe connection: one transport)
:class:`SubscriberLink` keeps

* its **loss**: packets lost over packets expected, added up over its active slots, from
  the cumulative counters of their receiver reports (packets lost, highest sequence
  number) over ``loss_window``, less what the publisher's leg already lost (a gap the SFU
  forwards is counted by every subscriber); unknown below ``loss_min_packets`` (two
  losses in a 10-packet video interval are not 20 % loss). Not the reports' "fraction
  lost": that is per report interval and never below zero, so under jitter a packet that
  overtakes others counts as lost in one interval and is not given back in the next (5 %
  loss with 200 ms of jitter read as 10-30 %). A cut is sized with each slot's loss
  weighted by its rate (a full link drops big video packets more often than small audio
  ones), the last report interval if it is worse;
* its **REMB**: the latest estimate per group of SSRCs a REMB names. A browser sends one
  REMB for the whole transport naming every SSRC (one group); aiortc sends one per video
  receiver naming its own SSRC (one group per slot). The groups that cover an active slot
  add up to the estimate, which bounds the rate of the slots they cover;
* the subscriber's **priority order** (:meth:`SubscriberLink.pin`): the publications the
  signalling layer pins (active speaker, screen share), in its order, first; then those
  pinned before, most recently pinned first ("most recently active"); then the rest in
  the order their slots were assigned.

From these, :meth:`SubscriberLink.estimate` says whether the link is *over*: the loss is
at least ``pause_loss`` (what it carries is then about ``need × (1 − loss by rate)``), or
the loss is at least ``resume_loss`` and the REMB is below ``remb_over`` of the rate it
covers (it carries about the REMB). Loss leads; the REMB decides only inside GCC's "hold"
band: aiortc's receiver REMB read 0.35 of a stream its link carried without loss, and
jitter alone made it read 0.55-0.75 (a GCC receiver answers any delay it reads as overuse
with 0.85 × what it receives, and does not climb back for seconds).

When the link has been over for ``pause_after``, :meth:`SubscriberLink.decide` pauses video
slots, lowest priority first, until the rest fit in ``fit_margin`` of that capacity (pinned
slots go last, audio never; the last video only at ``last_video_loss``, never on the REMB
alone). It resumes the highest-priority paused slot when the link has
been *quiet* (not over, loss known and below ``resume_loss``) for ``resume_wait``: a
probe. Between the two loss thresholds the link holds what it has (a link with steady
random loss neither loses nor regains tiles). A REMB cannot show headroom (a GCC
receiver's estimate never exceeds 1.5 × what it receives), so the only way to learn that
a link carries one more stream is to send it; a probe that is paused again within
``probe_hold`` doubles the wait (up to ``resume_after_max``), one that holds resets it.
After every change nothing else changes for ``settle`` seconds, and receiver reports
younger than ``loss_grace`` after it are not used (they still describe the old load). A
paused slot of higher priority than an active one is swapped in at once when the link is
not over (the active speaker changed on a weak link).

Nothing here reads a clock or does I/O; ``now`` comes in. The forwarder applies the
decisions (``edge.sfu.forwarder``: a paused slot sends nothing, a resumed one waits for a
keyframe and asks for one) and tells the signalling layer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SEQUENCE_MASK = 0xFFFF


@dataclass(frozen=True)
class AdaptConfig:
    enabled: bool = True
    interval: float = 0.5  # seconds between two looks at every subscriber
    rate_window: float = 2.0  # a publication's rate: bytes received over this window
    remb_max_age: float = 5.0  # a REMB counts for this long
    # with some loss (resume_loss..pause_loss), over when a REMB is below this share of the
    # rate it covers (aiortc's REMB read 0.55-0.75 under jitter alone, see above)
    remb_over: float = 0.5
    loss_window: float = 5.0  # receiver reports younger than this make the loss
    loss_grace: float = 1.0  # reports this soon after a change describe the old load
    loss_min_packets: int = 100  # fewer expected in the window: the loss is not known
    pause_loss: float = 0.10  # over at or above this fraction lost (GCC's "high loss")
    resume_loss: float = 0.02  # quiet below this fraction lost (GCC's "low loss")
    pause_after: float = 1.0  # over for this long before anything is paused
    last_video_loss: float = 0.2  # a subscriber's last video is paused only at this loss
    fit_margin: float = 0.9  # pause until the active slots need at most this share
    settle: float = 2.0  # after a change, no other change for this long
    resume_after: float = 3.0  # quiet for this long before a paused slot is resumed
    resume_after_max: float = 12.0  # the wait doubles after each failed probe, up to this
    probe_hold: float = 5.0  # a resumed slot not paused again within this has held

    def __post_init__(self) -> None:
        for name in ("interval", "rate_window", "remb_max_age", "loss_window", "settle"):
            if getattr(self, name) <= 0:
                raise ValueError(f"adapt.{name} must be positive, not {getattr(self, name)}")
        if not self.pause_loss <= self.last_video_loss <= 1:
            raise ValueError(
                f"adapt needs pause_loss <= last_video_loss <= 1, not "
                f"{self.pause_loss}, {self.last_video_loss}"
            )
        if not 0 < self.resume_loss <= self.pause_loss < 1:
            raise ValueError(
                f"adapt needs 0 < resume_loss <= pause_loss < 1, not "
                f"{self.resume_loss}, {self.pause_loss}"
            )
        if not 0 < self.fit_margin <= 1 or not 0 < self.remb_over <= 1:
            raise ValueError(
                f"adapt.fit_margin and adapt.remb_over must be in (0, 1], not "
                f"{self.fit_margin}, {self.remb_over}"
            )
        if not 0 < self.resume_after <= self.resume_after_max:
            raise ValueError(
                f"adapt needs 0 < resume_after <= resume_after_max, not "
                f"{self.resume_after}, {self.resume_after_max}"
            )


# -- per publication ------------------------------------------------------------------------


class RateMeter:
    """Bytes over a sliding window of ``window`` seconds, in ``buckets`` steps; bit/s out."""

    __slots__ = ("_span", "_counts", "_index", "_first")

    def __init__(self, window: float, buckets: int = 8) -> None:
        if window <= 0 or buckets < 2:
            raise ValueError(f"a rate meter needs a positive window and 2+ buckets, not {window}")
        self._span = window / buckets
        self._counts = [0] * buckets
        self._index: int | None = None  # bucket number (now / span) of the latest add
        self._first: float | None = None

    def add(self, size: int, now: float) -> None:
        index = int(now / self._span)
        if index != self._index:
            self._advance(index)
            if self._first is None:
                self._first = now
        self._counts[index % len(self._counts)] += size

    def rate(self, now: float) -> float:
        """Bit/s over the window ending now (over less since the first byte, at the start)."""
        if self._first is None:
            return 0.0
        self._advance(int(now / self._span))
        span = self._span
        covered = (len(self._counts) - 1) * span + (now - int(now / span) * span)
        covered = max(span, min(covered, now - self._first))
        return sum(self._counts) * 8 / covered

    def _advance(self, index: int) -> None:
        last = self._index
        if last is not None and index <= last:
            return
        counts = self._counts
        steps = len(counts) if last is None else min(index - last, len(counts))
        for i in range(index - steps + 1, index + 1):
            counts[i % len(counts)] = 0
        self._index = index


class SequenceLoss:
    """The fraction of a publication's packets that never reached the SFU, over a window.

    :meth:`packet` counts each packet received (retransmissions that fill a gap count, as
    they do at the subscriber); :meth:`sample` is called at a steady pace and keeps
    (time, expected, received) for ``window`` seconds; :meth:`fraction` compares them."""

    __slots__ = ("_window", "_highest", "_base", "_received", "_samples")

    def __init__(self, window: float) -> None:
        self._window = window
        self._highest: int | None = None  # extended sequence number
        self._base = 0
        self._received = 0
        self._samples: deque[tuple[float, int, int]] = deque()

    def packet(self, sequence: int) -> None:
        highest = self._highest
        if highest is None:
            self._highest = self._base = sequence
            self._received = 1
            return
        ahead = ((sequence - highest + 0x8000) & SEQUENCE_MASK) - 0x8000
        if ahead > 1000:  # a restarted stream, not a loss: do not count the jump
            self._base += ahead - 1
        if ahead > 0:
            self._highest = highest + ahead
        self._received += 1

    def sample(self, now: float) -> None:
        if self._highest is None:
            return
        samples = self._samples
        samples.append((now, self._highest - self._base + 1, self._received))
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()

    def fraction(self) -> float:
        samples = self._samples
        if len(samples) < 2:
            return 0.0
        _, expected_0, received_0 = samples[0]
        _, expected_1, received_1 = samples[-1]
        expected = expected_1 - expected_0
        if expected <= 0:
            return 0.0
        return max(0.0, min(1.0, (expected - (received_1 - received_0)) / expected))


# -- per subscriber -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotView:
    """One assigned slot of a subscriber as the forwarder sees it now."""

    key: str
    publication: str
    video: bool
    rate: float  # bit/s its publication sends: what the slot carries while active
    paused: bool
    order: int  # when its publication was assigned (earlier: higher among the unpinned)


@dataclass(frozen=True, slots=True)
class Estimate:
    need: float  # bit/s of the active slots
    loss: float | None  # own-leg fraction lost, rate-weighted; None without fresh reports
    remb: float | None  # the REMB groups that cover active slots, added up
    capacity: float | None  # what the link carries, when it shows a limit
    over: bool  # the link carries less than the active slots need
    quiet: bool  # no sign of a limit: a paused slot may be tried


@dataclass(frozen=True, slots=True)
class Decision:
    pause: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()


class SubscriberLink:
    """One subscriber's link: what it carries, and which of its video slots fit in it."""

    __slots__ = (
        "config",
        "_ssrcs",
        "_losses",
        "_rembs",
        "_pinned",
        "_pinned_at",
        "_changed_at",
        "_over_since",
        "_quiet_since",
        "_last_resume",
        "resume_wait",
    )

    def __init__(self, config: AdaptConfig) -> None:
        self.config = config
        self._ssrcs: dict[int, str] = {}  # slot SSRC -> slot key
        # slot -> (at, extended highest sequence, cumulative lost, upstream loss)
        self._losses: dict[str, deque[tuple[float, int, int, float]]] = {}
        self._rembs: dict[frozenset[str], tuple[float, float]] = {}  # slots -> (bit/s, at)
        self._pinned: tuple[str, ...] = ()
        self._pinned_at: dict[str, float] = {}  # publication -> when it was last pinned
        self._changed_at: float | None = None
        self._over_since: float | None = None
        self._quiet_since: float | None = None
        self._last_resume: float | None = None
        self.resume_wait = config.resume_after

    # -- what the forwarder tells it ----------------------------------------------------

    def add_slot(self, key: str, ssrc: int) -> None:
        self._ssrcs[ssrc] = key

    def remove_slot(self, key: str) -> None:
        self._ssrcs = {s: k for s, k in self._ssrcs.items() if k != key}
        self._losses.pop(key, None)
        self._rembs = {g: v for g, v in self._rembs.items() if key not in g}

    @property
    def slots(self) -> list[str]:
        return list(self._ssrcs.values())

    def pin(self, publications: Sequence[str], now: float) -> None:
        """The signalling layer's order: these publications first (active speaker, screen)."""
        if len(set(publications)) != len(publications):
            raise ValueError(f"a priority order names a publication twice: {list(publications)}")
        self._pinned = tuple(publications)
        for publication in publications:
            self._pinned_at[publication] = now
        if len(self._pinned_at) > 256:  # keep the most recent: history, not a registry
            recent = sorted(self._pinned_at.items(), key=lambda item: item[1])[-256:]
            self._pinned_at = dict(recent)

    def report_loss(
        self, slot: str, highest_sequence: int, packets_lost: int, upstream: float, now: float
    ) -> None:
        """A receiver report block about ``slot``: its highest sequence number (the low 16
        bits are used: aiortc does not extend it) and cumulative packets lost;
        ``upstream``: the fraction the publisher's leg lost before the SFU."""
        reports = self._losses.setdefault(slot, deque(maxlen=16))
        highest = highest_sequence & SEQUENCE_MASK
        if reports:
            last = reports[-1][1]
            highest = last + (((highest - last + 0x8000) & SEQUENCE_MASK) - 0x8000)
        reports.append((now, highest, packets_lost, upstream))

    @staticmethod
    def _lost(
        first: tuple[float, int, int, float], last: tuple[float, int, int, float]
    ) -> tuple[float, float]:
        """(lost, expected) on this leg between two reports: what the publisher's leg lost
        (``upstream``, as the SFU measured it) is neither expected nor lost here."""
        expected = last[1] - first[1]
        if expected <= 0:
            return 0.0, 0.0
        lost = min(expected, max(0, last[2] - first[2]))
        upstream = min(0.99, max(0.0, last[3]))
        return max(0.0, lost - upstream * expected), expected * (1 - upstream)

    def report_remb(self, ssrcs: Iterable[int], bitrate: float, now: float) -> None:
        """A REMB naming ``ssrcs``: it bounds the rate of this subscriber's slots among them."""
        group = frozenset(self._ssrcs[s] for s in ssrcs if s in self._ssrcs)
        if not group:
            return
        # a grouping that overlaps this one is an older view of the same streams
        self._rembs = {g: v for g, v in self._rembs.items() if g == group or not g & group}
        self._rembs[group] = (bitrate, now)

    # -- what it decides ----------------------------------------------------------------

    def rank(self, slots: Iterable[SlotView]) -> list[SlotView]:
        """Highest priority first: pinned (in order), recently pinned, then by assignment."""
        pinned = {p: i for i, p in enumerate(self._pinned)}
        pinned_at = self._pinned_at

        def key(slot: SlotView) -> tuple[int, float, int]:
            if slot.publication in pinned:
                return (0, pinned[slot.publication], slot.order)
            if slot.publication in pinned_at:
                return (1, -pinned_at[slot.publication], slot.order)
            return (2, 0.0, slot.order)

        return sorted(slots, key=key)

    def estimate(self, now: float, slots: Sequence[SlotView]) -> Estimate:
        config = self.config
        active = [s for s in slots if not s.paused]
        need = sum(s.rate for s in active)
        since = now - config.loss_window
        if self._changed_at is not None:
            since = max(since, self._changed_at + config.loss_grace)
        lost = expected = weighted = weight = 0.0
        for slot in active:
            reports = self._losses.get(slot.key)
            if not reports:
                continue
            fresh = [r for r in reports if r[0] >= since]
            if len(fresh) < 2:
                continue
            window = self._lost(fresh[0], fresh[-1])
            lost, expected = lost + window[0], expected + window[1]
            last = self._lost(fresh[-2], fresh[-1])
            if window[1] and slot.rate > 0:
                share = max(window[0] / window[1], last[0] / last[1] if last[1] else 0.0)
                weighted += slot.rate * share
                weight += slot.rate
        # Packets over the window decide (one unlucky interval is not an overload). Bits
        # size the cut: a full link drops big video packets more often than small audio
        # ones (5 % of audio and 40 % of video read as 19 % of packets), and the last
        # interval counts if it is worse (the window still holds the time before).
        loss = lost / expected if expected >= config.loss_min_packets else None
        recent = weighted / weight if loss is not None and weight else 0.0

        active_keys = {s.key for s in active}
        remb_total = 0.0
        covered_keys: set[str] = set()
        for group, (bitrate, at) in self._rembs.items():
            if now - at <= config.remb_max_age and group & active_keys:
                remb_total += bitrate
                covered_keys |= group & active_keys
        covered = sum(s.rate for s in active if s.key in covered_keys)
        remb = remb_total if covered_keys else None

        capacity: float | None = None
        if loss is not None and loss >= config.pause_loss:
            capacity = need * (1 - max(loss, recent))
        elif (
            loss is not None
            and loss >= config.resume_loss
            and remb is not None
            and remb < config.remb_over * covered
        ):
            capacity = remb + (need - covered)  # what the REMB does not cover is not bounded
        over = capacity is not None
        # no evidence is not headroom: a probe waits for reports about the last change
        quiet = not over and loss is not None and loss < config.resume_loss
        return Estimate(need, loss, remb, capacity, over, quiet)

    def decide(self, now: float, slots: Sequence[SlotView]) -> Decision:
        """Which of the subscriber's video slots to pause or resume now (usually none)."""
        config = self.config
        estimate = self.estimate(now, slots)
        if estimate.over:
            self._quiet_since = None
            if self._over_since is None:
                self._over_since = now
        else:
            self._over_since = None
            if not estimate.quiet:
                self._quiet_since = None
            elif self._quiet_since is None:
                self._quiet_since = now
        if self._changed_at is not None and now - self._changed_at < config.settle:
            return Decision()
        if self._last_resume is not None and now - self._last_resume >= config.probe_hold:
            self.resume_wait = config.resume_after  # the last probe held
            self._last_resume = None

        ranked = self.rank([s for s in slots if s.video])
        active = [s for s in ranked if not s.paused]
        paused = [s for s in ranked if s.paused]

        if estimate.over and active and self._over_since is not None:
            if now - self._over_since < config.pause_after:
                return Decision()
            assert estimate.capacity is not None
            target = config.fit_margin * estimate.capacity
            need = estimate.need
            pause: list[str] = []
            # a subscriber's last video goes only at last_video_loss: under 5 % loss and
            # 200 ms of jitter (C2) a GCC receiver's REMB reads far below what its link
            # carries, and reordering lifts the reports' loss over pause_loss at times;
            # either paused a 1:1 call's only video
            loss = estimate.loss
            keep = 0 if loss is not None and loss >= config.last_video_loss else 1
            for slot in reversed(active):
                if need <= target or len(active) - len(pause) <= keep:
                    break
                pause.append(slot.key)
                need -= slot.rate
            if self._last_resume is not None:  # the probe failed: wait longer next time
                self.resume_wait = min(2 * self.resume_wait, config.resume_after_max)
                self._last_resume = None
            self._change(now)
            return Decision(pause=tuple(pause))

        if paused and active and not estimate.over:
            best, worst = paused[0], active[-1]
            if ranked.index(best) < ranked.index(worst):  # priorities changed: swap
                self._change(now)
                self._last_resume = now
                return Decision(pause=(worst.key,), resume=(best.key,))

        if (
            paused
            and estimate.quiet
            and self._quiet_since is not None
            and now - self._quiet_since >= self.resume_wait
        ):
            self._change(now)
            self._last_resume = now
            return Decision(resume=(paused[0].key,))
        return Decision()

    def _change(self, now: float) -> None:
        self._changed_at = now
        self._over_since = None
        self._quiet_since = now
