"""What one forwarded copy's protect-and-send costs the SFU: the C sender against cffi + the
transport, interleaved in one process so that both see the same spell of the VM.

    .venv/bin/python bench/egress_send.py [--rounds 20] [--packets 2000] [--size 1100]

A real room (``edge.sfu.room.Room``) where alice publishes a clip and bob subscribes on host
candidates, as in tests/test_sfu_egress.py; once bob's video slot's egress is on the fast
path, this process (pinned to CPU 0) calls that egress's ``send`` with ``--packets`` RTP
packets of ``--size`` bytes (an SSRC of their own, sequence numbers counting on, so libsrtp
takes every one), alternately with the route's C sender (``edge/sfu/_sendpath.c``) and
without it (libsrtp through cffi and the event loop's ``sendto``: the egress as it is where
nothing is compiled), ``--rounds`` times each. Reported: CPU time (user + system: the
kernel's loopback delivery into bob's socket included, as for the SFU under
``bench/sfu.py``) per copy, median and range over the rounds, and the ratio of medians.
Needs the compiled modules (``scripts/compile_sfu.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sfu_clients import Publisher, Subscriber, make_clip, wait_for  # noqa: E402
from edge.sfu import native  # noqa: E402
from edge.sfu.room import Room  # noqa: E402


def packets(count: int, size: int, first: int) -> list[bytes]:
    header = bytes([0x80, 96])
    tail = (0x5EED0001).to_bytes(4, "big") + (0x0BE11CE5).to_bytes(4, "big")
    payload = random.Random(first).randbytes(size - 12)
    return [
        header + ((first + i) & 0xFFFF).to_bytes(2, "big") + tail + payload for i in range(count)
    ]


async def measure(args: argparse.Namespace) -> None:
    room = Room("egress-bench", rng=random.Random(7))
    alice, bob = Publisher(make_clip(seconds=2.0, fps=10, width=160, height=120)), Subscriber()
    try:
        await room.join("alice")
        await alice.pc.setRemoteDescription(await room.publish("alice", await alice.offer()))
        await room.join("bob")
        answer = await bob.answer(await room.subscribe("bob", None))
        await room.answer("bob", answer)
        await wait_for(lambda: bob.received.frames["video"] >= 3, 30, "bob's first frames")
        egress = next(e for e in room.worker._egress.values() if e.fast > 0)
        sender = egress._sender
        if sender is None:
            raise SystemExit("no C sender on the route: scripts/compile_sfu.py, then again")
        results: dict[str, list[float]] = {"C sender": [], "cffi + transport": []}
        sequence = 0
        for _ in range(args.rounds):
            for name, using in (("C sender", sender), ("cffi + transport", None)):
                # (header, payload) as the forwarder hands a copy to its egress
                batch = [(p[:12], p[12:]) for p in packets(args.packets, args.size, sequence)]
                sequence += args.packets
                egress._sender = using
                send = egress.send_rtp
                start = time.process_time()
                for header, payload in batch:
                    if not send(header, payload):
                        raise SystemExit(f"the egress declined a copy: {egress.why_not_fast}")
                results[name].append((time.process_time() - start) / len(batch) * 1e6)
                egress._sender = sender
                await asyncio.sleep(0.05)  # bob drains his socket
        print(
            f"# {args.rounds} rounds x {args.packets} copies of {args.size} bytes, CPU 0; "
            f"CPU-us per copy (user + system), median [min-max]"
        )
        for name, values in results.items():
            print(
                f"{name:18s} {statistics.median(values):6.2f} [{min(values):.2f}-{max(values):.2f}]"
            )
        c, cffi = (statistics.median(v) for v in results.values())
        print(f"C / cffi = {c / cffi:.2f} (saves {cffi - c:.2f} us a copy)")
    finally:
        await room.close()
        await alice.close()
        await bob.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--packets", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1100)
    args = parser.parse_args()
    if not native.active():
        raise SystemExit("the compiled SFU modules are not built: run scripts/compile_sfu.py")
    os.sched_setaffinity(0, {0})
    import uvloop

    uvloop.run(measure(args))


if __name__ == "__main__":
    main()
