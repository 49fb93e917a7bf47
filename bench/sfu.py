"""Load benchmark of the edge's SFU against Janus and an aiortc MediaRelay, same load, same host.

    .venv/bin/python bench/sfu.py [--rooms 2] [--participants 4] [--warmup 4] [--seconds 10]
                                  [--connect-limit 60] [--repeat 1]
                                  [--kinds zastava,janus,janus-1loop,relay]
                                  [--sfu-cpu 0] [--generator-cpu 1] [--loop uvloop|asyncio]
                                  [--generator-loop uvloop|asyncio] [--clients lean|aiortc]
                                  [--pace-grid 0]
                                  [--width 320 --height 240 --fps 15 --bitrate 300000]
                                  [--janus-bitrate 2500000] [--janus-event-loops 0]
                                  [--sfu-tree DIR] [--profile PATH] [--generator-profile PATH]
                                  [--idle]

The SFU under test runs in its own process pinned to ``--sfu-cpu``; this process is the load
generator, pinned to ``--generator-cpu``: ``--rooms`` rooms of ``--participants``
WebRTC clients, each publishing pre-encoded VP8 + Opus (no encoder on the client) and
subscribing to every other participant's audio and video. The subscribers only count RTP
packets (no decoder, so the generator's core goes to the network). ICE over the host's own
address (aioice never offers 127.0.0.1), no STUN/TURN.

The clients (``--clients``): ``lean`` (the default, ``bench.sfu_lean_clients``) are real
WebRTC peers to the SFU (aiortc's SDP, ICE, DTLS-SRTP, its RTCP handling), but their RTP
skips aiortc's per-packet Python: publishers send pre-packetized frames with the header
patched in place and SRTP-protected straight to the ICE socket, subscribers count each
packet right after SRTP at the socket (no parsing into ``RtpPacket``, no jitter buffer)
and send a receiver report per second; each publisher's audio and video go out when due,
at phases of their own (``--pace-grid MS`` instead sends every frame due within a step of
that many ms together: a burstier load, to see how an SFU's cost depends on how packets
arrive). ``aiortc`` (``bench.sfu_clients``, always used for
``relay``, whose re-encoding drops the stamps) runs every packet through aiortc's sender
and receiver, as before; it saturated its one core near 16 four-person rooms. The
generator runs on uvloop (``--generator-loop``) and, once every client is set up, moves
their objects out of the garbage collector's way (``gc.freeze``).

``zastava*`` on a result line: the SFU's per-packet modules ran compiled with mypyc
(``edge.sfu.native``; ``scripts/compile_sfu.py``), ``zastava`` alone: as pure Python.

``--sfu-tree DIR`` makes the SFU process import ``edge`` from ``DIR`` (``git archive HEAD edge
| tar -x -C DIR``), so that other people's edits in progress in the checkout do not change
the SFU under test between runs.

Kinds: ``zastava`` is ``edge.sfu.room.Room`` (packet forwarding, never decodes), signalled
over a pipe to a forked process; ``janus`` is Debian's ``janus`` binary with its videoroom
plugin (``bench.janus``: a generated configuration, only the HTTP transport on 127.0.0.1
and the videoroom loaded, signalled over its HTTP API from this process;
``--janus-event-loops``, default 0 = Janus's default of one event-loop thread per handle);
``janus-1loop`` is Janus with ``event_loops = 1`` (every handle on one loop
thread, as the Python SFUs run on one event loop); ``relay`` is aiortc's ``MediaRelay`` (one
decoder per publication, one encoder per subscriber stream, the usual aiortc "SFU"). The
kinds run one after the other, ``--repeat`` times, interleaved, in this session, on this
machine; the machine is shared, so figures move.

``--idle`` connects every client and sends no media: the CPU it reports is the SFU's fixed
cost of its connections (ICE consent, RTCP, its tickers). ``--profile PATH`` runs cProfile in
the SFU process over the window only (``PATH.<kind>``; it slows the SFU: read shares).

The publishers send no media until every client's connection is up (or ``--connect-limit``
passed), so that setting up hundreds of connections on the generator's one core does not
compete with the media. Reported, over the ``--seconds`` window that starts ``--warmup``
seconds after that (the line says how many subscribers were up, and how many of the
subscriber streams delivered anything in the window):

* CPU of the SFU process (all threads, user + system, so the kernel's UDP send path too) per
  forwarded RTP packet and per forwarded stream-second (one subscriber receiving one track
  for one second). Forwarded packets are counted by the SFU itself for ``zastava`` and
  ``relay`` (at ``RTCDtlsTransport._send_rtp``, and where ``edge.sfu.egress`` sends without
  it) and, for ``janus``, from the subscribers'
  sequence numbers (the span each stream's numbers covered in the window, lost ones
  included); both counts are printed for ``zastava`` as a cross-check, and a third: the
  packets received (until 1 s after the window) that the publishers sent inside the window,
  by their stamps. When the generator falls behind and its backlog drains in the window,
  the sequence span covers more than the window: trust a Janus figure only where the span
  and the stamp count agree (no loss, small latency). Janus's CPU comes
  from ``/proc/<pid>/stat`` (utime + stime of all its threads). The system-time share (the
  kernel: UDP send and receive, thread wake-ups) is printed beside the total;
* end-to-end latency p50/p95/p99 ("e2e"), the same measurement for every forwarding SFU:
  publishers stamp every RTP payload with their send time (``bench.sfu_clients``, the SFUs
  rewrite headers, not payloads) and subscribers in this process read it back on receipt.
  It includes both loopback legs, SRTP at both ends and the generator's own event loop, so
  it is an upper bound of what the SFU adds; not for ``relay`` (payloads are re-encoded);
* in-SFU latency p50/p95/p99 ("sfu"), where the SFU is Python and can be instrumented: time
  media spends inside the SFU process, from the datagram's arrival at the SFU's socket layer
  to the hand-off of the forwarded packet to the socket; for ``zastava`` per packet (audio
  and video): a packet its fast ingress takes from its entry there to the end of its
  handler, every copy sent (``edge.sfu.ingress.observe``), one aiortc's way from aioice's
  arrival to each copy's send; for ``relay`` per video frame (first packet in to the
  re-encoded frame out; audio pts are resampled and cannot be matched);
* added latency p50/p95/p99 ("added", ``zastava``): from the publisher's stamp to the point
  where the in-SFU latency ends, per packet: what the SFU adds, the time a datagram waits
  unread in the SFU's socket included (the in-SFU figure starts after that wait). The
  probe costs nothing per forwarded copy (the copies are the forwarders' own count, read at
  the window's ends), a Python call per received packet;
* the SFU's garbage-collector pauses per generation in the window (count, total, longest;
  wall time, so a pause the VM stretched shows stretched);
* loss seen by the subscribers (before repair: the counting subscribers send no NACKs);
* the SFU's resident memory, UDP receive-buffer drops at the SFU's, the generator's and all
  the host's sockets, the bytes waiting unread in the SFU's and the generator's UDP receive
  queues (sampled every 0.5 s: a queue there is latency the in-SFU probe does not see; by
  ``bench.backlog`` in a process of its own at nice 19 on the generator's core: sampled on
  the generator's event loop, the 10-30 ms read held every client's sends twice a second
  and made bursts), the host's load average when the run started;
* how fast the SFU's core was just before and just after the run, idle (``bench.calibrate``:
  a fixed workload's median wall time, lower is faster): this VM's slow spells, which the
  CPU steal does not show, move every figure above.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import functools
import gc
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aioice.ice  # noqa: E402
from aiortc import (  # noqa: E402
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay  # noqa: E402
from aiortc.rtcdtlstransport import RTCDtlsTransport  # noqa: E402
from aiortc.rtp import is_rtcp  # noqa: E402

from bench.arrivals import Stalls, stamp_arrivals  # noqa: E402
from bench.backlog import BacklogSampler, own_udp_drops  # noqa: E402
from bench.calibrate import core_ms  # noqa: E402
from bench.janus import JanusConfig, JanusProcess, JanusServer, janus_version  # noqa: E402
from bench.lean_rtp import packetize  # noqa: E402
from bench.sfu_clients import (  # noqa: E402
    Publisher,
    Subscriber,
    make_clip,
    stamp_of,
    wait_for,
)
from bench.sfu_lean_clients import LeanPublisher, LeanSubscriber  # noqa: E402

# -- instrumentation inside the SFU process ---------------------------------------------------


class Probe:
    """Arrival stamps at aioice, RTP sends at the DTLS transport, latencies in between."""

    def __init__(self) -> None:
        self.arrival = 0.0  # arrival time of the datagram being processed
        self.measuring = False
        self.sent = self.sent0 = 0  # RTP copies sent, and at the window's start
        # the SFU's own count of copies, where it has one: read at the window's ends instead
        # of a Python call per copy (``sent``)
        self.counter: Callable[[], int] | None = None
        self.latencies: list[float] = []
        # publisher's send -> the SFU's send of the first copy (stamped payloads only): what
        # the SFU adds, its sockets' queue included (``latencies`` starts after that queue)
        self.added: list[float] = []
        self.cpu0 = self.sys0 = 0.0
        self.t0 = 0.0

    def install(self, per_packet_latency: bool, counter: Callable[[], int] | None = None) -> None:
        """``counter``: the SFU counts its copies itself (Zastava's forwarder): the fast
        egress is not observed and aiortc's ``_send_rtp`` not wrapped (copies sent aiortc's
        way, none in a steady window, are counted but not timed)."""
        probe = self
        send_rtp = RTCDtlsTransport._send_rtp

        def arrived(t: float) -> None:
            probe.arrival = t

        last = [0.0]  # the arrival whose first copy was seen

        def sent(data: bytes, rtcp: bool) -> None:
            # per copy: only a count on the fast egress (latency is taken per packet, below)
            if rtcp:
                return
            probe.sent += 1
            if probe.measuring and per_packet_latency and probe.arrival:
                now = time.monotonic()  # a packet aiortc's way (or an SFU tree before this)
                probe.latencies.append(now - probe.arrival)
                if probe.arrival != last[0]:
                    last[0] = probe.arrival
                    stamp = stamp_of(data)  # the payload ends the plain packet
                    if stamp is not None:
                        probe.added.append(now - stamp)

        def forwarded(packet: Any, entered: float) -> None:
            # a packet the fast ingress took, once its handler sent every copy it could
            probe.arrival = 0.0  # until aiortc's way stamps another
            if probe.measuring:
                now = time.monotonic()
                probe.latencies.append(now - entered)
                stamp = stamp_of(packet.payload)
                if stamp is not None:
                    probe.added.append(now - stamp)

        async def counted_send_rtp(self: Any, data: bytes) -> None:
            await send_rtp(self, data)
            sent(data, is_rtcp(data))

        try:
            from edge.sfu import egress, ingress
        except ImportError:  # a tree from before them (--sfu-tree)
            egress = ingress = None  # type: ignore[assignment]
        if counter is not None and ingress is not None and hasattr(ingress, "Observer"):
            self.counter = counter
            if per_packet_latency:
                ingress.observe(forwarded)
            return
        stamp_arrivals(arrived)
        RTCDtlsTransport._send_rtp = counted_send_rtp  # type: ignore[method-assign]
        if egress is None:
            return
        egress.observe(sent)  # the fast egress sends without _send_rtp: count it there
        if per_packet_latency and hasattr(ingress, "Observer"):  # (older trees: per copy)
            ingress.observe(forwarded)

    def mark(self) -> None:
        self.sent0 = self.sent if self.counter is None else self.counter()
        self.latencies = []
        self.added = []
        self.sys0 = os.times().system
        self.cpu0 = time.process_time()
        self.t0 = time.monotonic()
        self.measuring = True

    def report(self) -> dict[str, Any]:
        self.measuring = False
        return {
            "cpu": time.process_time() - self.cpu0,
            "sys": os.times().system - self.sys0,
            "wall": time.monotonic() - self.t0,
            "sent": (self.sent if self.counter is None else self.counter()) - self.sent0,
            "latencies": sorted(self.latencies),
            "added": sorted(self.added),
            "rss_kib": rss_kib(),
            "compiled": _compiled(),
            "sfu_drops": own_udp_drops(),
        }


def _compiled() -> bool:
    """Whether the SFU's per-packet modules are the mypyc-compiled ones (edge.sfu.native)."""
    try:
        from edge.sfu import native
    except ImportError:  # a tree from before them (--sfu-tree)
        return False
    return native.active()


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU time of a process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    user, system = int(fields[11]), int(fields[12])  # utime, stime in clock ticks
    tick = os.sysconf("SC_CLK_TCK")
    return (user + system) / tick, system / tick


# Every track on one transport: under aiortc 1.16's default bundle policy (BALANCED) the
# second and later video tracks of one offer stay on a transport that bundling discards and
# send nothing (edge.sfu.room makes its connections MAX_BUNDLE for the same reason).
NO_ICE = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class ZastavaServer:
    def __init__(self, probe: Probe) -> None:
        from edge.sfu.room import Room

        self._room_type = Room
        self.rooms: dict[str, Any] = {}
        probe.install(per_packet_latency=True, counter=self.copies)

    def copies(self) -> int:
        """Copies the rooms' forwarders made (sent, or handed to aiortc's path to send)."""
        return sum(room.stats.forwarded for room in self.rooms.values())

    async def join(self, room: str, pid: str) -> None:
        if room not in self.rooms:
            self.rooms[room] = self._room_type(room)
        await self.rooms[room].join(pid)

    async def publish(self, room: str, pid: str, sdp: str) -> str:
        answer = await self.rooms[room].publish(pid, RTCSessionDescription(sdp, "offer"))
        return str(answer.sdp)

    async def subscribe(self, room: str, pid: str) -> str:
        return str((await self.rooms[room].subscribe(pid)).sdp)

    async def answer(self, room: str, pid: str, sdp: str) -> None:
        await self.rooms[room].answer(pid, RTCSessionDescription(sdp, "answer"))

    async def close(self) -> None:
        for room in self.rooms.values():
            await room.close()


class RelayServer:
    """aiortc's MediaRelay: decode once per publication, encode once per subscriber stream."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.relay = MediaRelay()
        self.pcs: list[RTCPeerConnection] = []
        self.tracks: dict[str, dict[str, list[tuple[Any, Any]]]] = collections.defaultdict(dict)
        self.pending: dict[tuple[str, str], RTCPeerConnection] = {}
        # (id(receiver), relative timestamp) -> arrival of the frame's first packet
        self.frame_arrivals: dict[tuple[int, int], float] = {}
        probe.install(per_packet_latency=False)

    async def join(self, room: str, pid: str) -> None:
        self.tracks[room][pid] = []

    async def publish(self, room: str, pid: str, sdp: str) -> str:
        pc = RTCPeerConnection(NO_ICE)
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        for transceiver in pc.getTransceivers():
            transceiver.direction = "recvonly"
            if transceiver.kind == "video":
                self._watch_receiver(transceiver.receiver)
            self.tracks[room][pid].append((transceiver.receiver.track, transceiver.receiver))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    def _watch_receiver(self, receiver: Any) -> None:
        original = receiver._handle_rtp_packet
        arrivals, probe = self.frame_arrivals, self.probe
        first: list[int] = []

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            if not first:
                first.append(packet.timestamp)
            relative = (packet.timestamp - first[0]) & 0xFFFFFFFF
            arrivals.setdefault((id(receiver), relative), probe.arrival)
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    def _watch_sender(self, sender: Any, receiver: Any) -> None:
        original = sender._next_encoded_frame
        arrivals, probe = self.frame_arrivals, self.probe

        async def next_frame(codec: Any) -> Any:
            frame = await original(codec)
            if frame is not None and probe.measuring:
                arrived = arrivals.get((id(receiver), frame.timestamp))
                if arrived is not None:
                    probe.latencies.append(time.monotonic() - arrived)
            return frame

        sender._next_encoded_frame = next_frame

    async def subscribe(self, room: str, pid: str) -> str:
        pc = RTCPeerConnection(NO_ICE)
        self.pcs.append(pc)
        for other, tracks in self.tracks[room].items():
            if other == pid:
                continue
            for track, receiver in tracks:
                sender = pc.addTrack(self.relay.subscribe(track, buffered=False))
                if track.kind == "video":
                    self._watch_sender(sender, receiver)
        self.pending[(room, pid)] = pc
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def answer(self, room: str, pid: str, sdp: str) -> None:
        pc = self.pending.pop((room, pid))
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()


def serve(
    kind: str, conn: Connection, cpu: int, loop: str, profile: str | None, tree: str | None
) -> None:
    os.sched_setaffinity(0, {cpu})
    if tree is not None:  # the SFU's code from a fixed export, not the working tree
        if "edge" in sys.modules:
            raise RuntimeError("edge was imported before the fork: --sfu-tree cannot apply")
        sys.path.insert(0, tree)
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    else:  # the generator's own choice is inherited through the fork
        asyncio.set_event_loop_policy(None)
    profiler = cProfile.Profile() if profile is not None else None
    asyncio.run(_serve(kind, conn, profiler))
    if profiler is not None:
        profiler.dump_stats(f"{profile}.{kind}")


async def _serve(kind: str, conn: Connection, profiler: cProfile.Profile | None) -> None:
    """The SFU's side of the signalling pipe; ``profiler`` runs over the window only."""
    probe = Probe()
    stalls = Stalls()  # the garbage collector's pauses over the window
    stalls.install()
    server: Any = RelayServer(probe) if kind == "relay" else ZastavaServer(probe)
    while True:
        op, args = await asyncio.to_thread(conn.recv)
        try:
            result: Any = None
            if op == "mark":
                probe.mark()
                stalls.mark()
                if profiler is not None:
                    profiler.enable()
            elif op == "report":
                if profiler is not None:
                    profiler.disable()
                gc_pauses = stalls.report()  # first: the report sorts lists the collector
                result = probe.report()  # then traverses (a 50-120 ms pause, not the window's)
                result.update(gc_pauses)
                if kind != "relay":
                    stats = [room.stats for room in server.rooms.values()]
                    result["history_hits"] = sum(s.retransmitted_from_history for s in stats)
                    result["keyframe_requests"] = sum(s.keyframe_requests for s in stats)
            elif op == "stop":
                await server.close()
                conn.send(("ok", None))
                return
            else:
                result = await getattr(server, op)(*args)
            conn.send(("ok", result))
        except Exception as exc:  # reported to the generator, which stops
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


# -- the load generator -----------------------------------------------------------------------


class Signalling:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    async def __call__(self, op: str, *args: Any) -> Any:
        async with self._lock:
            await asyncio.to_thread(self._conn.send, (op, args))
            status, result = await asyncio.to_thread(self._conn.recv)
        if status != "ok":
            raise RuntimeError(f"SFU: {op} failed: {result}")
        return result


class Loss:
    """Per received SSRC: distinct sequence numbers and their extended range, in the window;
    and the end-to-end latency of every stamped packet."""

    def __init__(self, stamped: bool) -> None:
        self.measuring = False
        self.stamped = stamped  # the publishers stamp their payloads
        self.streams: dict[tuple[int, int], list[Any]] = {}  # (subscriber, ssrc) -> state
        self.latencies: list[float] = []
        # a cross-check of the forwarded count: packets *sent by the publishers* inside
        # the window (by their stamps) that arrived, counted a while after the window too
        self.window = (float("inf"), float("-inf"))
        self.counting = False
        self.sent_in_window = 0

    def packet(self, subscriber: int, kind: str, packet: Any, now: float) -> None:
        """An aiortc ``RtpPacket`` seen by a :class:`bench.sfu_clients.Subscriber`."""
        if not (self.measuring or self.counting):
            return
        sent = stamp_of(packet.payload) if self.stamped else None
        self.raw(subscriber, packet.ssrc, packet.sequence_number, sent, now)

    def raw(self, subscriber: int, ssrc: int, seq: int, sent: float | None, now: float) -> None:
        """One RTP packet: the subscriber's index, its SSRC, sequence number and stamp."""
        if not (self.measuring or self.counting):
            return
        if sent is not None and self.window[0] <= sent <= self.window[1]:
            self.sent_in_window += 1
        if not self.measuring:
            return
        if sent is not None and 0 <= now - sent < 60:  # a stamp, not bytes that look like one
            self.latencies.append(now - sent)
        key = (subscriber, ssrc)
        state = self.streams.get(key)
        if state is None:
            self.streams[key] = [seq, seq, {seq}]  # first ext, highest ext, seen
            return
        highest = state[1]
        ext = highest + (((seq - highest + 0x8000) & 0xFFFF) - 0x8000)
        state[1] = max(highest, ext)
        state[0] = min(state[0], ext)
        state[2].add(ext)

    def totals(self) -> tuple[int, int]:
        expected = sum(s[1] - s[0] + 1 for s in self.streams.values())
        received = sum(len(s[2]) for s in self.streams.values())
        return expected, received


def _lean_packet(
    loss: Loss, index: int, kind: str, ssrc: int, seq: int, sent: float | None, now: float
) -> None:
    loss.raw(index, ssrc, seq, sent, now)


def keyframes_sent(publisher: Any) -> int:
    """Keyframes a publisher sent in answer to PLI/FIR (lean or aiortc client)."""
    if isinstance(publisher, LeanPublisher):
        return publisher.keyframes_sent
    return publisher.video.keyframes_sent if publisher.video is not None else 0


async def generate(
    signal: Any, args: argparse.Namespace, stamp: bool, sfu_pid: int
) -> dict[str, Any]:
    clip = make_clip(args.clip_seconds, args.fps, args.width, args.height, args.bitrate)
    lean = args.clients == "lean" and stamp  # a re-encoding relay gets aiortc's clients
    packets = packetize(clip) if lean else None
    loss = Loss(stamped=stamp)
    media = asyncio.Event()  # the publishers send once every client is connected
    publishers: list[Any] = []
    subscribers: list[Any] = []
    for r in range(args.rooms):
        room = f"room-{r}"
        names = [f"p{i}" for i in range(args.participants)]
        for name in names:
            await signal("join", room, name)
            publisher: Any = (
                LeanPublisher(
                    packets, media, connect_limit=args.connect_limit + 5, grid=args.pace_grid / 1e3
                )
                if packets is not None
                else Publisher(clip, stamp=stamp, gate=media)
            )
            answer = await signal("publish", room, name, (await publisher.offer()).sdp)
            await publisher.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            publishers.append(publisher)
        for name in names:
            index = len(subscribers)
            subscriber: Any
            if lean:
                subscriber = LeanSubscriber(
                    functools.partial(_lean_packet, loss, index),
                    connect_limit=args.connect_limit + 5,
                )
            else:
                subscriber = Subscriber(
                    decode=False, on_packet=functools.partial(loss.packet, index)
                )
            offer = await signal("subscribe", room, name)
            answer = await subscriber.answer(RTCSessionDescription(offer, "offer"))
            await signal("answer", room, name, answer.sdp)
            subscribers.append(subscriber)

    # every client connected (or --connect-limit passed), then the media, then the warm-up
    def all_connected() -> bool:
        return all(p.pc.connectionState == "connected" for p in publishers) and all(
            s.pc.connectionState == "connected" for s in subscribers
        )

    with contextlib.suppress(TimeoutError):
        await wait_for(all_connected, args.connect_limit, "every client connected")
    # the clients' objects, set up once, out of the collector's way: full collections that
    # walked hundreds of peer connections took ~10 % of the generator's core
    gc.collect()
    gc.freeze()
    if not args.idle:
        media.set()
    await asyncio.sleep(args.warmup)
    connected = sum(s.pc.connectionState == "connected" for s in subscribers)
    keyframes0 = sum(keyframes_sent(p) for p in publishers)
    by_kind0 = {k: sum(s.received.packets[k] for s in subscribers) for k in ("audio", "video")}
    profiler = cProfile.Profile() if args.generator_profile else None
    if profiler is not None:
        profiler.enable()
    gen_cpu0, gen_sys0, t0 = time.process_time(), os.times().system, time.monotonic()
    steal0 = cpu_steal(args.sfu_cpu), cpu_steal(args.generator_cpu)
    await signal("mark")
    loss.window = (time.monotonic(), float("inf"))
    loss.measuring = loss.counting = True
    # sampled every 0.5 s by a process of its own (bench.backlog: not on this event loop)
    sampler = BacklogSampler({"sfu": sfu_pid, "generator": os.getpid()}, args.generator_cpu)
    await sampler.start()
    await asyncio.sleep(args.seconds)
    backlog = await sampler.stop()
    steal = (cpu_steal(args.sfu_cpu) - steal0[0], cpu_steal(args.generator_cpu) - steal0[1])
    loss.measuring = False
    loss.window = (loss.window[0], time.monotonic())
    report: dict[str, Any] = dict(await signal("report"))
    report["generator_drops"] = own_udp_drops()
    gen_wall = time.monotonic() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.generator_profile)
    gen_cpu = (time.process_time() - gen_cpu0) / gen_wall
    gen_sys = (os.times().system - gen_sys0) / gen_wall
    by_kind = {
        k: sum(s.received.packets[k] for s in subscribers) - by_kind0[k] for k in ("audio", "video")
    }
    received = sum(by_kind.values())
    keyframes = sum(keyframes_sent(p) for p in publishers) - keyframes0
    await asyncio.sleep(1.0)  # what became of the window's last publisher packets
    loss.counting = False
    for publisher in publishers:
        if isinstance(publisher, LeanPublisher):
            publisher.stop_media()
    await signal("stop")
    for publisher in publishers:
        await publisher.close()
    for subscriber in subscribers:
        await subscriber.close()
    gc.unfreeze()
    expected, got = loss.totals()
    streams = args.rooms * args.participants * (args.participants - 1) * 2
    report.update(
        streams=streams,
        connected=connected,
        subscribers=len(subscribers),
        received=received,
        loss=1 - got / expected if expected else float("nan"),
        generator_load=gen_cpu,
        generator_system=gen_sys,
        steal=tuple(seconds / args.seconds for seconds in steal),
        forwarded=expected,
        sent_in_window=loss.sent_in_window,
        backlog={k: (max(v, default=0), sum(v) / max(1, len(v))) for k, v in backlog.items()},
        flowing=len(loss.streams),
        received_by_kind=by_kind,
        keyframes_sent=keyframes,
        e2e=sorted(loss.latencies),
    )
    return report


def udp_receive_buffer_errors() -> int:
    """Datagrams the kernel dropped host-wide because a socket's receive buffer was full."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    header, values = [pair for pair in zip(lines, lines[1:], strict=False) if pair[0][0] == "Udp:"][
        0
    ]
    return int(values[header.index("RcvbufErrors")])


def cpu_steal(cpu: int) -> float:
    """Seconds the hypervisor ran something else while this VM's ``cpu`` wanted to run
    (``steal`` in /proc/stat): a VM's slow spell shows here, not in the process's CPU."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{cpu}":
            return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    drops = udp_receive_buffer_errors()
    load = os.getloadavg()[0]
    before = core_ms(args.sfu_cpu, 15)  # the SFU's core, idle: how fast the VM is now
    result = _run_one(kind, args)
    result["core_ms"] = (before, core_ms(args.sfu_cpu, 15))
    result["kernel_drops"] = udp_receive_buffer_errors() - drops
    result["load"] = load
    return result


KINDS = ("zastava", "janus", "janus-1loop", "relay")


def _run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    if kind == "janus":
        return asyncio.run(_run_janus(args, args.janus_event_loops))
    if kind == "janus-1loop":
        return asyncio.run(_run_janus(args, 1))
    if kind not in KINDS:
        raise SystemExit(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    parent, child = mp.Pipe()
    process = mp.get_context("fork").Process(
        target=serve,
        args=(kind, child, args.sfu_cpu, args.loop, args.profile, args.sfu_tree),
        daemon=True,
    )
    process.start()
    assert process.pid is not None
    try:
        return asyncio.run(generate(Signalling(parent), args, kind != "relay", process.pid))
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()


class JanusSignalling:
    """The generator's signalling ops on a Janus child process; CPU and memory from /proc."""

    def __init__(self, process: JanusProcess) -> None:
        self.process = process
        self.server = JanusServer(process.url)
        self.cpu0 = self.sys0 = self.t0 = 0.0

    async def __call__(self, op: str, *args: Any) -> Any:
        pid = self.process.pid
        if op == "mark":
            (self.cpu0, self.sys0), self.t0 = process_cpu_seconds(pid), time.monotonic()
            return None
        if op == "report":
            cpu, system = process_cpu_seconds(pid)
            hangups = self.server.hangups()
            if hangups:
                print(f"# janus hangups: {hangups[:5]} ({len(hangups)})", flush=True)
            return {
                "cpu": cpu - self.cpu0,
                "sys": system - self.sys0,
                "wall": time.monotonic() - self.t0,
                "sent": None,  # counted by the subscribers
                "latencies": [],
                "added": [],
                "rss_kib": rss_kib(pid),
                "sfu_drops": own_udp_drops(pid),
                "threads": thread_count(pid),
            }
        if op == "stop":
            await self.server.close()
            return None
        try:
            return await getattr(self.server, op)(*args)
        except Exception as exc:
            raise RuntimeError(f"janus: {op} failed: {exc}; log: {self.process.tail()}") from exc


def host_address() -> str:
    """The address aioice gives the clients' host candidates (it skips 127.0.0.1)."""
    addresses = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not addresses:
        raise SystemExit("no non-loopback IPv4 address: aioice would offer no host candidate")
    return str(addresses[0])


async def _run_janus(args: argparse.Namespace, event_loops: int) -> dict[str, Any]:
    config = JanusConfig(
        rooms=args.rooms,
        publishers=args.participants,
        bitrate=args.janus_bitrate,
        ice_address=host_address(),
        event_loops=event_loops,
    )
    process = JanusProcess(config, args.sfu_cpu)
    await process.start()
    try:
        return await generate(JanusSignalling(process), args, True, process.pid)
    finally:
        process.stop()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def percentiles(values: list[float]) -> str:
    p50, p95, p99 = (percentile(values, q) * 1e3 for q in (0.5, 0.95, 0.99))
    return f"{p50:.2f}/{p95:.2f}/{p99:.2f} ms (n={len(values)})"


def show(kind: str, r: dict[str, Any]) -> str:
    sent = r["sent"] if r["sent"] is not None else r["forwarded"]
    per_packet = r["cpu"] / sent * 1e6 if sent else float("nan")
    stream_seconds = r["streams"] * r["wall"]
    counted = "SFU" if r["sent"] is not None else "subscribers"
    if kind == "zastava":
        kind = "zastava" + ("*" if r.get("compiled") else "")
    return (
        f"{kind:8s} streams {r['streams']:4d} ({r['flowing']} flowing; "
        f"{r['connected']}/{r['subscribers']} subs up)  "
        f"SFU CPU {r['cpu'] / r['wall'] * 100:5.1f}% (system {r['sys'] / r['wall'] * 100:.1f}%)  "
        f"forwarded {sent / r['wall']:8.0f} pkt/s "
        f"(counted by the {counted}; subscribers' count {r['forwarded'] / r['wall']:.0f}, "
        f"received of the window's publisher packets {r['sent_in_window'] / r['wall']:.0f})  "
        f"{per_packet:7.1f} CPU-us/pkt  {r['cpu'] / stream_seconds * 1e3:7.3f} CPU-ms/stream-s  "
        f"latency e2e {percentiles(r['e2e'])} sfu {percentiles(r['latencies'])} "
        f"added {percentiles(r.get('added', []))}  "
        f"loss {r['loss'] * 100:.2f}%  received audio/video "
        f"{r['received_by_kind']['audio'] / r['wall']:.0f}/"
        f"{r['received_by_kind']['video'] / r['wall']:.0f} pkt/s  "
        f"keyframes on request {r['keyframes_sent']}  "
        f"RSS {r['rss_kib'] / 1024:.0f} MiB  generator {r['generator_load'] * 100:.0f}% "
        f"(system {r['generator_system'] * 100:.0f}%)  "
        f"UDP backlog mean/max SFU {r['backlog']['sfu'][1] / 1024:.0f}/"
        f"{r['backlog']['sfu'][0] / 1024:.0f} KiB generator "
        f"{r['backlog']['generator'][1] / 1024:.0f}/{r['backlog']['generator'][0] / 1024:.0f} KiB  "
        f"UDP drops SFU/generator/host {r['sfu_drops']}/{r['generator_drops']}/"
        f"{r['kernel_drops']}  host load {r['load']:.1f}  "
        f"steal SFU/generator CPU {r['steal'][0] * 100:.1f}/{r['steal'][1] * 100:.1f}%  "
        f"SFU core before/after {r['core_ms'][0]:.1f}/{r['core_ms'][1]:.1f} ms"
        + (
            f"  history-hits {r['history_hits']} PLIs {r['keyframe_requests']}"
            if "history_hits" in r
            else ""
        )
        + (f"  janus threads {r['threads']}" if "threads" in r else "")
        + (
            "  GC pauses n/total/max ms "
            + " ".join(f"gen{g} {v['n']}/{v['ms']:.0f}/{v['max']:.1f}" for g, v in r["gc"].items())
            if "gc" in r
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--connect-limit",
        type=float,
        default=60.0,
        help="wait at most this long for every subscriber to connect before the warm-up",
    )
    parser.add_argument("--kinds", default="zastava,janus,relay")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sfu-cpu", type=int, default=0)
    parser.add_argument("--generator-cpu", type=int, default=1)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--generator-loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--pace-grid",
        type=float,
        default=0.0,
        help="lean publishers send each frame at the next multiple of this many ms (0: when"
        " due): every frame due within a step leaves together, a burstier load",
    )
    parser.add_argument(
        "--clients",
        choices=("lean", "aiortc"),
        default="lean",
        help="lean: aiortc handshake, RTP sent and counted around aiortc (bench.sfu_lean_clients);"
        " aiortc: the whole aiortc stack per packet (bench.sfu_clients; always for relay)",
    )
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=300_000)
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument(
        "--janus-bitrate", type=int, default=2_500_000, help="videoroom bitrate cap (REMB)"
    )
    parser.add_argument(
        "--janus-event-loops",
        type=int,
        default=0,
        help="janus.jcfg event_loops (0: Janus's default, one loop thread per handle)",
    )
    parser.add_argument(
        "--idle",
        action="store_true",
        help="connect every client but send no media: the SFU's fixed cost of its connections",
    )
    parser.add_argument(
        "--profile", help="cProfile the SFU process over the window into PROFILE.<kind>"
    )
    parser.add_argument(
        "--generator-profile",
        help="cProfile the generator over the window into this file (the last run's; wall time)",
    )
    parser.add_argument(
        "--sfu-tree",
        help="import the SFU (edge/) from this folder, e.g. `git archive HEAD edge | tar -x -C"
        " DIR`, so that edits in progress in the checkout do not change the SFU under test",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.generator_cpu})
    if args.generator_loop == "uvloop":
        import uvloop

        uvloop.install()
    make_clip(args.clip_seconds, args.fps, args.width, args.height, args.bitrate)  # before fork
    print(
        f"# {args.rooms} rooms x {args.participants} participants, VP8 {args.width}x{args.height}"
        f"@{args.fps} {args.bitrate // 1000} kbit/s + Opus; SFU on CPU {args.sfu_cpu} "
        f"({args.loop}), generator on CPU {args.generator_cpu}; warmup {args.warmup} s, "
        f"window {args.seconds} s"
        + (f"; janus {janus_version()}" if "janus" in args.kinds else ""),
        flush=True,
    )
    for _ in range(args.repeat):
        for kind in args.kinds.split(","):
            try:
                print(show(kind, run_one(kind, args)), flush=True)
            except Exception as exc:  # one kind failing this load does not stop the others
                print(f"{kind:8s} FAILED: {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    main()
