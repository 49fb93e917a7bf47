"""One plant's SFU for the bridge benchmark: a process in that plant's network namespace.

Theory of operation. :func:`serve` is the body of a process forked by ``bench/bridge.py``:
it moves itself into the plant's network namespace (``setns(2)`` before any socket exists,
so every socket it makes is the plant's), then runs what an edge runs for calls: one
:class:`~edge.calls.local_media.LocalMedia` (the plant's SFU rooms) and one
:class:`~edge.calls.bridge.Bridges` (its legs to the other plant), fed by each other as in
the edge. The benchmark's driver reaches it over a Unix socket pair
(:class:`bench.bridge_rpc.Channel`):

* the driver calls ``join``, ``publish``, ``subscribe``, ``answer`` for its clients (which
  live in the driver, in this plant's namespace), ``open`` for a leg, ``receive`` for a
  bridge message from the other plant, ``status``, ``mark``, ``report``, ``stop``;
* this process calls the driver for its :class:`~edge.calls.bridge.BridgeTransport`:
  ``relay`` (a message to the other plant; the relay's signalling channel carries these as
  sealed envelopes in a deployment) and ``grant`` (a TURN credential, minted by the driver
  from coturn's secret as the relay does: ``sync.relay.signalling.TurnGrants``).

Instrumentation (:class:`Probe`, installed before any connection exists): every RTP and
RTCP packet the SFU sends is counted at ``RTCDtlsTransport._send_rtp``, split into the
bridge connections' and the local clients' (by DTLS transport, collected at ``mark``), and
each forwarded RTP packet's time in this process (the datagram's arrival at aioice to the
hand-off of the forwarded packet, as ``bench/sfu.py`` measures it) is kept per split.
"""

from __future__ import annotations

import asyncio
import collections
import cProfile
import ctypes
import logging
import os
import socket
import sys
import time
from dataclasses import fields
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import is_rtcp

from bench.arrivals import Stalls, stamp_arrivals
from bench.bridge_rpc import Channel
from edge.calls.bridge import BridgeConfig, Bridges, LegState, LegStatus
from edge.calls.local_media import LocalMedia
from edge.calls.media import MediaEvent, RemotePublished, RemoteUnpublished, Source

_CLONE_NEWNET = 0x40000000


def enter_namespace(ns: str) -> None:
    """This (single-threaded) process into network namespace ``ns`` for good."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{ns}", "rb") as there:
        if libc.setns(there.fileno(), _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {ns}: {os.strerror(err)}")


def percentiles(values: list[float]) -> dict[str, float | int]:
    """p50/p95/p99 in milliseconds and the count (NaN-free: empty gives -1)."""
    values = sorted(values)
    if not values:
        return {"p50": -1.0, "p95": -1.0, "p99": -1.0, "n": 0}

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1e3

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "n": len(values)}


class Probe:
    """RTP/RTCP sends counted per split (bridge or local), in-SFU time of forwarded RTP."""

    def __init__(self) -> None:
        self.bridge: set[int] = set()  # id() of the bridge connections' DTLS transports
        self.measuring = False
        self.arrival = 0.0
        self.counts: collections.Counter[str] = collections.Counter()
        self.latencies: dict[str, list[float]] = {"bridge": [], "local": []}

    def install(self) -> None:
        probe = self
        send_rtp = RTCDtlsTransport._send_rtp

        def arrived(t: float) -> None:
            probe.arrival = t

        async def _send_rtp(self: Any, data: bytes) -> None:  # same parameters (edge.sfu.hooks)
            await send_rtp(self, data)
            if probe.measuring:
                split = "bridge" if id(self) in probe.bridge else "local"
                if is_rtcp(data):
                    probe.counts[f"{split}_rtcp"] += 1
                else:
                    probe.counts[f"{split}_rtp"] += 1
                    if probe.arrival:
                        probe.latencies[split].append(time.monotonic() - probe.arrival)

        stamp_arrivals(arrived)
        RTCDtlsTransport._send_rtp = _send_rtp  # type: ignore[method-assign]

    def mark(self, bridge: set[int]) -> None:
        self.bridge = bridge
        self.counts.clear()
        self.latencies = {"bridge": [], "local": []}
        self.measuring = True

    def report(self) -> dict[str, Any]:
        self.measuring = False
        return {
            "counts": dict(self.counts),
            "in_sfu": {split: percentiles(v) for split, v in self.latencies.items()},
        }


class Plant:
    """The plant's SFU rooms and bridge legs, driven over the channel."""

    def __init__(self, site: str, peer: str, probe: Probe, stalls: Stalls) -> None:
        self.site, self.peer, self.probe, self.stalls = site, peer, probe, stalls
        self.channel: Channel | None = None
        self.remote: collections.Counter[str] = collections.Counter()  # room -> live remote
        self.retries = 0
        self.reported = False  # after the report, the tear-down's retries are not news
        self.media = LocalMedia(self._event)
        self.bridges = Bridges(
            self.media, self, site=site, config=BridgeConfig(), on_status=self._status
        )
        self.stopped = asyncio.Event()
        self._stats0: dict[str, int] = {}

    # the BridgeTransport the legs use: both through the driver (the relay's part)

    async def send(self, site: str, message: dict[str, Any]) -> None:
        assert self.channel is not None
        await self.channel.call("relay", self.site, site, message, limit=30)

    async def grant(self, site: str, room: str, *, answering: bool = False) -> dict[str, Any]:
        assert self.channel is not None
        grant: dict[str, Any] = await self.channel.call(
            "grant", self.site, site, room, answering, limit=30
        )
        return grant

    async def _event(self, event: MediaEvent) -> None:
        if isinstance(event, RemotePublished):
            self.remote[event.room] += 1
        elif isinstance(event, RemoteUnpublished):
            self.remote[event.room] -= 1
        await self.bridges.on_media(event)

    def _status(self, status: LegStatus) -> None:
        if status.state is LegState.RETRYING and not self.reported:
            self.retries += 1
            print(f"# {self.site}: leg {status.room}: {status.reason}", file=sys.stderr)

    # what the driver calls

    def handlers(self) -> dict[str, Any]:
        return {
            "join": self.join,
            "publish": self.publish,
            "subscribe": self.subscribe,
            "answer": self.answer,
            "open": self.open,
            "receive": self.receive,
            "status": self.status,
            "mark": self.mark,
            "report": self.report,
            "stop": self.stop,
        }

    async def join(self, room: str, login: str) -> None:
        await self.media.join(room, login)

    async def publish(self, room: str, login: str, sdp: str) -> str:
        return await self.media.publish(room, login, Source.CAMERA, sdp)

    async def subscribe(self, room: str, login: str) -> dict[str, Any]:
        offer = await self.media.subscribe(room, login)
        return {"sdp": offer.sdp, "slots": len(offer.slots)}

    async def answer(self, room: str, login: str, sdp: str) -> int:
        return len(await self.media.answer(room, login, sdp))

    async def open(self, room: str) -> None:
        await self.bridges.open(room, self.peer)

    async def receive(self, origin: str, message: dict[str, Any]) -> None:
        await self.bridges.receive(origin, message)

    def _bridge_pcs(self) -> list[tuple[str, str, Any]]:
        return [
            (room, direction, pc)
            for room in self.media.rooms()
            for direction, pc in self.media.bridge_peer_connections(room, self.peer).items()
        ]

    async def status(self) -> dict[str, Any]:
        """Per room: the leg's state and the live remote publications; and whether every
        bridge connection's nominated ICE pair is relay/relay (C3: through coturn only)."""
        rooms = {}
        for room in self.media.rooms():
            leg = self.bridges.leg(room, self.peer)
            rooms[room] = {
                "leg": None if leg is None else leg.state.value,
                "remote": self.remote[room],
            }
        pairs = set()
        for _, _, pc in self._bridge_pcs():
            for transceiver in pc.getTransceivers()[:1]:
                connection = transceiver.receiver.transport.transport._connection
                for pair in connection._nominated.values():
                    pairs.add(f"{pair.local_candidate.type}/{pair.remote_candidate.type}")
        return {"rooms": rooms, "pairs": sorted(pairs), "retries": self.retries}

    def _forwarding(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for room in self.media.rooms().values():
            stats = room.stats
            for f in fields(stats):
                total[f.name] += int(getattr(stats, f.name))
        return dict(total)

    async def mark(self) -> None:
        bridge = set()
        for _, _, pc in self._bridge_pcs():
            for transceiver in pc.getTransceivers():
                bridge.add(id(transceiver.sender.transport))
        self._stats0 = self._forwarding()
        self.probe.mark(bridge)
        self.stalls.mark()

    async def report(self) -> dict[str, Any]:
        result = self.probe.report()
        now = self._forwarding()
        result["forwarding"] = {k: v - self._stats0.get(k, 0) for k, v in now.items()}
        result["retries"] = self.retries
        result["stalls"] = self.stalls.report()
        self.reported = True
        return result

    async def stop(self) -> None:
        self.stopped.set()

    async def close(self) -> None:
        await self.bridges.close_all()
        await self.media.close()


async def _serve(site: str, peer: str, sock: socket.socket) -> None:
    probe = Probe()
    probe.install()
    stalls = Stalls()
    stalls.install()
    plant = Plant(site, peer, probe, stalls)
    channel = await Channel.over(sock, plant.handlers())
    plant.channel = channel
    stop = asyncio.ensure_future(plant.stopped.wait())
    gone = asyncio.ensure_future(channel.closed.wait())
    await asyncio.wait([stop, gone], return_when=asyncio.FIRST_COMPLETED)
    try:
        await asyncio.wait_for(plant.close(), 30)
    finally:
        stalls.close()
        await channel.close()


def serve(
    site: str, peer: str, ns: str, sock: socket.socket, loop: str, profile: str | None = None
) -> None:
    """The process: into the namespace, then the plant until the driver says stop; with
    ``profile``, under cProfile, its statistics written to ``<profile>.<site>``."""
    enter_namespace(ns)
    logging.basicConfig(level=logging.ERROR, format=f"{site} %(name)s: %(message)s")
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    else:  # the driver's policy (uvloop) is inherited through the fork
        asyncio.set_event_loop_policy(None)
    if profile is None:
        asyncio.run(_serve(site, peer, sock))
        return
    profiler = cProfile.Profile()
    try:
        profiler.runcall(asyncio.run, _serve(site, peer, sock))
    finally:
        profiler.dump_stats(f"{profile}.{site}")


__all__ = ["Plant", "Probe", "Stalls", "enter_namespace", "percentiles", "serve"]
