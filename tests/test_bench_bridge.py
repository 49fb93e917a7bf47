"""The bridge benchmark's pieces (``bench/bridge.py``, ``bench/bridge_figures.py``,
``bench/bridge_rpc.py``) without a
test bed: its arguments, what its viewers count (loss, latency, delivery), the TURN grants
it mints (as the relay mints them: coturn's scheme, the URL of the plant's link), the
framed calls between its processes, and its figures from a run's result. The benchmark
itself needs root and coturn and is run by hand (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from bench import bridge, bridge_figures
from bench.bridge_rpc import MAX_FRAME, Channel, Decoder, RemoteError, encode
from installer.netbed import Bed
from sync import turn


def test_arguments_are_checked_with_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    args = bridge.parser().parse_args(["--calls", "1,20", "--kinds", "bridge"])
    assert args.calls == [1, 20] and args.kinds == ["bridge"]
    assert bridge.parser().parse_args([]).kinds == ["local", "bridge"]
    for argv, reason in [
        (["--calls", "x"], "numbers separated by commas"),
        (["--calls", "0"], "1 to 100 each"),
        (["--calls", "101"], "coturn's quota"),
        (["--kinds", "local,janus"], "one or more of local, bridge"),
        (["--loop", "trio"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as e:
            bridge.parser().parse_args(argv)
        assert e.value.code == 2
        assert reason in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bridge.parser().parse_args(["--help"])
    assert e.value.code == 0
    assert "--connect-limit" in capsys.readouterr().out


def test_the_meter_counts_gaps_latency_and_the_windows_deliveries() -> None:
    m = bridge_figures.Meter()
    m.packet(0, "audio", 1, 10, 0.5, 1.0)  # before the window: not counted at all
    m.start(10.0)
    m.packet(0, "audio", 1, 65534, 10.0, 10.002)
    m.packet(0, "audio", 1, 65535, 10.02, 10.023)
    m.packet(0, "audio", 1, 2, 10.06, 10.064)  # across the wrap: 0 and 1 are missing
    m.packet(1, "video", 7, 100, 10.1, 10.11)
    m.packet(1, "video", 7, 100, 10.1, 10.12)  # a duplicate is not a second packet
    m.packet(1, "video", 7, 101, None, 10.13)  # no stamp: counted, no latency
    m.stop(11.0)
    m.packet(1, "video", 7, 102, 10.9, 11.5)  # after the window, sent inside it
    m.packet(1, "video", 7, 103, 11.2, 11.6)  # sent after the window
    m.counting = False
    m.packet(1, "video", 7, 104, 10.95, 12.0)  # too late to count
    assert m.loss() == (7, 5)  # 65534..2 is 5 numbers, 3 seen; 100..101 both seen
    assert m.delivered == 6
    assert [round(x * 1e3) for x in m.latencies["audio"]] == [2, 3, 4]
    assert [round(x * 1e3) for x in m.latencies["video"]] == [10, 20]


def test_client_candidates_must_be_the_plants_host_address() -> None:
    sdp = "a=candidate:1 1 udp 2130706431 10.231.1.2 40000 typ host\r\n"
    bridge.check_in_plant(sdp, "10.231.1.2", "viewer a0")
    for bad in (sdp.replace("10.231.1.2", "10.0.0.5"), "", sdp.replace("host", "srflx")):
        with pytest.raises(RuntimeError, match="viewer a0: candidates"):
            bridge.check_in_plant(bad, "10.231.1.2", "viewer a0")


def test_grants_are_minted_as_the_relay_mints_them(tmp_path: Path) -> None:
    bed = Bed("t1")
    config = turn.TurnConfig(
        realm="dmz.zastava",
        listen=(bed.relay_address("plant-a"), bed.relay_address("plant-b")),
        secret_file=tmp_path / "turn-secret",
        conf_file=tmp_path / "turnserver.conf",
        state_dir=tmp_path / "turn",
    )
    secret = turn.new_secret()
    turn.write_secret(config.secret_file, secret)
    relay = bridge.Relay(bed, config)
    leg = bridge.leg_id("call-3")
    assert re.fullmatch(r"[0-9a-f]{32}", leg) and re.fullmatch(
        r"[0-9a-f]{64}", bridge.call_ref("x")
    )

    async def grants() -> list[dict[str, Any]]:
        return [
            await relay.grant("plant-a", "plant-b", "call-3", False),
            await relay.grant("plant-b", "plant-a", "call-3", True),
        ]

    a, b = asyncio.run(grants())
    assert a["urls"][0] == "turn:10.231.1.1:3478?transport=udp"
    assert b["urls"][0] == "turn:10.231.2.1:3478?transport=udp"
    now = dt.datetime.now(dt.UTC)
    assert turn.check(secret, a["username"], a["credential"], now=now) == f"{leg}.plant-a"
    assert turn.check(secret, b["username"], b["credential"], now=now) == f"{leg}.plant-b"
    with pytest.raises(turn.CredentialError, match="wrong password"):
        turn.check(turn.new_secret(), a["username"], a["credential"], now=now)
    assert relay.granted == 2


def test_frames_survive_any_cut_and_bad_ones_are_refused_with_reasons() -> None:
    messages: list[dict[str, Any]] = [
        {"call": 1, "op": "join", "args": ["call-0", "a0"]},
        {"reply": 1, "ok": None},
    ]
    data = b"".join(encode(m) for m in messages)
    for cut in range(len(data) + 1):
        decoder = Decoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == messages
    for frame, reason in [
        (b"\x00\x00\x00\x02[]", "holds a list, not an object"),
        (b"\x00\x00\x00\x02{x", "not JSON"),
        ((MAX_FRAME + 1).to_bytes(4, "big"), "over the"),
    ]:
        with pytest.raises(ValueError, match=reason):
            Decoder().feed(frame)


def test_calls_go_both_ways_nest_and_fail_when_the_other_end_goes() -> None:
    async def scenario() -> None:
        left_sock, right_sock = socket.socketpair()
        right: Channel | None = None

        async def grant(site: str) -> str:
            return f"grant for {site}"

        async def open_leg(room: str) -> str:
            assert right is not None  # calls back while the caller's call waits
            granted: str = await right.call("grant", "plant-b", limit=5)
            return f"{room}: {granted}"

        async def fail() -> None:
            raise ValueError("no such room")

        left = await Channel.over(left_sock, {"grant": grant})
        right = await Channel.over(right_sock, {"open": open_leg, "fail": fail})
        assert await left.call("open", "call-1", limit=5) == "call-1: grant for plant-b"
        with pytest.raises(RemoteError, match="ValueError: no such room"):
            await left.call("fail", limit=5)
        with pytest.raises(RemoteError, match="no operation 'nothing' here"):
            await left.call("nothing", limit=5)
        waiting = asyncio.ensure_future(left.call("open", "call-2"))  # never answered:
        await right.close()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(ConnectionError, match="gone"):
            await left.call("open", "call-3")
        await left.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def result(kind: str, cpu_a: float, p50: float) -> dict[str, Any]:
    counts = {"local_rtp": 900, "bridge_rtp": 900 if kind == "bridge" else 0}
    stalls = {"gc": {g: {"n": 1, "ms": 3.0, "max": 3.0} for g in ("0", "1", "2")}}
    sfu = {"counts": counts, "forwarding": {}, "in_sfu": {}, "retries": 0, "stalls": stalls}
    pct = {"p50": p50, "p95": 2 * p50, "p99": 3 * p50, "n": 1000}
    return {
        "kind": kind,
        "calls": 1,
        "calls_up": 1,
        "viewers": 2,
        "streams": 4,
        "flowing": 4,
        "wall": 10.0,
        "setup": 1.0,
        "legs_at": 1.0,
        "load": (0.5, 0.6),
        "cpu": {"plant-a": cpu_a, "plant-b": 0.8, "coturn": 0.2},
        "sys": {"plant-a": 0.1, "plant-b": 0.1, "coturn": 0.1},
        "generator": 0.5,
        "generator_stalls": stalls,
        "waited": {"plant-a": 1.0, "plant-b": 0.5, "coturn": 0.1, "clients": 0.2},
        "generator_sys": 0.1,
        "sfu": {
            "plant-a": {**sfu, "in_sfu": {"local": pct, "bridge": pct}},
            "plant-b": {**sfu, "in_sfu": {"local": pct, "bridge": pct}},
        },
        "published": 1000,
        "delivered": 990,
        "expected": 1000,
        "received": 995,
        "e2e": pct,
        "e2e_audio": pct,
        "e2e_video": pct,
        "drops": {"plant-a": 0, "plant-b": 0, "coturn": 0, "clients": 0},
        "backlog": {"plant-a": (0, 0), "plant-b": (0, 0), "coturn": (0, 0), "clients": (0, 0)},
        "pairs": ["relay/relay"] if kind == "bridge" else [],
        "grants": 4,
        "messages": 4,
    }


def test_the_figures_and_the_comparison() -> None:
    local, bridged = result("local", 0.4, 1.0), result("bridge", 0.8, 2.5)
    d = bridge_figures.derived(bridged)
    assert d["loss"] == pytest.approx(0.005) and d["delivery"] == pytest.approx(0.99)
    assert d["plant-a_us_pkt"] == pytest.approx(0.8 / 1800 * 1e6)
    assert d["coturn_us_pkt"] == pytest.approx(0.2 / 1800 * 1e6)  # both SFUs' leg packets
    assert d["total_ms_stream_s"] == pytest.approx((0.8 + 0.8 + 0.2) / 40 * 1e3)
    assert bridge_figures.derived(local)["total_ms_stream_s"] == pytest.approx(0.4 / 40 * 1e3)
    assert "coturn CPU 2.0%" in bridge_figures.show(
        bridged
    ) and "coturn" not in bridge_figures.show(local)
    assert "waited for a CPU 10.0% of the window; GC pauses 9 ms in all" in bridge_figures.show(
        bridged
    )
    assert "this benchmark's processes used 0.19 cores" in bridge_figures.show(local)
    runs = [bridge_figures.Run("local", 1, local), bridge_figures.Run("bridge", 1, bridged)]
    text = bridge_figures.compare(runs)
    assert "added by the leg: latency p50/p95/p99 +1.50/+3.00/+4.50 ms" in text
    assert "bridge - local, run by run: p50/p95/p99 +1.50/+3.00/+4.50 ms" in text
    assert "CPU per viewer stream-second +35.000 ms (4.50x the local call's)" in text
