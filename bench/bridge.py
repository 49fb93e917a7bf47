"""Inter-site calls through a bridge leg (issue 8): added latency and CPU, N calls, one relay.

    .venv/bin/python bench/bridge.py [--calls 1,20] [--kinds local,bridge] [--repeat 1]
                                     [--warmup 4] [--seconds 10] [--connect-limit 120]
                                     [--loop asyncio|uvloop] [--generator-loop uvloop|asyncio]
                                     [--width 320 --height 240 --fps 15 --bitrate 300000]
                                     [--json PATH] [--profile PATH] [--run-id ID]

Needs root (network namespaces), iproute2 and coturn (``turnserver``), as ``zastava netbed``.

Theory of operation
-------------------
The benchmark builds an isolation test bed (``installer.netbed.up``: a namespace per plant,
the relay's and the core's; the plants reach only the relay; plant-a and plant-b are used)
and removes it when it ends, also on Ctrl-C or SIGTERM. In it, per run:

* **coturn** in the relay's namespace, configured as the relay configures it: a fresh shared
  secret, ``turnserver.conf`` from ``sync.turn.render`` listening on the relay's two
  plant-facing addresses, peers denied but the relay's own addresses and the two edges'
  (``EdgePeer``: what the relay takes from the edges' certificates);
* **one SFU process per plant**, forked and moved into the plant's namespace
  (``bench/bridge_plant.py``): ``LocalMedia`` (the plant's rooms) and ``Bridges`` (its legs),
  as an edge runs them, on asyncio (the edge's default; ``--loop``);
* **this process** (the driver) holds the clients and plays the relay's signalling part.
  The plant processes reach it over Unix socket pairs (``bench/bridge_rpc.py``; a socket pair
  is in no network namespace): a bridge message from one plant is handed to the other (in a
  deployment, a sealed envelope over the relay's signalling channel), and a leg's TURN grant
  is minted by ``sync.relay.signalling.TurnGrants`` from coturn's secret, exactly as the
  relay mints it (username ``<expiry>:<leg>.<site>``, the URL of the relay's address on that
  plant's link). The clients are the lean pre-encoded VP8 + Opus clients of the SFU
  benchmark (``bench/sfu_lean_clients.py``): each made inside its plant's namespace (the
  driver's thread enters it with ``netbed.inside`` while the client gathers its candidates,
  so its sockets are the plant's: checked on every SDP), talking to its own plant's SFU.

A *call* is a 1:1 call: two people, each publishing audio + video and viewing the other's.
Kinds, interleaved in one session (``--kinds``, ``--repeat``):

* ``local``: both people at plant A, one room at A's SFU, no leg (the comparison);
* ``bridge``: one at plant A, one at plant B; a room at each SFU joined by a bridge leg
  (two relay-only connections through coturn, ``docs/bridge.md``); each plant's viewer
  subscribes once the other plant's two publications have arrived over the leg.

The publishers send nothing until every leg and client is connected; then a ``--warmup``,
then a ``--seconds`` window. Figures (printed per run, then side by side per call count;
computed and printed by ``bench/bridge_figures.py``):

* **e2e latency** p50/p95/p99: each publisher stamps its send time into every RTP payload
  (the SFUs rewrite headers, not payloads), the viewer in this process reads it on receipt
  (one ``CLOCK_MONOTONIC`` for every process). For ``bridge`` that is publisher → SFU A →
  coturn → SFU B → viewer; for ``local`` publisher → SFU A → viewer. The **added latency**
  of the leg is the difference between the two kinds, run by run and of the medians;
* **in-SFU** latency of each SFU (datagram arrival at aioice → forwarded packet handed to
  the socket), separately for packets sent over the leg and to local viewers;
* **loss**: per received SSRC at the viewers, 1 - distinct sequence numbers / their extended
  range in the window (gaps after the SFUs' NACK repair on the leg; the viewers send no
  NACK); and **delivery**: of the RTP packets the publishers sent inside the window, the
  share that reached a viewer (each is meant for exactly one viewer in a 1:1 call; counted
  until 1.5 s after the window), which also sees a stream that stopped altogether;
* **CPU** (user + system of all threads, ``/proc/<pid>/stat``) of each SFU process, coturn
  and the driver (the clients): per cent of a core; per forwarded RTP packet (the packets
  the SFU sent, counted at ``RTCDtlsTransport._send_rtp``); per viewer stream-second (one
  viewer receiving one track for a second: 4 per call); coturn per relayed RTP packet (the
  packets both SFUs sent over their legs; each crosses coturn once: in at one allocation's
  client side, out of its relayed address, in at the other allocation's, out to its client);
* the leg's set-up (grants, retries, the nominated ICE pairs, which must all be
  relay/relay), the SFUs' forwarding counters (NACKs, retransmissions, keyframe requests,
  slots paused), UDP receive-buffer drops per process and the bytes left unread in each
  process's UDP receive queues (sampled every 0.5 s; for the SFUs also those of the TURN
  sockets alone): a queue there is latency no in-process probe sees;
* the machine, since it is shared: the host's load average at the start and end of the
  window, the cores this benchmark's processes used, and per process the time it was
  runnable but **waited for a CPU**
  (``/proc/<pid>/task/*/schedstat``) and its garbage-collector pauses. A run whose
  processes waited for a CPU a large part of the window measured the neighbours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import gc
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc import RTCSessionDescription  # noqa: E402

from bench.backlog import socket_inodes, udp_rows  # noqa: E402
from bench.bridge_figures import KINDS, A, B, Meter, Run, compare, show  # noqa: E402
from bench.bridge_plant import Stalls, percentiles, serve  # noqa: E402
from bench.bridge_rpc import Channel, Handler  # noqa: E402
from bench.lean_rtp import PacketizedClip, packetize  # noqa: E402
from bench.sfu_clients import make_clip  # noqa: E402
from bench.sfu_lean_clients import LeanPublisher, LeanSubscriber  # noqa: E402
from installer import netbed  # noqa: E402
from pki.keyfile import write_private  # noqa: E402
from sync.relay.legs import Granted, GrantKind  # noqa: E402
from sync.relay.signalling import TurnGrants  # noqa: E402
from sync.turn import EdgePeer, TurnConfig, load_secret, new_secret, render, write_secret  # noqa: E402

STREAMS_PER_CALL = 4  # two viewers, each receiving the other's audio and video


def leg_id(room: str) -> str:
    """The leg both plants name for one call's room (the relay's ``leg``: 32 hex digits)."""
    return hashlib.sha256(f"leg {room}".encode()).hexdigest()[:32]


def call_ref(room: str) -> str:
    """The opaque call reference the relay sees (a hash)."""
    return hashlib.sha256(f"call {room}".encode()).hexdigest()


def candidate_addresses(sdp: str) -> set[tuple[str, str]]:
    """(address, type) of every ICE candidate in an SDP."""
    found = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) >= 8 and parts[6] == "typ":
                found.add((parts[4], parts[7]))
    return found


def check_in_plant(sdp: str, address: str, who: str) -> None:
    """A client's SDP must offer host candidates on its plant's address only."""
    found = candidate_addresses(sdp)
    if not found or found != {(address, "host")}:
        raise RuntimeError(f"{who}: candidates {sorted(found)}, expected only {address} (host)")


def parse_calls(text: str) -> list[int]:
    try:
        calls = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--calls {text!r}: numbers separated by commas") from None
    if not calls or any(not 1 <= n <= 100 for n in calls):
        raise argparse.ArgumentTypeError(
            f"--calls {text!r}: 1 to 100 each (coturn's quota: 4 allocations a call, 400 in all)"
        )
    return calls


def parse_kinds(text: str) -> list[str]:
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"--kinds {text!r}: one or more of {', '.join(KINDS)}")
    return kinds


# -- processes: CPU, drops ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user + system, system) seconds of a process with all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[12]) / tick


def sched_seconds(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process, all threads
    (``/proc/<pid>/task/*/schedstat``): the wait is what other processes took from it."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            on, waiting, _ = (task / "schedstat").read_text().split()
            run, wait = run + int(on), wait + int(waiting)
    return run / 1e9, wait / 1e9


def own_rows(inodes: set[str], ns_pid: int) -> list[list[str]]:
    """The UDP socket table rows of these sockets, read in ``ns_pid``'s network namespace."""
    return [row for row in udp_rows(ns_pid) if row[9] in inodes]


def udp_drops(owner: int, ns_pid: int) -> int:
    """Datagrams dropped on ``owner``'s UDP sockets because their receive buffer was full."""
    return sum(int(row[-1]) for row in own_rows(socket_inodes(owner), ns_pid))


def udp_backlog(inodes: set[str], ns_pid: int) -> tuple[int, int]:
    """Bytes waiting unread in these UDP sockets' receive queues: (in the sockets connected
    to the TURN port, the bridge connections' allocations; in the others)."""
    turn = other = 0
    for row in own_rows(inodes, ns_pid):
        queued = int(row[4].split(":")[1], 16)
        if row[2].endswith(f":{netbed.TURN_PORT:04X}"):
            turn += queued
        else:
            other += queued
    return turn, other


# -- coturn as the relay runs it --------------------------------------------------------------


class Coturn:
    """coturn in the relay's namespace, with a fresh secret and the relay's configuration."""

    def __init__(self, bed: netbed.Bed, directory: Path) -> None:
        self.bed = bed
        self.config = TurnConfig(
            realm=f"{netbed.RELAY_SITE}.zastava",
            listen=(bed.relay_address(A), bed.relay_address(B)),
            port=netbed.TURN_PORT,
            secret_file=directory / "turn-secret",
            conf_file=directory / "turnserver.conf",
            state_dir=directory / "turn",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        c = self.config
        if c.state_dir.exists():
            shutil.rmtree(c.state_dir)
        c.state_dir.mkdir(mode=0o700)
        write_secret(c.secret_file, new_secret())
        peers = [EdgePeer(p, (self.bed.address(p),)) for p in (A, B)]
        text = render(c, secret=load_secret(c.secret_file), peers=peers)
        write_private(c.conf_file, text.encode())
        exe = shutil.which("turnserver") or "turnserver"
        ns = self.bed.ns(netbed.RELAY)
        # ip netns exec execs turnserver: the child's pid is coturn's
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns, exe, "-c", str(c.conf_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not all(netbed.tcp_listening(ns, a, c.port) for a in c.listen):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start:\n{self.log()[-2000:]}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.config.log_file.read_text(errors="replace")
        return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the relay's signalling part: grants and message passing ---------------------------------


class Relay:
    """What the relay does for a leg, here in the driver: it mints each side's TURN grant
    with the relay's own ``TurnGrants`` and passes bridge messages between the plants."""

    def __init__(self, bed: netbed.Bed, config: TurnConfig) -> None:
        self.bed = bed
        self.grants = TurnGrants(config)
        self.channels: dict[str, Channel] = {}
        self.asked: dict[str, set[str]] = {}  # leg -> sites that asked
        self.granted = 0
        self.passed = 0

    async def grant(self, origin: str, site: str, room: str, answering: bool) -> dict[str, Any]:
        leg = leg_id(room)
        asked = self.asked.setdefault(leg, set())
        if origin in asked:
            kind = GrantKind.RENEWED
        else:
            kind = GrantKind.JOINED if asked else GrantKind.OPENED
        asked.add(origin)
        g = self.grants.grant(
            Granted(origin, site, leg, call_ref(room), kind, dt.datetime.now(dt.UTC)),
            self.bed.relay_address(origin),  # where that plant reaches the relay
        )
        self.granted += 1
        return {"urls": list(g.urls), "username": g.username, "credential": g.credential}

    async def relay(self, origin: str, site: str, message: dict[str, Any]) -> None:
        self.passed += 1
        await self.channels[site].call("receive", origin, message, limit=30)


# -- one run ------------------------------------------------------------------------------------


@dataclass
class PlantProcess:
    site: str
    process: Any  # multiprocessing.Process
    sock: socket.socket

    @property
    def pid(self) -> int:
        return int(self.process.pid)


def start_plants(bed: netbed.Bed, loop: str, profile: str | None) -> dict[str, PlantProcess]:
    pairs = {site: socket.socketpair() for site in (A, B)}
    ours = [pair[0] for pair in pairs.values()]
    plants = {}
    context = mp.get_context("fork")
    for site, (mine, theirs) in pairs.items():
        peer = B if site == A else A
        process = context.Process(
            target=_plant_main,
            args=(site, peer, bed.ns(site), theirs, loop, profile, ours),
            daemon=True,
            name=f"sfu {site}",
        )
        process.start()
        theirs.close()
        plants[site] = PlantProcess(site, process, mine)
    return plants


def _plant_main(
    site: str,
    peer: str,
    ns: str,
    sock: socket.socket,
    loop: str,
    profile: str | None,
    others: list[socket.socket],
) -> None:
    for other in others:  # the driver's ends: only the driver may hold them
        other.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops it (Ctrl-C included)
    serve(site, peer, ns, sock, loop, profile)


def stop_plants(plants: dict[str, PlantProcess]) -> None:
    for p in plants.values():
        p.process.join(40)
        if p.process.is_alive():
            p.process.kill()
            p.process.join(5)
        p.sock.close()


@contextlib.contextmanager
def session_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="zastava-bridge-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_one(kind: str, calls: int, args: argparse.Namespace, bed: netbed.Bed, base: Path) -> Run:
    coturn = Coturn(bed, base)
    coturn.start()
    profile = None if args.profile is None else f"{args.profile}.{kind}-{calls}"
    plants = start_plants(bed, args.loop, profile)
    try:
        result = asyncio.run(drive(kind, calls, args, bed, plants, coturn))
    finally:
        stop_plants(plants)
        coturn.stop()
    return Run(kind, calls, result)


async def drive(
    kind: str,
    calls: int,
    args: argparse.Namespace,
    bed: netbed.Bed,
    plants: dict[str, PlantProcess],
    coturn: Coturn,
) -> dict[str, Any]:
    relay = Relay(bed, coturn.config)
    handlers: dict[str, Handler] = {"relay": relay.relay, "grant": relay.grant}
    channels = {site: await Channel.over(p.sock, handlers) for site, p in plants.items()}
    relay.channels = channels
    try:
        return await _drive(kind, calls, args, bed, plants, coturn, relay, channels)
    finally:
        for channel in channels.values():
            with contextlib.suppress(Exception):
                await channel.call("stop", limit=10)
        await asyncio.sleep(0)
        for channel in channels.values():
            await channel.close()


async def _drive(
    kind: str,
    calls: int,
    args: argparse.Namespace,
    bed: netbed.Bed,
    plants: dict[str, PlantProcess],
    coturn: Coturn,
    relay: Relay,
    channels: dict[str, Channel],
) -> dict[str, Any]:
    packets: PacketizedClip = args.packets
    gate = asyncio.Event()
    meter = Meter()
    publishers: list[LeanPublisher] = []
    viewers: list[LeanSubscriber] = []
    rooms = [f"call-{i}" for i in range(calls)]
    people = {room: ((A, f"a{i}"), (B if kind == "bridge" else A, f"b{i}")) for i, room in
              enumerate(rooms)}  # fmt: skip

    async def publish(site: str, room: str, login: str) -> None:
        channel = channels[site]
        await channel.call("join", room, login)
        publisher = LeanPublisher(packets, gate, connect_limit=args.connect_limit + 30)
        publishers.append(publisher)
        with netbed.inside(bed.ns(site)):  # its sockets: the plant's
            offer = await publisher.offer()
        check_in_plant(offer.sdp, bed.address(site), f"publisher {login}")
        answer = await channel.call("publish", room, login, offer.sdp, limit=60)
        with netbed.inside(bed.ns(site)):
            await publisher.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def view(site: str, room: str, login: str) -> bool:
        channel = channels[site]
        offer = await channel.call("subscribe", room, login, limit=60)
        if offer["sdp"] is None:
            return False
        index = len(viewers)
        viewer = LeanSubscriber(
            functools.partial(meter.packet, index), connect_limit=args.connect_limit + 30
        )
        viewers.append(viewer)
        with netbed.inside(bed.ns(site)):
            answer = await viewer.answer(RTCSessionDescription(offer["sdp"], "offer"))
        check_in_plant(answer.sdp, bed.address(site), f"viewer {login}")
        await channel.call("answer", room, login, answer.sdp, limit=60)
        return True

    setup0 = time.monotonic()
    for room in rooms:
        for site, login in people[room]:
            await publish(site, room, login)
        if kind == "bridge":
            for site in (A, B):
                await channels[site].call("open", room)

    # the legs: every room's leg connected at both ends, the other plant's two
    # publications arrived at each
    up: list[str] = list(rooms)
    statuses: dict[str, Any] = {}
    if kind == "bridge":

        async def legs() -> list[str]:
            for site in (A, B):
                statuses[site] = await channels[site].call("status", limit=60)
            return [
                room
                for room in rooms
                if all(
                    statuses[s]["rooms"].get(room, {}).get("leg") == "connected"
                    and statuses[s]["rooms"][room]["remote"] == 2
                    for s in (A, B)
                )
            ]

        deadline = time.monotonic() + args.connect_limit
        while len(up := await legs()) < calls and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
    legs_at = time.monotonic() - setup0

    viewing = 0
    for room in up:
        for site, login in people[room]:
            viewing += await view(site, room, login)

    def connected() -> bool:
        return all(p.pc.connectionState == "connected" for p in publishers) and all(
            v.pc.connectionState == "connected" for v in viewers
        )

    deadline = time.monotonic() + args.connect_limit
    while not connected() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    setup = time.monotonic() - setup0
    gc.collect()
    gc.freeze()  # the clients' objects, made once, out of the collector's way (bench/sfu.py)
    gate.set()
    await asyncio.sleep(args.warmup)

    pids = {A: plants[A].pid, B: plants[B].pid, "coturn": coturn.pid}
    stalls = Stalls()
    stalls.install()
    load0 = os.getloadavg()
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    for channel in channels.values():
        await channel.call("mark", limit=30)
    stalls.mark()
    sched0 = {name: sched_seconds(pid) for name, pid in {**pids, "clients": os.getpid()}.items()}
    gen0 = (time.process_time(), os.times().system)
    t0 = time.monotonic()
    published0 = sum(p.packets_sent for p in publishers)
    meter.start(t0)
    # unread bytes in each process's UDP receive queues, every 0.5 s: a queue there is
    # latency that no in-process probe sees (the process was not running to read it)
    watched = {
        A: (socket_inodes(pids[A]), [pids[A]]),
        B: (socket_inodes(pids[B]), [pids[B]]),
        "coturn": (socket_inodes(pids["coturn"]), [pids["coturn"]]),
        "clients": (socket_inodes(os.getpid()), [pids[A], pids[B]]),
    }
    backlog: dict[str, list[int]] = {name: [] for name in watched}
    backlog.update({f"{site} (TURN)": [] for site in (A, B)})
    end = t0 + args.seconds
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(0.5, left))
        for name, (inodes, namespaces) in watched.items():
            queued = [udp_backlog(inodes, ns) for ns in namespaces]
            backlog[name].append(sum(turn + other for turn, other in queued))
            if name in (A, B):
                backlog[f"{name} (TURN)"].append(sum(turn for turn, _ in queued))
    t1 = time.monotonic()
    meter.stop(t1)
    published = sum(p.packets_sent for p in publishers) - published0
    gen1 = (time.process_time(), os.times().system)
    cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    sched1 = {name: sched_seconds(pid) for name, pid in {**pids, "clients": os.getpid()}.items()}
    load1 = os.getloadavg()
    generator_stalls = stalls.report()
    stalls.close()
    reports = {site: await channel.call("report", limit=30) for site, channel in channels.items()}
    await asyncio.sleep(1.5)  # the window's last packets on their way
    meter.counting = False
    drops = {
        A: udp_drops(pids[A], pids[A]),
        B: udp_drops(pids[B], pids[B]),
        "coturn": udp_drops(pids["coturn"], pids["coturn"]),
        "clients": udp_drops(os.getpid(), pids[A]) + udp_drops(os.getpid(), pids[B]),
    }
    if kind == "bridge":
        for site in (A, B):
            statuses[site] = await channels[site].call("status", limit=30)
    for p in publishers:
        p.stop_media()
    for p in publishers:
        await p.close()
    for v in viewers:
        await v.close()
    gc.unfreeze()

    wall = t1 - t0
    expected, received = meter.loss()
    return {
        "kind": kind,
        "calls": calls,
        "calls_up": len(up),
        "viewers": viewing,
        "streams": STREAMS_PER_CALL * len(up),
        "flowing": len(meter.streams),
        "wall": wall,
        "setup": setup,
        "legs_at": legs_at,
        "load": (load0[0], load1[0]),
        "cpu": {name: cpu1[name][0] - cpu0[name][0] for name in pids},
        "sys": {name: cpu1[name][1] - cpu0[name][1] for name in pids},
        "waited": {name: sched1[name][1] - sched0[name][1] for name in sched0},
        "generator_stalls": generator_stalls,
        "generator": gen1[0] - gen0[0],
        "generator_sys": gen1[1] - gen0[1],
        "sfu": reports,
        "published": published,
        "delivered": meter.delivered,
        "expected": expected,
        "received": received,
        "e2e": percentiles(meter.latencies["audio"] + meter.latencies["video"]),
        "e2e_audio": percentiles(meter.latencies["audio"]),
        "e2e_video": percentiles(meter.latencies["video"]),
        "drops": drops,
        "backlog": {k: (max(v, default=0), sum(v) / max(1, len(v))) for k, v in backlog.items()},
        "pairs": sorted({p for s in statuses.values() for p in s["pairs"]}),
        "grants": relay.granted,
        "messages": relay.passed,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/bridge.py",
        description="Inter-site calls through a bridge leg (issue 8), in the isolation test "
        "bed: each plant's SFU in its namespace, coturn in the relay's. Compares a call "
        "through the leg with the same call inside one plant, and runs N concurrent inter-"
        "site calls through the one relay. Needs root and coturn. The bed is removed at the "
        "end, on Ctrl-C too.",
        epilog="Figures: e2e latency from the publisher's send time to the viewer (stamped in "
        "the payload), loss by sequence gaps and by delivery of the window's packets, CPU of "
        "each SFU process, coturn and the clients. See the module docstring and "
        "docs/benchmarks.md.",
    )
    p.add_argument(
        "--calls",
        type=parse_calls,
        default=[1],
        help="concurrent 1:1 calls per run, e.g. 1,20 (each a run of its own; default 1)",
    )
    p.add_argument(
        "--kinds",
        type=parse_kinds,
        default=list(KINDS),
        help="local (both people at plant A: the comparison) and/or bridge (A and B, one "
        "leg per call through coturn); interleaved (default local,bridge)",
    )
    p.add_argument("--repeat", type=int, default=1, help="rounds of every calls x kind")
    p.add_argument("--warmup", type=float, default=4.0, help="seconds of media before the window")
    p.add_argument("--seconds", type=float, default=10.0, help="the measured window")
    p.add_argument(
        "--connect-limit",
        type=float,
        default=120.0,
        help="wait at most this long for the legs, and again for the clients, to connect",
    )
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the SFU processes' event loop (the edge's default: asyncio)",
    )
    p.add_argument("--generator-loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--bitrate", type=int, default=300_000, help="the clip's VP8 bitrate")
    p.add_argument("--json", type=Path, help="also write every run's figures to this file")
    p.add_argument(
        "--profile",
        help="run each SFU process under cProfile (slower: for where the CPU goes, not for "
        "the figures); statistics in PROFILE.<kind>-<calls>.<site>, the last run's",
    )
    p.add_argument("--run-id", help="the test bed's run id (default: random)")
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.repeat < 1 or args.seconds <= 0 or args.warmup < 0:
        raise SystemExit("bench/bridge.py: --repeat >= 1, --seconds > 0, --warmup >= 0")
    try:
        netbed.require_tools()
    except ValueError as e:
        raise SystemExit(f"bench/bridge.py: {e}") from None
    if args.generator_loop == "uvloop":
        import uvloop

        uvloop.install()
    clip = make_clip(4.0, args.fps, args.width, args.height, args.bitrate)
    args.packets = packetize(clip)  # before the plants fork: they never need it
    signal.signal(signal.SIGTERM, _interrupt)
    bed = netbed.Bed(args.run_id) if args.run_id else netbed.Bed.new()
    runs: list[Run] = []
    print(
        f"# bridge benchmark: calls {args.calls}, kinds {','.join(args.kinds)}, repeat "
        f"{args.repeat}; VP8 {args.width}x{args.height}@{args.fps} {args.bitrate // 1000} "
        f"kbit/s + Opus per person; SFUs on {args.loop}; warmup {args.warmup} s, window "
        f"{args.seconds} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    try:
        netbed.up(bed)
        with session_dir() as base:
            for _ in range(args.repeat):
                for calls in args.calls:
                    for kind in args.kinds:
                        run = run_one(kind, calls, args, bed, base)
                        runs.append(run)
                        print(show(run.result), flush=True)
    except KeyboardInterrupt:
        print("# interrupted", file=sys.stderr)
        return 130
    finally:
        netbed.down(bed.run_id)
        if runs:
            print(compare(runs), flush=True)
        if args.json is not None and runs:
            args.json.write_text(json.dumps([r.result for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
