"""A room: participants publish audio and video tracks and subscribe to each other's.

Theory of operation: each participant has up to two peer connections with the SFU. The
*publish* connection is offered by the participant (``sendonly`` audio/video) and answered
by :meth:`Room.publish`; each of its tracks becomes a publication ``"<participant>/<mid>"``.
The *subscribe* connection is offered by the SFU (:meth:`Room.subscribe`, one ``sendonly``
slot per requested publication, added to the existing connection by renegotiation when it
already exists) and answered by the participant (:meth:`Room.answer`); a slot can later be
re-pointed at another publication of the same kind (:meth:`Room.switch`) and the
subscriber's stream stays continuous. Media never passes through a decoder or encoder:
see :mod:`edge.sfu.worker`.

Signalling is not here: the web layer carries the SDP (``edge.calls``). ICE uses the host's
own addresses only (``iceServers=[]``: no STUN, no TURN, nothing outside the plant), every
m-line of a connection on one transport (max-bundle); a participant that joined with
:class:`RelayIce` (a bridge leg to another plant) is the exception: its connections are
relay-only through the TURN server it names. A publisher may renegotiate (more tracks, or
tracks ended) on its publish connection. A malformed offer or answer closes
that participant's connection with ``ValueError`` and the room serves on (THREATS W5). A
participant who leaves, or whose connection fails or is closed by the peer, has its
publications ended; every slot they fed goes idle and a :class:`SlotIdle` event tells the
signalling layer to renegotiate or re-point it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp

from edge.sfu import forwarder as core
from edge.sfu import hooks
from edge.sfu.forwarder import ForwarderConfig, ForwardingStats
from edge.sfu.worker import Clock, SilentTrack, Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoomConfig:
    forwarder: ForwarderConfig = field(default_factory=ForwarderConfig)
    tick_interval: float = 0.05
    video_codec: str = "video/VP8"
    audio_codec: str = "audio/opus"


@dataclass(frozen=True)
class RelayIce:
    """ICE for a participant whose connections go through TURN only (a bridge leg to another
    plant, ``docs/bridge.md``): the relay's TURN URLs and the credential it granted. The
    credential is a secret: it is kept out of ``repr`` and never logged."""

    urls: tuple[str, ...]
    username: str
    credential: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.urls or not all(u.startswith("turn:") for u in self.urls):
            raise ValueError("relay-only ICE needs at least one turn: URL (and nothing else)")


# -- events for the signalling layer --------------------------------------------------------


@dataclass(frozen=True)
class TrackPublished:
    publication: str
    participant: str
    kind: str


@dataclass(frozen=True)
class TrackEnded:
    publication: str
    participant: str


@dataclass(frozen=True)
class SlotIdle:
    participant: str
    mid: str
    publication: str


@dataclass(frozen=True)
class ParticipantLeft:
    participant: str


@dataclass(frozen=True)
class SlotPaused:
    """Adaptive quality: the participant's link cannot carry this video slot; it sends
    nothing until :class:`SlotResumed` (show the person's avatar, not a frozen tile)."""

    participant: str
    mid: str
    publication: str


@dataclass(frozen=True)
class SlotResumed:
    """A paused slot is forwarded again (from the publication's next keyframe)."""

    participant: str
    mid: str
    publication: str


RoomEvent = TrackPublished | TrackEnded | SlotIdle | ParticipantLeft | SlotPaused | SlotResumed


@dataclass
class _Participant:
    id: str
    publisher: RTCPeerConnection | None = None
    subscriber: RTCPeerConnection | None = None
    publications: dict[str, str] = field(default_factory=dict)  # key -> kind
    slots: dict[str, str] = field(default_factory=dict)  # mid -> slot key
    pending: list[tuple[object, str]] = field(default_factory=list)  # (transceiver, pub)
    ice: RelayIce | None = None  # None: host candidates only
    ended: set[str] = field(default_factory=set)  # publications ended by renegotiation


class Room:
    def __init__(
        self,
        room_id: str,
        config: RoomConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        on_audio_level: Callable[[str, int], None] | None = None,
    ) -> None:
        self.id = room_id
        self._on_audio_level = on_audio_level
        self.config = config or RoomConfig()
        self.events: asyncio.Queue[RoomEvent] = asyncio.Queue()
        self._participants: dict[str, _Participant] = {}
        self._publications: dict[str, tuple[str, str]] = {}  # key -> (participant, kind)
        self._slot_owner: dict[str, tuple[str, str]] = {}  # slot key -> (participant, mid)
        self._worker = Worker(
            self.config.forwarder,
            clock=clock,
            rng=rng,
            tick_interval=self.config.tick_interval,
            on_slot_idle=self._slot_idle,
            on_adapt=self._slot_adapted,
        )

    @property
    def worker(self) -> Worker:
        return self._worker

    @property
    def stats(self) -> ForwardingStats:
        return self._worker.forwarder.stats

    @property
    def publications(self) -> dict[str, str]:
        """Publication key -> kind (``"audio"`` or ``"video"``)."""
        return {key: kind for key, (_, kind) in self._publications.items()}

    def peer_connections(self) -> list[RTCPeerConnection]:
        """The SFU's side of every connection (for instrumentation and tests)."""
        return [
            pc
            for p in self._participants.values()
            for pc in (p.publisher, p.subscriber)
            if pc is not None
        ]

    # -- membership -----------------------------------------------------------------------

    async def join(self, participant: str, ice: RelayIce | None = None) -> None:
        """Into the room. With ``ice``, every connection of this participant is relay-only
        through those TURN servers (a bridge leg); without, host candidates only."""
        if participant in self._participants:
            raise ValueError(f"{participant} is already in room {self.id}")
        await hooks.verify_once()
        self._participants[participant] = _Participant(participant, ice=ice)

    async def leave(self, participant: str) -> None:
        member = self._participants.pop(participant, None)
        if member is None:
            return
        for key in list(member.publications):
            await self._unpublish(member, key)
        for slot in member.slots.values():
            self._worker.detach_slot(slot)
            self._slot_owner.pop(slot, None)
        for pc in (member.publisher, member.subscriber):
            if pc is not None:
                await pc.close()
        await self.events.put(ParticipantLeft(participant))

    async def close(self) -> None:
        for participant in list(self._participants):
            await self.leave(participant)
        await self._worker.close()

    # -- publishing -----------------------------------------------------------------------

    async def publish(
        self, participant: str, offer: RTCSessionDescription
    ) -> RTCSessionDescription:
        """Answer a participant's offer to send audio/video; its tracks become publications.

        Only m-lines the offer sends on (``sendonly``/``sendrecv``, port not 0) are
        published. A participant that publishes already may offer again on the same
        connection (renegotiation): new sending m-lines become new publications, and m-lines
        that stop sending (``inactive``, ``recvonly``, port 0) end theirs; an m-line that
        ended is never published again (a publication id is never reused). A refused
        offer closes the publish connection, and a refused renegotiation ends every
        publication on it."""
        member = self._member(participant)
        pc = member.publisher
        renegotiating = pc is not None
        if pc is None:
            pc = self._peer_connection(participant)
            member.publisher = pc
        try:
            sending = _sending_mids(offer.sdp)
            with hooks.sfu_side():
                await pc.setRemoteDescription(offer)
            for transceiver in pc.getTransceivers():
                if f"{participant}/{transceiver.mid}" in member.publications:
                    continue  # negotiated before: its codecs stay as they are
                kind = transceiver.kind
                transceiver.direction = "recvonly"
                preferred = self._mime(kind)
                transceiver.setCodecPreferences(
                    [
                        c
                        for c in RTCRtpSender.getCapabilities(kind).codecs
                        if c.mimeType.lower() in (preferred.lower(), f"{kind}/rtx")
                    ]
                )
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            if member.publisher is pc:
                member.publisher = None
                for key in list(member.publications):
                    await self._unpublish(member, key)
                await pc.close()
            raise ValueError(f"{participant}'s publish offer was refused: {exc}") from exc
        for transceiver in pc.getTransceivers():
            key = f"{participant}/{transceiver.mid}"
            if key in member.publications:
                if transceiver.mid not in sending:
                    member.ended.add(key)
                    await self._unpublish(member, key)
                continue
            if transceiver.mid not in sending or key in member.ended:
                continue
            self._worker.attach_publisher(key, transceiver, self._mime(transceiver.kind))
            if transceiver.kind == "audio" and self._on_audio_level is not None:
                self._meter(key, self._on_audio_level)
            member.publications[key] = transceiver.kind
            self._publications[key] = (participant, transceiver.kind)
            await self.events.put(TrackPublished(key, participant, transceiver.kind))
        if renegotiating:
            logger.info("room %s: %s renegotiated its publications", self.id, participant)
        return pc.localDescription

    # -- subscribing ----------------------------------------------------------------------

    async def subscribe(
        self, participant: str, publications: Sequence[str] | None = None
    ) -> RTCSessionDescription:
        """An SFU offer with one slot per publication (default: all but the participant's)."""
        member = self._member(participant)
        if publications is None:
            publications = [
                k for k, (owner, _) in self._publications.items() if owner != participant
            ]
        for key in publications:
            if key not in self._publications:
                raise ValueError(f"no publication {key} in room {self.id}")
        if member.subscriber is None:
            member.subscriber = self._peer_connection(participant)
        pc = member.subscriber
        for key in publications:
            kind = self._publications[key][1]
            with hooks.sfu_side():
                transceiver = pc.addTransceiver(SilentTrack(kind), direction="sendonly")
            preferred = self._mime(kind)
            transceiver.setCodecPreferences(
                [
                    c
                    for c in RTCRtpSender.getCapabilities(kind).codecs
                    if c.mimeType.lower() in (preferred.lower(), f"{kind}/rtx")
                ]
            )
            member.pending.append((transceiver, key))
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription

    async def answer(
        self, participant: str, answer: RTCSessionDescription
    ) -> dict[str, tuple[str, str | None]]:
        """The participant's answer to :meth:`subscribe`: its slots start forwarding.

        Returns the new slots: mid -> (kind, the publication feeding it, or ``None`` if that
        publication ended before the answer came). A refused answer closes the whole
        subscribe connection, its earlier slots included."""
        member = self._member(participant)
        pc = member.subscriber
        if pc is None:
            raise ValueError(f"{participant} has no subscription offer to answer")
        try:
            await pc.setRemoteDescription(answer)
        except Exception as exc:
            member.subscriber = None
            member.pending.clear()
            for slot in member.slots.values():
                self._worker.detach_slot(slot)
                self._slot_owner.pop(slot, None)
            member.slots.clear()
            await pc.close()
            raise ValueError(f"{participant}'s subscribe answer was refused: {exc}") from exc
        pending, member.pending = member.pending, []
        added: dict[str, tuple[str, str | None]] = {}
        # every slot attached before the first await: aiortc starts the senders in a task
        # of its own, and a slot's sender is best set up before it starts
        assigned: list[tuple[str, str, str]] = []
        for transceiver, key in pending:
            mid = transceiver.mid  # type: ignore[attr-defined]
            slot = f"{participant}#{mid}"
            kind = transceiver.kind  # type: ignore[attr-defined]
            self._worker.attach_slot(slot, transceiver, self._mime(kind), subscriber=participant)
            member.slots[mid] = slot
            self._slot_owner[slot] = (participant, mid)
            added[mid] = (kind, None)
            assigned.append((mid, slot, key))
        for mid, slot, key in assigned:
            if key in self._publications:
                await self._worker.assign(slot, key)
                added[mid] = (added[mid][0], key)
        return added

    async def tap(
        self, key: str, publication: str, sink: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """Feed ``publication``'s forwarded RTP to ``sink`` inside the SFU (a recorder), as
        slot ``key``: the same rewriting, keyframe wait and keyframe request as a subscriber
        slot, no network and no SRTP. Ends with :meth:`untap` (or the publication)."""
        if publication not in self._publications:
            raise ValueError(f"no publication {publication} in room {self.id}")
        self._worker.attach_sink(key, publication, sink)
        await self._worker.assign(key, publication)

    async def request_keyframe(self, key: str) -> None:
        """Ask the publication feeding tap ``key`` for a keyframe (throttled as ever)."""
        await self._worker.request_keyframe(key)

    def untap(self, key: str) -> None:
        self._worker.detach_slot(key)

    async def switch(self, participant: str, mid: str, publication: str | None) -> None:
        """Feed the participant's slot ``mid`` from another publication (``None``: nothing)."""
        member = self._member(participant)
        slot = member.slots.get(mid)
        if slot is None:
            raise ValueError(f"{participant} has no slot {mid}")
        if publication is not None and publication not in self._publications:
            raise ValueError(f"no publication {publication} in room {self.id}")
        await self._worker.assign(slot, publication)

    # -- for bridge legs (edge.calls.bridge) ----------------------------------------------

    def pending_slots(self, participant: str) -> dict[str, str]:
        """The slots of the last :meth:`subscribe` offer not yet answered: mid -> the
        publication each will carry (the mids are fixed once the offer is made)."""
        member = self._member(participant)
        return {
            str(transceiver.mid): key  # type: ignore[attr-defined]
            for transceiver, key in member.pending
        }

    async def end_slots(self, participant: str, mids: Sequence[str]) -> None:
        """Retire these slots of the participant's subscribe connection: they stop
        forwarding now and go ``inactive`` in the next :meth:`subscribe` offer (which the
        caller makes). A retired slot is never fed again; its m-line stays in the SDP."""
        member = self._member(participant)
        pc = member.subscriber
        if pc is None:
            raise ValueError(f"{participant} has no subscribe connection")
        by_mid = {t.mid: t for t in pc.getTransceivers()}
        for mid in mids:
            slot = member.slots.pop(mid, None)
            transceiver = by_mid.get(mid)
            if slot is None or transceiver is None:
                raise ValueError(f"{participant} has no slot {mid}")
            self._worker.detach_slot(slot)
            self._slot_owner.pop(slot, None)
            transceiver.direction = "inactive"
            await transceiver.sender.stop()

    def connections(
        self, participant: str
    ) -> tuple[RTCPeerConnection | None, RTCPeerConnection | None]:
        """The SFU's side of the participant's (publish, subscribe) connections."""
        member = self._member(participant)
        return member.publisher, member.subscriber

    # -- internals ------------------------------------------------------------------------

    def _member(self, participant: str) -> _Participant:
        try:
            return self._participants[participant]
        except KeyError:
            raise ValueError(f"{participant} is not in room {self.id}") from None

    def _mime(self, kind: str) -> str:
        return self.config.video_codec if kind == "video" else self.config.audio_codec

    def _meter(self, key: str, report: Callable[[str, int], None]) -> None:
        """Report the ssrc-audio-level (0 loudest .. 127 silence, RFC 6464) of each packet of
        audio publication ``key``: the worker's intake calls it before forwarding, on both
        receive paths (the fast ingress and aiortc's)."""
        self._worker.meter(key, functools.partial(report, key))

    def _peer_connection(self, participant: str) -> RTCPeerConnection:
        # MAX_BUNDLE: under aiortc 1.16's default (BALANCED) a second transceiver of a kind
        # takes the first one's transport and counts as bundled, so when the answer bundles
        # every m-line onto the first transport, the second and later video slots of one
        # offer stay on the discarded video transport and send nothing.
        member = self._participants.get(participant)
        ice = None if member is None else member.ice
        if ice is None:
            config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        else:  # a bridge leg: through the relay's TURN only, never a host address
            config = RTCConfiguration(
                iceServers=[RTCIceServer(list(ice.urls), ice.username, ice.credential)],
                iceTransportPolicy=RTCIceTransportPolicy.RELAY,
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            )
        with hooks.sfu_side():
            pc = RTCPeerConnection(config)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            # failed: ICE consent lost; closed here but not by the room: the peer closed it
            # (DTLS close_notify, a page that went away)
            if pc.connectionState in ("failed", "closed"):
                member = self._participants.get(participant)
                if member is not None and pc in (member.publisher, member.subscriber):
                    logger.info(
                        "room %s: %s's connection %s", self.id, participant, pc.connectionState
                    )
                    await self.leave(participant)

        return pc

    async def _unpublish(self, member: _Participant, key: str) -> None:
        member.publications.pop(key, None)
        self._publications.pop(key, None)
        await self._worker.dispatch(self._worker.detach_publisher(key))
        await self.events.put(TrackEnded(key, member.id))

    async def _slot_idle(self, event: core.SlotIdle) -> None:
        owner = self._slot_owner.get(event.slot)
        if owner is not None:
            await self.events.put(SlotIdle(owner[0], owner[1], event.publication))

    # -- adaptive quality (edge.sfu.adapt) --------------------------------------------------

    def set_priority(self, participant: str, publications: Sequence[str]) -> None:
        """The publications whose video the participant's weak link keeps longest, in this
        order (the active speaker, a screen share); others are paused first, those pinned
        before last, the rest in the order they were subscribed. Call again on every change."""
        self._member(participant)
        for key in publications:
            if key not in self._publications:
                raise ValueError(f"no publication {key} in room {self.id}")
        self._worker.set_priority(participant, publications)

    async def _slot_adapted(self, event: core.SlotPaused | core.SlotResumed) -> None:
        owner = self._slot_owner.get(event.slot)
        if owner is None:
            return
        kind = SlotPaused if isinstance(event, core.SlotPaused) else SlotResumed
        await self.events.put(kind(owner[0], owner[1], event.publication))


def _sending_mids(text: str) -> set[str]:
    """The mids of the audio/video m-lines an offer sends on (no direction means
    ``sendrecv``, RFC 8866; port 0 is a rejected m-line)."""
    description = aiortc_sdp.SessionDescription.parse(text)
    return {
        str(media.rtp.muxId)
        for media in description.media
        if media.kind in ("audio", "video")
        and media.port != 0
        and (media.direction or "sendrecv") in ("sendonly", "sendrecv")
    }
