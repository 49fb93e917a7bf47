"""Edge-to-edge signalling (edge.signalling) over a real relay and the edges' real links.

Each plant's :class:`SiteSignal` sits on the real ``Doorbell`` link to a real SSH relay whose
``[calls]`` policy lets plant-a and plant-b call each other (not plant-c). Messages are sealed
for the other plant's receiving certificate (from edge_signal_peers, as the core hands them
out) and opened there; the relay passes what it cannot read. A replayed, misaddressed or
tampered envelope is dropped with its reason; leg grants and refusals come back to the
request that asked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from edge import signal_peers
from edge.signalling import LegRefusedError, SignalError, SiteSignal, decode_message
from sync.doorbell import Doorbell
from sync.signal import Frame, FrameType, LegClosed
from tests.relayfixture import RelayPKI, utcnow
from tests.test_relay_legs import CALL, LegRelay, leg_relay
from tests.test_relay_legs import pki as pki  # noqa: F401 - the module's PKI fixture

pytestmark = pytest.mark.timeout(120)


class Plant:
    def __init__(self, lr: LegRelay, site: str, db: Path) -> None:
        self.site = site
        self.messages: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.closed: asyncio.Queue[LegClosed] = asyncio.Queue()
        self.sent: list[Frame] = []
        creds = lr.relay.pki.nodes[site]
        self.bell = Doorbell(
            lr.relay.host,
            lr.relay.port,
            creds,
            lr.relay.certificate,
            lambda: None,
            clock=utcnow,
        )
        send = self.bell.send

        def recording_send(frame: Frame) -> None:
            self.sent.append(frame)
            send(frame)

        self.bell.send = recording_send  # type: ignore[method-assign]

        async def on_message(origin: str, message: dict[str, Any]) -> None:
            await self.messages.put((origin, message))

        async def on_closed(closed: LegClosed) -> None:
            await self.closed.put(closed)

        self.signal = SiteSignal(
            site=site,
            creds=lambda: creds,
            db=db,
            link=self.bell,
            on_message=on_message,
            on_leg_closed=on_closed,
        )


def peers_db(path: Path, pki: RelayPKI, site: str, others: list[str]) -> Path:
    conn = sqlite3.connect(path)
    with conn:
        signal_peers.replace(
            conn,
            [pki.nodes[o].receiving_certificate.public_bytes(Encoding.DER) for o in others],
            trust=pki.nodes[site].trust,
            now=utcnow(),
        )
    conn.close()
    return path


@asynccontextmanager
async def plants(
    lr: LegRelay, tmp_path: Path, peers: dict[str, list[str]]
) -> AsyncIterator[dict[str, Plant]]:
    made: dict[str, Plant] = {}
    try:
        for site, others in peers.items():
            db = peers_db(tmp_path / f"{site}.db", lr.relay.pki, site, others)
            p = made[site] = Plant(lr, site, db)
            p.signal.start()
            p.bell.start()
        for site, p in made.items():
            await asyncio.to_thread(p.bell.connected.wait, 30)
            await wait_until(lambda s=site: lr.relay.server.hub.connected(s))  # type: ignore[misc]
        yield made
    finally:
        for p in made.values():
            await asyncio.to_thread(p.bell.stop)


async def next_of(q: asyncio.Queue[Any]) -> Any:
    async with asyncio.timeout(20):
        return await q.get()


async def wait_until(check: Callable[[], object]) -> None:
    async with asyncio.timeout(20):
        while not check():  # noqa: ASYNC110 - polls another thread's state
            await asyncio.sleep(0.05)


def run(coro_fn: Callable[[], Any]) -> None:
    asyncio.run(coro_fn())


def test_messages_cross_end_to_end_and_replays_are_dropped(
    pki: RelayPKI,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with leg_relay(pki, tmp_path) as lr:
            async with plants(lr, tmp_path, {"plant-a": ["plant-b"], "plant-b": ["plant-a"]}) as p:
                a, b = p["plant-a"], p["plant-b"]
                sdp = "".join(f"a=ssrc:{i} cname:zastava-{i % 7}\r\n" for i in range(6000))
                await a.signal.send("plant-b", {"type": "bridge.offer", "sdp": sdp})
                origin, message = await next_of(b.messages)
                assert origin == "plant-a" and message == {"type": "bridge.offer", "sdp": sdp}
                assert len(sdp) > 64 * 1024  # a frame's limit: it crossed compressed
                # The relay could replay an envelope: it is read once.
                (envelope,) = [f for f in a.sent if f.type is FrameType.ENVELOPE]
                await asyncio.to_thread(a.bell.send, envelope)
                await wait_until(lambda: b.signal.dropped == 1)
                assert b.messages.empty() and b.signal.received == 1
                # Answered the other way.
                await b.signal.send("plant-a", {"type": "bridge.answer", "n": 1})
                assert await next_of(a.messages) == ("plant-b", {"type": "bridge.answer", "n": 1})

    run(main)


def test_what_cannot_be_sealed_or_opened_says_why(
    pki: RelayPKI,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        with leg_relay(pki, tmp_path) as lr:
            async with plants(lr, tmp_path, {"plant-a": ["plant-b"], "plant-b": []}) as p:
                a, b = p["plant-a"], p["plant-b"]
                # plant-b does not know plant-a's receiving certificate yet.
                with pytest.raises(SignalError, match="no receiving certificate known for plant"):
                    await b.signal.send("plant-a", {"type": "x"})
                # Too large even compressed (random bytes do not compress).
                with pytest.raises(SignalError, match="too large"):
                    await a.signal.send("plant-b", {"type": "x", "junk": os.urandom(60_000).hex()})
                # A tampered envelope: the relay refuses it already (its outer hash).
                await a.signal.send("plant-b", {"type": "ok"})
                assert (await next_of(b.messages))[1] == {"type": "ok"}
                (good,) = [f for f in a.sent if f.type is FrameType.ENVELOPE]
                bad = bytearray(good.payload)
                bad[-5] ^= 1
                await asyncio.to_thread(a.bell.send, Frame(FrameType.ENVELOPE, bytes(bad)))
                await wait_until(lambda: "relay: " in caplog.text)  # the relay's ERROR
                assert "does not match the header" in caplog.text or "signature" in caplog.text
                assert b.messages.empty()

    with caplog.at_level("WARNING", logger="zastava.edge.signal"):
        run(main)


def test_a_message_item_must_be_what_it_claims() -> None:
    with pytest.raises(ValueError, match="not zlib data"):
        decode_message(b"not zlib")
    import zlib

    with pytest.raises(ValueError, match="once decompressed"):
        decode_message(zlib.compress(b"[" * (2 * 1024 * 1024)))
    with pytest.raises(ValueError, match="not a JSON object with a 'type'"):
        decode_message(zlib.compress(b'{"no": "type"}'))
    with pytest.raises(ValueError, match="not JSON"):
        decode_message(zlib.compress(b"\xff\xfe"))


def test_legs_are_granted_refused_and_closed_through_the_signal(
    pki: RelayPKI,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with leg_relay(pki, tmp_path) as lr:
            sites = {"plant-a": ["plant-b", "plant-c"], "plant-b": ["plant-a"], "plant-c": []}
            async with plants(lr, tmp_path, sites) as p:
                a, b = p["plant-a"], p["plant-b"]
                grant = await a.signal.request_leg("leg-1", "plant-b", CALL)
                assert (
                    grant.peer == "plant-b"
                    and grant.urls
                    and grant.username.endswith(":leg-1.plant-a")
                )
                assert grant.expires > dt.datetime.now(dt.UTC).timestamp()
                joined = await b.signal.request_leg("leg-1", "plant-a", CALL, join=True)
                assert joined.username.endswith(":leg-1.plant-b")
                assert joined.credential != grant.credential
                with pytest.raises(LegRefusedError, match="may not call each other"):
                    await a.signal.request_leg("leg-2", "plant-c", CALL)
                with pytest.raises(LegRefusedError, match="no leg leg-3 between"):
                    await b.signal.request_leg("leg-3", "plant-a", CALL, join=True)
                await a.signal.close_leg("leg-1", "call ended")
                closed = await next_of(b.closed)
                assert (closed.leg, closed.by, closed.reason) == ("leg-1", "plant-a", "call ended")

    run(main)
