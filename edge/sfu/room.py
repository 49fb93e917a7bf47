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
m-line of a connection on one transport (max-bundle). A malformed offer or answer closes
that participant's connection with ``ValueError`` and the room serves on (THREATS W5). A
participant who leaves, or whose connection fails or is closed by the peer, has its
publications ended; every slot they fed goes idle and a :class:`SlotIdle` event tells the
signalling layer to renegotiate or re-point it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket

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


RoomEvent = TrackPublished | TrackEnded | SlotIdle | ParticipantLeft


@dataclass
class _Participant:
    id: str
    publisher: RTCPeerConnection | None = None
    subscriber: RTCPeerConnection | None = None
    publications: dict[str, str] = field(default_factory=dict)  # key -> kind
    slots: dict[str, str] = field(default_factory=dict)  # mid -> slot key
    pending: list[tuple[object, str]] = field(default_factory=list)  # (transceiver, pub)


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
        self._checked = False
        self._worker = Worker(
            self.config.forwarder,
            clock=clock,
            rng=rng,
            tick_interval=self.config.tick_interval,
            on_slot_idle=self._slot_idle,
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

    async def join(self, participant: str) -> None:
        if participant in self._participants:
            raise ValueError(f"{participant} is already in room {self.id}")
        if not self._checked:
            hooks.check_hooks(await hooks.sample_instances())
            self._checked = True
        self._participants[participant] = _Participant(participant)

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
        """Answer a participant's offer to send audio/video; its tracks become publications."""
        member = self._member(participant)
        if member.publisher is not None:
            raise ValueError(f"{participant} already publishes in room {self.id}")
        pc = self._peer_connection(participant)
        member.publisher = pc
        try:
            await pc.setRemoteDescription(offer)
            for transceiver in pc.getTransceivers():
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
            member.publisher = None
            await pc.close()
            raise ValueError(f"{participant}'s publish offer was refused: {exc}") from exc
        for transceiver in pc.getTransceivers():
            key = f"{participant}/{transceiver.mid}"
            self._worker.attach_publisher(key, transceiver, self._mime(transceiver.kind))
            if transceiver.kind == "audio" and self._on_audio_level is not None:
                self._meter(key, transceiver.receiver, self._on_audio_level)
            member.publications[key] = transceiver.kind
            self._publications[key] = (participant, transceiver.kind)
            await self.events.put(TrackPublished(key, participant, transceiver.kind))
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
        for transceiver, key in pending:
            mid = transceiver.mid  # type: ignore[attr-defined]
            slot = f"{participant}#{mid}"
            kind = transceiver.kind  # type: ignore[attr-defined]
            self._worker.attach_slot(slot, transceiver, self._mime(kind))
            member.slots[mid] = slot
            self._slot_owner[slot] = (participant, mid)
            added[mid] = (kind, None)
            if key in self._publications:
                await self._worker.assign(slot, key)
                added[mid] = (kind, key)
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

    # -- internals ------------------------------------------------------------------------

    def _member(self, participant: str) -> _Participant:
        try:
            return self._participants[participant]
        except KeyError:
            raise ValueError(f"{participant} is not in room {self.id}") from None

    def _mime(self, kind: str) -> str:
        return self.config.video_codec if kind == "video" else self.config.audio_codec

    @staticmethod
    def _meter(key: str, receiver: object, report: Callable[[str, int], None]) -> None:
        """Report the ssrc-audio-level (0 loudest .. 127 silence, RFC 6464) of each packet of
        audio publication ``key``, then forward it: wraps the handler the worker installed
        on the receiver's ``_handle_rtp_packet`` (edge.sfu.hooks, replaced) once more."""
        forward = receiver._handle_rtp_packet  # type: ignore[attr-defined]

        async def metered(packet: RtpPacket, arrival_time_ms: int) -> None:
            level = packet.extensions.audio_level
            if level is not None:
                report(key, level[1])
            await forward(packet, arrival_time_ms)

        hooks.replace_receiver_rtp(receiver, metered)

    def _peer_connection(self, participant: str) -> RTCPeerConnection:
        # MAX_BUNDLE: under aiortc 1.16's default (BALANCED) a second transceiver of a kind
        # takes the first one's transport and counts as bundled, so when the answer bundles
        # every m-line onto the first transport, the second and later video slots of one
        # offer stay on the discarded video transport and send nothing.
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )

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
