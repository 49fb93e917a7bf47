"""The bridge benchmark's figures (``bench/bridge.py``), sans-IO: what the viewers received
and one run's result in, numbers and text out.

Theory of operation. :class:`Meter` is fed every RTP packet a viewer counts (viewer, kind,
SSRC, sequence number, the publisher's stamp, arrival time) and keeps, for the window, the
sequence numbers seen per stream (loss = gaps in their extended range), each stamped
packet's end-to-end latency, and how many packets *sent* inside the window (by their
stamps) arrived, also after it. :func:`derived` turns one run's result (the plain dict
``bench/bridge.py`` builds and ``--json`` writes) into the compared figures; :func:`show`
prints a run, :func:`compare` the kinds side by side per call count (medians over repeats,
and bridge - local run by run).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

A, B = "plant-a", "plant-b"  # the bed's first two plants
KINDS = ("local", "bridge")

# -- what the viewers received (sans-IO) ------------------------------------------------------


class Meter:
    """Per received stream: sequence numbers seen in the window; every stamped packet's
    end-to-end latency in the window; and how many packets *sent* inside the window (by
    their stamps) arrived, counted while ``counting`` (a while after the window, too)."""

    def __init__(self) -> None:
        self.measuring = False
        self.counting = False
        self.window = (float("inf"), float("-inf"))
        self.streams: dict[tuple[int, int], list[Any]] = {}  # (viewer, ssrc) -> state
        self.latencies: dict[str, list[float]] = {"audio": [], "video": []}
        self.delivered = 0

    def start(self, now: float) -> None:
        self.window = (now, float("inf"))
        self.measuring = self.counting = True

    def stop(self, now: float) -> None:
        self.measuring = False
        self.window = (self.window[0], now)

    def packet(
        self, viewer: int, kind: str, ssrc: int, seq: int, sent: float | None, now: float
    ) -> None:
        """One RTP packet at viewer ``viewer`` (``bench.sfu_lean_clients.PacketHook``)."""
        if not self.counting:
            return
        if sent is not None and self.window[0] <= sent <= self.window[1]:
            self.delivered += 1
        if not self.measuring:
            return
        if sent is not None and 0 <= now - sent < 60 and kind in self.latencies:
            self.latencies[kind].append(now - sent)
        state = self.streams.get((viewer, ssrc))
        if state is None:
            self.streams[(viewer, ssrc)] = [seq, seq, {seq}]  # lowest, highest (extended), seen
            return
        highest = state[1]
        ext = highest + (((seq - highest + 0x8000) & 0xFFFF) - 0x8000)
        state[0], state[1] = min(state[0], ext), max(highest, ext)
        state[2].add(ext)

    def loss(self) -> tuple[int, int]:
        """(expected, received) over every stream: the extended ranges and what was seen."""
        expected = sum(s[1] - s[0] + 1 for s in self.streams.values())
        return expected, sum(len(s[2]) for s in self.streams.values())


@dataclass
class Run:
    kind: str
    calls: int
    result: dict[str, Any] = field(default_factory=dict)


# -- figures ----------------------------------------------------------------------------------


def derived(r: dict[str, Any]) -> dict[str, float]:
    """The figures compared between kinds, from one run's result."""
    wall, streams = r["wall"], max(1, r["streams"])
    sfus = [A, B] if r["kind"] == "bridge" else [A]
    out: dict[str, float] = {}
    for site in sfus:
        counts = r["sfu"][site]["counts"]
        rtp = counts.get("local_rtp", 0) + counts.get("bridge_rtp", 0)
        out[f"{site}_cpu"] = r["cpu"][site] / wall
        out[f"{site}_us_pkt"] = r["cpu"][site] / max(1, rtp) * 1e6
    out["sfu_ms_stream_s"] = sum(r["cpu"][s] for s in sfus) / (streams * wall) * 1e3
    out["coturn_cpu"] = r["cpu"]["coturn"] / wall
    relayed = sum(r["sfu"][s]["counts"].get("bridge_rtp", 0) for s in sfus)
    out["relayed_pkt_s"] = relayed / wall
    out["coturn_us_pkt"] = r["cpu"]["coturn"] / relayed * 1e6 if relayed else float("nan")
    out["coturn_ms_stream_s"] = r["cpu"]["coturn"] / (streams * wall) * 1e3
    out["total_ms_stream_s"] = out["sfu_ms_stream_s"] + (
        out["coturn_ms_stream_s"] if r["kind"] == "bridge" else 0.0
    )
    out["loss"] = 1 - r["received"] / r["expected"] if r["expected"] else float("nan")
    out["delivery"] = r["delivered"] / r["published"] if r["published"] else float("nan")
    for q in ("p50", "p95", "p99"):
        out[q] = float(r["e2e"][q])
    return out


def _stalls(stalls: dict[str, Any], waited: float, wall: float) -> str:
    gcs = stalls["gc"]
    return (
        f"waited for a CPU {waited / wall * 100:.1f}% of the window; GC pauses "
        f"{sum(g['ms'] for g in gcs.values()):.0f} ms in all, longest "
        f"{max(g['max'] for g in gcs.values()):.0f} ms, {gcs['2']['n']} full"
    )


def _ms(p: dict[str, Any]) -> str:
    return f"{p['p50']:.2f}/{p['p95']:.2f}/{p['p99']:.2f} ms (n={p['n']})"


def show(r: dict[str, Any]) -> str:
    d = derived(r)
    wall = r["wall"]
    sfus = [A, B] if r["kind"] == "bridge" else [A]
    lines = [
        f"{r['kind']:6s} calls {r['calls_up']}/{r['calls']} up, viewer streams {r['streams']} "
        f"({r['flowing']} flowing), set up in {r['setup']:.1f} s; host load "
        f"{r['load'][0]:.2f} -> {r['load'][1]:.2f}; this benchmark's processes used "
        f"{(sum(r['cpu'].values()) + r['generator']) / r['wall']:.2f} cores",
        f"  e2e latency {_ms(r['e2e'])}  audio {_ms(r['e2e_audio'])}  video {_ms(r['e2e_video'])}",
        f"  loss {d['loss'] * 100:.3f}% (sequence gaps: {r['expected'] - r['received']} of "
        f"{r['expected']})  delivery {d['delivery'] * 100:.3f}% ({r['delivered']} of "
        f"{r['published']} packets sent in the window)",
    ]
    for site in sfus:
        s = r["sfu"][site]
        counts, fwd = s["counts"], s["forwarding"]
        lines.append(
            f"  SFU {site}: CPU {d[f'{site}_cpu'] * 100:.1f}% (system "
            f"{r['sys'][site] / wall * 100:.1f}%), {d[f'{site}_us_pkt']:.1f} CPU-us/pkt sent; "
            f"RTP sent local/leg {counts.get('local_rtp', 0) / wall:.0f}/"
            f"{counts.get('bridge_rtp', 0) / wall:.0f} pkt/s, RTCP local/leg "
            f"{counts.get('local_rtcp', 0) / wall:.0f}/{counts.get('bridge_rtcp', 0) / wall:.0f}"
            f"; in-SFU to viewers {_ms(s['in_sfu']['local'])}, to the leg "
            f"{_ms(s['in_sfu']['bridge'])}; NACKs {fwd.get('nacks_to_publishers', 0)}, "
            f"resent {fwd.get('retransmitted_from_history', 0)}, PLIs "
            f"{fwd.get('keyframe_requests', 0)}, paused {fwd.get('slots_paused', 0)}; "
            f"leg retries {s['retries']}; UDP drops {r['drops'][site]}; "
            f"{_stalls(s['stalls'], r['waited'][site], wall)}"
        )
    lines.append(
        f"  SFU CPU per viewer stream-second {d['sfu_ms_stream_s']:.3f} ms"
        + (
            f"; coturn CPU {d['coturn_cpu'] * 100:.1f}% (system "
            f"{r['sys']['coturn'] / wall * 100:.1f}%), relayed {d['relayed_pkt_s']:.0f} RTP pkt/s, "
            f"{d['coturn_us_pkt']:.1f} CPU-us/relayed pkt, {d['coturn_ms_stream_s']:.3f} ms per "
            f"viewer stream-second, UDP drops {r['drops']['coturn']}, waited for a CPU "
            f"{r['waited']['coturn'] / wall * 100:.1f}%; all of it "
            f"{d['total_ms_stream_s']:.3f} ms per viewer stream-second; legs' ICE pairs "
            f"{','.join(r['pairs']) or 'none'}, grants {r['grants']}, messages {r['messages']}"
            if r["kind"] == "bridge"
            else ""
        )
    )
    lines.append(
        f"  clients (this process) CPU {r['generator'] / wall * 100:.1f}% (system "
        f"{r['generator_sys'] / wall * 100:.1f}%), UDP drops {r['drops']['clients']}; "
        f"{_stalls(r['generator_stalls'], r['waited']['clients'], wall)}; unread "
        "UDP bytes, max/mean KiB: "
        + ", ".join(
            f"{name} {most / 1024:.0f}/{mean / 1024:.0f}"
            for name, (most, mean) in r["backlog"].items()
            if name in sfus
            or name == "clients"
            or (len(sfus) == 2 and (name == "coturn" or name.endswith("(TURN)")))
        )
    )
    return "\n".join(lines)


def compare(runs: list[Run]) -> str:
    """Per call count: the kinds side by side (medians over repeats) and bridge - local."""
    lines = []
    for calls in sorted({r.calls for r in runs}):
        by_kind = {
            kind: [derived(r.result) for r in runs if r.calls == calls and r.kind == kind]
            for kind in KINDS
        }
        med = {
            kind: {k: statistics.median(d[k] for d in ds) for k in ds[0]}
            for kind, ds in by_kind.items()
            if ds
        }
        for kind, m in med.items():
            lines.append(
                f"{calls:3d} call(s) {kind:6s} (median of {len(by_kind[kind])}): e2e p50/p95/p99 "
                f"{m['p50']:.2f}/{m['p95']:.2f}/{m['p99']:.2f} ms, loss {m['loss'] * 100:.3f}%, "
                f"delivery {m['delivery'] * 100:.3f}%, CPU per viewer stream-second: SFUs "
                f"{m['sfu_ms_stream_s']:.3f} ms"
                + (
                    f" + coturn {m['coturn_ms_stream_s']:.3f} ms = {m['total_ms_stream_s']:.3f} "
                    f"ms; coturn {m['coturn_us_pkt']:.1f} us/relayed pkt, "
                    f"{m['coturn_cpu'] * 100:.1f}% of a core"
                    if kind == "bridge"
                    else ""
                )
            )
        if by_kind["local"] and by_kind["bridge"]:  # run by run, as interleaved
            pairs = zip(by_kind["local"], by_kind["bridge"], strict=False)
            lines.append(
                f"{calls:3d} call(s) bridge - local, run by run: p50/p95/p99 "
                + "; ".join(
                    f"{b['p50'] - lo['p50']:+.2f}/{b['p95'] - lo['p95']:+.2f}/"
                    f"{b['p99'] - lo['p99']:+.2f} ms"
                    for lo, b in pairs
                )
            )
        if "local" in med and "bridge" in med:
            lo, br = med["local"], med["bridge"]
            lines.append(
                f"{calls:3d} call(s) added by the leg: latency p50/p95/p99 "
                f"{br['p50'] - lo['p50']:+.2f}/{br['p95'] - lo['p95']:+.2f}/"
                f"{br['p99'] - lo['p99']:+.2f} ms; CPU per viewer stream-second "
                f"{br['total_ms_stream_s'] - lo['total_ms_stream_s']:+.3f} ms "
                f"({br['total_ms_stream_s'] / lo['total_ms_stream_s']:.2f}x the local call's)"
            )
    return "\n".join(lines)
