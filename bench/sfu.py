"""Load benchmark of the edge's SFU against an aiortc MediaRelay relay, same load, same host.

    .venv/bin/python bench/sfu.py [--rooms 2] [--participants 4] [--warmup 4] [--seconds 10]
                                  [--kinds zastava,relay] [--repeat 1] [--sfu-cpu 0]
                                  [--generator-cpu 1] [--loop uvloop|asyncio]
                                  [--width 320 --height 240 --fps 15 --bitrate 300000]
                                  [--profile PATH]

The SFU under test runs in its own process pinned to ``--sfu-cpu``; this process is the load
generator, pinned to ``--generator-cpu``: ``--rooms`` rooms of ``--participants``
headless aiortc clients, each publishing pre-encoded VP8 + Opus (``bench.sfu_clients``: no
encoder on the client) and subscribing to every other participant's audio and video. The
subscribers only count RTP packets (no decoder, so the generator's core goes to the
network). Signalling goes over a pipe; ICE over the host's own address, no STUN/TURN.

Kinds: ``zastava`` is ``edge.sfu.room.Room`` (packet forwarding, never decodes); ``relay``
is aiortc's ``MediaRelay`` (one decoder per publication, one encoder per subscriber
stream, the usual aiortc "SFU"). The kinds run one after the other, ``--repeat`` times,
interleaved, in this session, on this machine; the machine is shared, so figures move.

Reported, over the ``--seconds`` window after ``--warmup``:

* CPU of the SFU process (all threads) per forwarded RTP packet and per forwarded
  stream-second (one subscriber receiving one track for one second);
* added latency p50/p95/p99: time media spends inside the SFU process, from the datagram's
  arrival at the SFU's socket layer (aioice) to the hand-off of the forwarded packet to the
  socket; for ``zastava`` per packet (audio and video), for ``relay`` per video frame (first
  packet in to the re-encoded frame out; audio pts are resampled and cannot be matched);
* loss seen by the subscribers (before repair: the counting subscribers send no NACKs);
* the SFU's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aioice.ice  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay  # noqa: E402
from aiortc.rtcdtlstransport import RTCDtlsTransport  # noqa: E402
from aiortc.rtp import is_rtcp  # noqa: E402

from bench.sfu_clients import Publisher, Subscriber, make_clip  # noqa: E402

# -- instrumentation inside the SFU process ---------------------------------------------------


class Probe:
    """Arrival stamps at aioice, RTP sends at the DTLS transport, latencies in between."""

    def __init__(self) -> None:
        self.arrival = 0.0  # arrival time of the datagram being processed
        self.measuring = False
        self.sent = 0
        self.latencies: list[float] = []
        self.cpu0 = 0.0
        self.t0 = 0.0

    def install(self, per_packet_latency: bool) -> None:
        probe = self
        stamps: dict[int, collections.deque[float]] = collections.defaultdict(collections.deque)
        data_received = aioice.ice.Connection.data_received
        recv = aioice.ice.Connection.recv
        send_rtp = RTCDtlsTransport._send_rtp

        def stamped_data_received(self: Any, data: bytes, component: int) -> None:
            stamps[id(self)].append(time.monotonic())
            data_received(self, data, component)

        async def stamped_recv(self: Any) -> bytes:
            data: bytes = await recv(self)
            queue = stamps[id(self)]
            if queue:
                probe.arrival = queue.popleft()
            return data

        async def counted_send_rtp(self: Any, data: bytes) -> None:
            await send_rtp(self, data)
            if probe.measuring and not is_rtcp(data):
                probe.sent += 1
                if per_packet_latency and probe.arrival:
                    probe.latencies.append(time.monotonic() - probe.arrival)

        aioice.ice.Connection.data_received = stamped_data_received  # type: ignore[method-assign]
        aioice.ice.Connection.recv = stamped_recv  # type: ignore[method-assign]
        RTCDtlsTransport._send_rtp = counted_send_rtp  # type: ignore[method-assign]

    def mark(self) -> None:
        self.sent = 0
        self.latencies = []
        self.cpu0 = time.process_time()
        self.t0 = time.monotonic()
        self.measuring = True

    def report(self) -> dict[str, Any]:
        self.measuring = False
        return {
            "cpu": time.process_time() - self.cpu0,
            "wall": time.monotonic() - self.t0,
            "sent": self.sent,
            "latencies": sorted(self.latencies),
            "rss_kib": rss_kib(),
            "sfu_drops": own_udp_drops(),
        }


def own_udp_drops() -> int:
    """Datagrams the kernel dropped on this process's own UDP sockets (full receive buffer)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    drops = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                drops += int(fields[-1])
    return drops


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


NO_ICE = RTCConfiguration(iceServers=[])


class ZastavaServer:
    def __init__(self, probe: Probe) -> None:
        from edge.sfu.room import Room

        self._room_type = Room
        self.rooms: dict[str, Any] = {}
        probe.install(per_packet_latency=True)

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


def serve(kind: str, conn: Connection, cpu: int, loop: str, profile: str | None) -> None:
    os.sched_setaffinity(0, {cpu})
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    if profile is None:
        asyncio.run(_serve(kind, conn))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.runcall(asyncio.run, _serve(kind, conn))
    profiler.dump_stats(f"{profile}.{kind}")


async def _serve(kind: str, conn: Connection) -> None:
    probe = Probe()
    server: Any = ZastavaServer(probe) if kind == "zastava" else RelayServer(probe)
    while True:
        op, args = await asyncio.to_thread(conn.recv)
        try:
            if op == "mark":
                result: Any = probe.mark()
            elif op == "report":
                result = probe.report()
                if kind == "zastava":
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
    """Per received SSRC: distinct sequence numbers and their extended range, in the window."""

    def __init__(self) -> None:
        self.measuring = False
        self.streams: dict[tuple[int, int], list[Any]] = {}  # (subscriber, ssrc) -> state

    def packet(self, subscriber: int, kind: str, packet: Any, now: float) -> None:
        if not self.measuring:
            return
        key = (subscriber, packet.ssrc)
        state = self.streams.get(key)
        seq = packet.sequence_number
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


async def generate(conn: Connection, args: argparse.Namespace) -> dict[str, Any]:
    signal = Signalling(conn)
    clip = make_clip(args.clip_seconds, args.fps, args.width, args.height, args.bitrate)
    loss = Loss()
    publishers: list[Publisher] = []
    subscribers: list[Subscriber] = []
    for r in range(args.rooms):
        room = f"room-{r}"
        names = [f"p{i}" for i in range(args.participants)]
        for name in names:
            await signal("join", room, name)
            publisher = Publisher(clip)
            answer = await signal("publish", room, name, (await publisher.offer()).sdp)
            await publisher.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            publishers.append(publisher)
        for name in names:
            index = len(subscribers)
            subscriber = Subscriber(
                decode=False, on_packet=lambda k, p, t, i=index: loss.packet(i, k, p, t)
            )
            offer = await signal("subscribe", room, name)
            answer = await subscriber.answer(RTCSessionDescription(offer, "offer"))
            await signal("answer", room, name, answer.sdp)
            subscribers.append(subscriber)
    await asyncio.sleep(args.warmup)
    connected = sum(s.pc.connectionState == "connected" for s in subscribers)
    received0 = sum(sum(s.received.packets.values()) for s in subscribers)
    gen_cpu0, t0 = time.process_time(), time.monotonic()
    await signal("mark")
    loss.measuring = True
    await asyncio.sleep(args.seconds)
    loss.measuring = False
    report = await signal("report")
    report["generator_drops"] = own_udp_drops()
    gen_cpu = (time.process_time() - gen_cpu0) / (time.monotonic() - t0)
    received = sum(sum(s.received.packets.values()) for s in subscribers) - received0
    await signal("stop")
    for client in [*publishers, *subscribers]:
        await client.close()
    expected, got = loss.totals()
    streams = args.rooms * args.participants * (args.participants - 1) * 2
    report.update(
        streams=streams,
        connected=connected,
        subscribers=len(subscribers),
        received=received,
        loss=1 - got / expected if expected else float("nan"),
        generator_load=gen_cpu,
    )
    return report


def udp_receive_buffer_errors() -> int:
    """Datagrams the kernel dropped host-wide because a socket's receive buffer was full."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    header, values = [pair for pair in zip(lines, lines[1:], strict=False) if pair[0][0] == "Udp:"][
        0
    ]
    return int(values[header.index("RcvbufErrors")])


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    drops = udp_receive_buffer_errors()
    load = os.getloadavg()[0]
    result = _run_one(kind, args)
    result["kernel_drops"] = udp_receive_buffer_errors() - drops
    result["load"] = load
    return result


def _run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    parent, child = mp.Pipe()
    process = mp.get_context("fork").Process(
        target=serve, args=(kind, child, args.sfu_cpu, args.loop, args.profile), daemon=True
    )
    process.start()
    try:
        return asyncio.run(generate(parent, args))
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def show(kind: str, r: dict[str, Any]) -> str:
    lat = r["latencies"]
    per_packet = r["cpu"] / r["sent"] * 1e6 if r["sent"] else float("nan")
    stream_seconds = r["streams"] * r["wall"]
    return (
        f"{kind:8s} streams {r['streams']:4d} ({r['connected']}/{r['subscribers']} subs up)  "
        f"SFU CPU {r['cpu'] / r['wall'] * 100:5.1f}%  sent {r['sent'] / r['wall']:8.0f} pkt/s  "
        f"{per_packet:7.1f} CPU-us/pkt  {r['cpu'] / stream_seconds * 1e3:7.3f} CPU-ms/stream-s  "
        f"latency p50/p95/p99 {percentile(lat, 0.5) * 1e3:.2f}/{percentile(lat, 0.95) * 1e3:.2f}/"
        f"{percentile(lat, 0.99) * 1e3:.2f} ms (n={len(lat)})  loss {r['loss'] * 100:.2f}%  "
        f"RSS {r['rss_kib'] / 1024:.0f} MiB  generator {r['generator_load'] * 100:.0f}%  "
        f"UDP drops SFU/generator/host {r['sfu_drops']}/{r['generator_drops']}/"
        f"{r['kernel_drops']}  host load {r['load']:.1f}"
        + (
            f"  history-hits {r['history_hits']} PLIs {r['keyframe_requests']}"
            if "history_hits" in r
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--kinds", default="zastava,relay")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sfu-cpu", type=int, default=0)
    parser.add_argument("--generator-cpu", type=int, default=1)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=300_000)
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--profile", help="cProfile the SFU process into PROFILE.<kind>")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.generator_cpu})
    make_clip(args.clip_seconds, args.fps, args.width, args.height, args.bitrate)  # before fork
    print(
        f"# {args.rooms} rooms x {args.participants} participants, VP8 {args.width}x{args.height}"
        f"@{args.fps} {args.bitrate // 1000} kbit/s + Opus; SFU on CPU {args.sfu_cpu} "
        f"({args.loop}), generator on CPU {args.generator_cpu}; warmup {args.warmup} s, "
        f"window {args.seconds} s",
        flush=True,
    )
    for _ in range(args.repeat):
        for kind in args.kinds.split(","):
            print(show(kind, run_one(kind, args)), flush=True)


if __name__ == "__main__":
    main()
