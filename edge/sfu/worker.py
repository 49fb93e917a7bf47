"""The asyncio adapter between aiortc peer connections and the forwarding core.

Theory of operation: a publisher's transceiver is *attached* by replacing its receiver's
``_handle_rtp_packet`` (and wrapping its ``_handle_rtcp_packet``), so every packet the
publisher's DTLS transport decrypts, parses and routes lands in :meth:`Forwarder.forward`
instead of aiortc's depayloader, jitter buffer and decoder; receive statistics are kept in
aiortc's own table so its RTCP task still sends receiver reports. A subscriber's
transceiver is attached as a slot: its sender carries a track that never yields a frame (so
aiortc never builds an encoder), its ``_handle_rtcp_packet`` is replaced so feedback reaches
:meth:`Forwarder.subscriber_rtcp`, and forwarded bytes go to its :class:`edge.sfu.egress.Egress`,
which SRTP-protects and sends them in one synchronous call on the transport's own session and
nominated ICE pair, or hands them to the DTLS transport's ``_send_rtp`` (SRTP protect, send)
whenever that fast path does not apply (not connected yet, a TURN relay pair). Every private
name used is in :mod:`edge.sfu.hooks`.

:meth:`Worker.dispatch` turns the core's events into those calls; a ticker calls
:meth:`Forwarder.tick` every ``tick_interval`` seconds (one task per event loop for all the
workers, that yields to the sockets between two of them: :class:`_Ticker`). A subscriber
whose transport is gone is skipped (``ConnectionError``); one bad packet is counted by the
core, never raised here. Adaptive quality's pause and resume events (``edge.sfu.adapt``) go
to ``on_adapt``; slots attached with a ``subscriber`` take part in it (a recorder's sink
does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.codecs import is_rtx
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, RtpPacket, pack_remb_fci

from edge.sfu import hooks
from edge.sfu.egress import Egress
from edge.sfu.forwarder import (
    Codec,
    Event,
    Forwarder,
    ForwarderConfig,
    Kind,
    LimitBitrate,
    NackPublisher,
    RequestKeyframe,
    SendRtcp,
    SendRtp,
    SlotIdle,
    SlotPaused,
    SlotResumed,
)
from edge.sfu.ingress import Ingress
from edge.sfu.intake import AtOnce, Intake, PublisherRtcp, SlotRtcp, send_now
from edge.sfu.packets import ExtensionIds, MediaPacket

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class SilentTrack(MediaStreamTrack):
    """The track a subscriber slot's sender holds: it never yields, so nothing is encoded."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        await self._ended.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._ended.set()


def codec_of(codecs: Sequence[Any], mime_type: str | None = None) -> Codec:
    """The negotiated codec (the first, or the first of ``mime_type``) and its RTX type."""
    media = [c for c in codecs if not is_rtx(c)]
    if mime_type is not None:
        media = [c for c in media if c.mimeType.lower() == mime_type.lower()]
    if not media:
        raise ValueError(f"no {mime_type or 'media'} codec was negotiated")
    chosen = media[0]
    rtx = next(
        (
            c.payloadType
            for c in codecs
            if is_rtx(c) and c.parameters.get("apt") == chosen.payloadType
        ),
        None,
    )
    return Codec(chosen.mimeType, chosen.clockRate, chosen.payloadType, rtx)


class _TaskSet(set["asyncio.Future[None]"]):
    """Tasks kept until done (the loop holds only weak references to them)."""

    def add(self, task: asyncio.Future[None]) -> None:
        super().add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("SFU dispatch failed", exc_info=task.exception())


class _Ticker:
    """The workers of one event loop that tick at the same interval, ticked in turn by one
    task, which yields to the loop between two of them.

    Each worker (one per room) used to run a task of its own; rooms whose timers fell due in
    the same turn of the loop then ticked back to back with no socket read in between (an
    adaptive-quality pass takes ~0.2 ms: chains of up to 2.4 ms at 30 rooms, the packets
    waiting; docs/benchmarks.md). Here the sockets are read between any two rooms, and one
    timer serves every room instead of one each."""

    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Ticker]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, interval: float) -> _Ticker:
        """The running loop's ticker for this interval (made on first use)."""
        tickers = cls._loops.setdefault(asyncio.get_running_loop(), {})
        ticker = tickers.get(interval)
        if ticker is None:
            ticker = tickers[interval] = cls(interval)
        return ticker

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._workers: dict[int, Worker] = {}  # in the order they came
        self._task: asyncio.Task[None] | None = None
        self._current: Worker | None = None  # the worker whose tick is running
        self._current_done: asyncio.Future[None] | None = None

    def add(self, worker: Worker) -> None:
        self._workers[id(worker)] = worker
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def remove(self, worker: Worker) -> None:
        """Stop ticking ``worker``; a tick of it already running finishes first (unless it
        is the caller), and the task ends with the last worker."""
        self._workers.pop(id(worker), None)
        inside = asyncio.current_task() is self._task
        if self._current is worker and self._current_done is not None and not inside:
            await asyncio.shield(self._current_done)
        if not self._workers and self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            if not inside:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._workers:
            await asyncio.sleep(self.interval)
            for key, worker in list(self._workers.items()):
                if key not in self._workers:  # removed meanwhile
                    continue
                self._current, self._current_done = worker, loop.create_future()
                try:
                    await worker.tick_once()
                except Exception:  # (tick_once logs its own) one room cannot stop the others
                    logger.exception("SFU tick of a worker failed")
                finally:
                    self._current = None
                    self._current_done.set_result(None)
                await asyncio.sleep(0)  # the sockets are read before the next room


class Worker:
    """One forwarding core and the aiortc objects around it (one per process and core)."""

    def __init__(
        self,
        config: ForwarderConfig | None = None,
        *,
        clock: Clock,
        rng: random.Random | None = None,
        tick_interval: float = 0.05,
        on_slot_idle: Callable[[SlotIdle], Awaitable[None]] | None = None,
        on_adapt: Callable[[SlotPaused | SlotResumed], Awaitable[None]] | None = None,
        fast_ingress: bool = True,
    ) -> None:
        self.forwarder = Forwarder(config, rng)
        self._clock = clock
        self._tick_interval = tick_interval
        self._on_slot_idle = on_slot_idle
        self._on_adapt = on_adapt
        self._receivers: dict[str, Any] = {}  # publication -> aiortc receiver
        self._intakes: dict[str, Intake] = {}  # publication -> its per-packet intake
        self._remb_ssrc: dict[str, int] = {}
        self._egress: dict[str, Egress] = {}  # slot -> its transport's egress
        self._rtcp_egress: dict[Any, Egress] = {}  # a publisher's transport -> its RTCP's
        self._senders: dict[str, Any] = {}  # slot -> its aiortc sender
        self._sinks: dict[str, Callable[[bytes], Awaitable[None]]] = {}  # recorder slots
        self._ticker: _Ticker | None = None
        self._fast_ingress = fast_ingress
        self._ingress: dict[Any, Ingress] = {}  # DTLS transport -> its fast ingress
        self._tasks = _TaskSet()  # dispatches the fast ingress could not finish at once
        # events met inside a socket callback: copies leave at once, the rest in a task
        self._at_once = AtOnce(self._egress, self._later)

    # -- attaching ------------------------------------------------------------------------

    def attach_publisher(self, key: str, transceiver: Any, mime_type: str | None = None) -> None:
        """Forward what this (recvonly) transceiver receives as publication ``key``."""
        codecs, _ = hooks.negotiated(transceiver)
        codec = codec_of(codecs, mime_type)
        kind = Kind(transceiver.kind)
        self.forwarder.publish(key, kind, codec)
        receiver = transceiver.receiver
        self._receivers[key] = receiver
        self._remb_ssrc[key] = hooks.sender_ssrcs(transceiver.sender)[0]
        forwarder, clock, dispatch = self.forwarder, self._clock, self.dispatch
        intake = Intake(
            forwarder,
            key,
            statistics=hooks.receiver_statistics(receiver),
            payload_type=codec.payload_type,
            clock_rate=codec.clock_rate,
            clock=clock,
            forget=functools.partial(hooks.forget_ssrc, receiver),
            at_once=self._at_once,
        )
        self._intakes[key] = intake
        forward, ingest = intake.take, intake.ingest

        async def on_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            events = forward(MediaPacket.of(packet))  # (aiortc's path: not the fast ingress)
            if events:
                await dispatch(events)

        async def on_rtcp(packet: AnyRtcpPacket) -> None:
            events = forwarder.publisher_rtcp(key, packet, clock())
            if events:
                await dispatch(events)

        hooks.replace_receiver_rtp(receiver, on_rtp)
        note = hooks.wrap_receiver_rtcp(receiver, on_rtcp)  # aiortc's notes, for its reports
        rtcp_out = self._rtcp_egress.get(receiver.transport)
        if rtcp_out is None:
            rtcp_out = self._rtcp_egress[receiver.transport] = Egress(receiver.transport)
        hooks.send_receiver_rtcp_by(receiver, rtcp_out.send_rtcp)
        ingress = self._ingress_for(receiver.transport)
        if ingress is not None:
            ingress.bind(receiver, ingest)
            ingress.bind_rtcp(receiver, PublisherRtcp(forwarder, key, clock, note, self._at_once))
        self._start_ticker()

    def _ingress_for(self, transport: Any) -> Ingress | None:
        """The fast ingress of a DTLS transport (made on first use; None: turned off)."""
        if not self._fast_ingress:
            return None
        ingress = self._ingress.get(transport)
        if ingress is None:
            ingress = self._ingress[transport] = Ingress(transport)
        return ingress

    def _release(self, recipient: Any) -> None:
        """Unbind a receiver or sender from its transport's fast ingress (closed when no
        handler is left on it)."""
        transport = recipient.transport
        ingress = self._ingress.get(transport)
        if ingress is not None and ingress.unbind(recipient):
            ingress.close()
            del self._ingress[transport]

    def _later(self, events: list[Event]) -> None:
        """What :class:`AtOnce` could not send inside a socket callback, in a task."""
        self._tasks.add(asyncio.ensure_future(self.finish(events)))

    def ingress_of(self, receiver: Any) -> Ingress | None:
        """The fast ingress a publication's receiver is bound to (None: aiortc's path)."""
        ingress = self._ingress.get(receiver.transport)
        return ingress if ingress is not None and ingress.sink(receiver) else None

    def meter(self, key: str, report: Callable[[int], None]) -> None:
        """Call ``report(level)`` with the audio level (RFC 6464: 0 loudest .. 127 silence)
        of each packet of publication ``key`` that carries one, before it is forwarded."""
        self._intakes[key].level = report

    def detach_publisher(self, key: str) -> list[Event]:
        self._intakes.pop(key, None)
        receiver = self._receivers.pop(key, None)
        if receiver is not None:
            self._release(receiver)
            transport = receiver.transport
            if all(r.transport is not transport for r in self._receivers.values()):
                self._rtcp_egress.pop(transport, None)
        self._remb_ssrc.pop(key, None)
        return self.forwarder.unpublish(key)

    def attach_slot(
        self,
        key: str,
        transceiver: Any,
        mime_type: str | None = None,
        *,
        subscriber: str | None = None,
    ) -> None:
        """Make this (sendonly) transceiver a slot the forwarder can feed; the slots of one
        ``subscriber`` (one connection) share its link for adaptive quality."""
        codecs, extensions = hooks.negotiated(transceiver)
        codec = codec_of(codecs, mime_type)
        sender = transceiver.sender
        ssrc, rtx_ssrc = hooks.sender_ssrcs(sender)
        waits = transceiver.kind == "video" and sender.transport.state != "connected"
        self.forwarder.add_slot(
            key,
            Kind(transceiver.kind),
            codec,
            ssrc,
            rtx_ssrc=rtx_ssrc,
            extensions=ExtensionIds.from_parameters(extensions),
            mid=transceiver.mid,
            subscriber=subscriber,
            connected=not waits,
        )
        egress = self._egress[key] = Egress(sender.transport)
        self.forwarder.set_sink(key, egress.send_rtp)
        feedback = SlotRtcp(self.forwarder, key, self._clock, self._at_once)

        async def on_rtcp(packet: AnyRtcpPacket) -> None:  # aiortc's path
            events = feedback.events(packet)
            if events:
                await self.dispatch(events)

        hooks.replace_sender_rtcp(sender, on_rtcp)
        hooks.silence_sender_reports(sender)
        self._senders[key] = sender
        if waits:
            self._keyframe_when_connected(key, sender.transport)
        ingress = self._ingress_for(sender.transport)
        if ingress is not None:
            ingress.bind_rtcp(sender, feedback)  # the fast ingress
        self._start_ticker()

    def attach_sink(
        self, key: str, publication: str, sink: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """A slot inside the SFU (a recorder): it gets the RTP (and rewritten sender reports)
        a subscriber of ``publication`` would get, as bytes, before any SRTP; it has no
        peer connection, header extensions or RTX. Call :meth:`assign` to start it."""
        kind, codec = self.forwarder.publication_codec(publication)
        self.forwarder.add_slot(
            key,
            kind,
            Codec(codec.mime_type, codec.clock_rate, codec.payload_type),
            random.getrandbits(32) or 1,
        )
        self._sinks[key] = sink
        self._start_ticker()

    def _keyframe_when_connected(self, key: str, transport: Any) -> None:
        """Tell the forwarder when the slot's subscriber connection is up, so that its
        first keyframe is asked for then and not forwarded into a DTLS handshake that has
        not ended (many connections set up at once, as after a worker's death, made that
        common: the slot then showed nothing until the publisher's next keyframe, seconds
        away, unless the client asked itself). The event is aiortc's public
        ``statechange`` of ``RTCDtlsTransport``; tests/test_sfu_room.py fails without it."""

        async def changed() -> None:
            state = transport.state
            if state in ("connected", "closed", "failed"):
                transport.remove_listener("statechange", changed)
            if state == "connected" and key in self._egress:
                await self.dispatch(self.forwarder.slot_connected(key, self._clock()))

        transport.on("statechange", changed)

    async def request_keyframe(self, slot: str) -> None:
        await self.dispatch(self.forwarder.request_keyframe(slot, self._clock()))

    def set_priority(self, subscriber: str, publications: Sequence[str]) -> None:
        """Pin these publications for the subscriber (last to be paused, in this order)."""
        self.forwarder.set_priority(subscriber, publications, self._clock())

    def detach_slot(self, key: str) -> None:
        sender = self._senders.pop(key, None)
        if sender is not None:
            self._release(sender)
        self._egress.pop(key, None)
        self._sinks.pop(key, None)
        self.forwarder.remove_slot(key)

    async def assign(self, slot: str, publication: str | None) -> None:
        await self.dispatch(self.forwarder.assign(slot, publication, self._clock()))

    # -- events ---------------------------------------------------------------------------

    async def dispatch(self, events: list[Event]) -> None:
        await self.finish(send_now(self._egress, events))

    async def finish(self, events: list[Event]) -> None:
        """The events ``intake.send_now`` left: a copy its egress declined goes aiortc's way,
        a recorder's to its sink; feedback to publishers; the room's callbacks."""
        egresses, sinks = self._egress, self._sinks
        for event in events:
            if type(event) is SendRtp or type(event) is SendRtcp:
                egress = egresses.get(event.slot)
                if egress is not None:
                    try:
                        await egress.fallback(event.data)
                    except ConnectionError:
                        pass
                    continue
                sink = sinks.get(event.slot)
                if sink is not None:
                    try:
                        await sink(event.data)
                    except ConnectionError:
                        pass
            elif type(event) is RequestKeyframe:
                receiver = self._receivers.get(event.publication)
                if receiver is not None:
                    await hooks.send_pli(receiver, event.ssrc)
            elif type(event) is NackPublisher:
                receiver = self._receivers.get(event.publication)
                if receiver is not None:
                    await hooks.send_nack(receiver, event.ssrc, list(event.sequence_numbers))
            elif type(event) is LimitBitrate:
                receiver = self._receivers.get(event.publication)
                if receiver is not None:
                    remb = RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP,
                        ssrc=self._remb_ssrc[event.publication],
                        media_ssrc=0,
                        fci=pack_remb_fci(event.bitrate, [event.ssrc]),
                    )
                    await hooks.send_receiver_rtcp(receiver, remb)
            elif type(event) is SlotIdle and self._on_slot_idle is not None:
                await self._on_slot_idle(event)
            elif (type(event) is SlotPaused or type(event) is SlotResumed) and (
                self._on_adapt is not None
            ):
                await self._on_adapt(event)

    def _start_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = _Ticker.of(self._tick_interval)
            self._ticker.add(self)

    async def tick_once(self) -> None:
        """:meth:`Forwarder.tick` and its events (the ticker calls it every interval)."""
        try:
            await self.dispatch(self.forwarder.tick(self._clock()))
        except Exception:  # the ticker must outlive any one bad event
            logger.exception("SFU tick failed")

    async def close(self) -> None:
        for ingress in self._ingress.values():
            ingress.close()
        self._ingress.clear()
        self._rtcp_egress.clear()  # (their C senders hold duplicates of the ICE sockets)
        for task in list(self._tasks):
            task.cancel()
        if self._ticker is not None:
            await self._ticker.remove(self)
            self._ticker = None
