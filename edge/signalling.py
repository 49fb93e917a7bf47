"""Edge-to-edge signalling for inter-site calls, on the web layer's event loop.

Theory of operation
-------------------
An edge keeps one signalling channel open to its relay (:class:`sync.doorbell.Doorbell`, a
thread). :class:`SiteSignal` sits on top of it, in the event loop of the web layer:

* **Messages to another plant** (:meth:`SiteSignal.send`): a JSON object, zlib-compressed (a
  bridge leg's SDP for a 49-person meeting is larger than a frame; compressed, it fits),
  sealed as a bundle on stream ``signal`` for that plant's receiving certificate (which the
  core handed us: :mod:`edge.signal_peers`) and signed with this edge's key — so the relay
  checks who sent it and may pass it on, but cannot read it. Each envelope lives
  :data:`ENVELOPE_TTL` and stands alone (sequence 1, no predecessor: signalling is not an
  ordered, exactly-once stream like the bundles'; what matters is answered, or retried by
  whoever waits for the answer).
* **Messages from another plant**: every ENVELOPE frame the relay passes is opened with this
  edge's receiving key, which checks everything a bundle can be checked for (signer
  certified for its origin, addressed to us, not expired, intact); then it must be on stream
  ``signal`` and not seen before (the relay could replay one: its header hash is remembered
  until it expires). The message goes to ``on_message(origin, message)``. Anything wrong is
  logged with the reason and dropped; nothing a remote plant sends can stop the loop.
* **Legs** (:meth:`SiteSignal.request_leg`, :meth:`SiteSignal.close_leg`): the relay's TURN
  grant for a bridge leg (``LEG_REQUEST`` → ``LEG_GRANT`` or ``LEG_REFUSED``; docs/bridge.md).
  A ``LEG_CLOSED`` from the relay goes to ``on_leg_closed``.

Frames arrive on the doorbell's thread and are handed to the loop with
``call_soon_threadsafe``; sending runs the (blocking, short) channel write in a thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sqlite3
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from edge import signal_peers
from pki.node import NodeCredentials
from sync.bundle.codec import BundleError, Item, Signer, SignerCache, open_bundle, seal
from sync.signal import (
    MAX_PAYLOAD,
    SIGNAL_STREAM,
    Frame,
    FrameError,
    FrameType,
    LegClose,
    LegClosed,
    LegGrant,
    LegRefused,
    LegRequest,
    parse_leg,
)

log = logging.getLogger("zastava.edge.signal")

SIGNAL_ITEM = "zastava.signal"
ENVELOPE_TTL = dt.timedelta(seconds=60)
MAX_MESSAGE = 1024 * 1024  # a decompressed message, at most
LEG_TIMEOUT = 10.0


class Link(Protocol):
    """The channel to the relay (:class:`sync.doorbell.Doorbell`)."""

    on_frame: Callable[[Frame], None] | None
    on_connect: Callable[[], None] | None

    def send(self, frame: Frame) -> None: ...


class SignalError(RuntimeError):
    """A message or leg request that could not be sent or was refused; says why."""


class LegRefusedError(SignalError):
    pass


MessageHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


def encode_message(message: dict[str, Any]) -> bytes:
    text = json.dumps(message, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return zlib.compress(text.encode(), 6)


def decode_message(data: bytes) -> dict[str, Any]:
    """The message in an item; ValueError saying what is wrong with it."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, MAX_MESSAGE)
    except zlib.error as e:
        raise ValueError(f"not zlib data: {e}") from None
    if d.unconsumed_tail or not d.eof:
        raise ValueError(f"more than {MAX_MESSAGE} bytes once decompressed, or cut short")
    try:
        obj = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ValueError("not a JSON object with a 'type'")
    return obj


class SiteSignal:
    def __init__(
        self,
        *,
        site: str,
        creds: Callable[[], NodeCredentials],
        db: Path,
        link: Link,
        on_message: MessageHandler,
        on_leg_closed: Callable[[LegClosed], Awaitable[None]] | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_error: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.site = site
        self._creds = creds
        self._db = db
        self._link = link
        self._on_message = on_message
        self._on_leg_closed = on_leg_closed
        self._on_connect = on_connect
        self._on_error = on_error
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen: dict[bytes, float] = {}  # header hash -> when it expires (monotonic)
        self._waiting: dict[str, asyncio.Future[LegGrant]] = {}
        self._cache = SignerCache()
        self._tasks: set[asyncio.Task[None]] = set()
        self.received = 0
        self.dropped = 0
        self.leg_timeout = LEG_TIMEOUT

    def start(self) -> None:
        """Take the link's frames from now on (call on the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._link.on_frame = self._from_thread
        self._link.on_connect = self._connected_from_thread

    # -- sending --------------------------------------------------------------------------

    async def send(self, site: str, message: dict[str, Any]) -> None:
        """Seal ``message`` for ``site`` and hand it to the relay; SignalError if not."""
        creds = self._creds()
        now = self._clock()
        conn = sqlite3.connect(self._db, timeout=30)
        try:
            recipient = signal_peers.recipient(conn, site, trust=creds.trust, now=now)
        except LookupError as e:
            raise SignalError(str(e)) from None
        finally:
            conn.close()
        bundle = seal(
            [Item(SIGNAL_ITEM, encode_message(message))],
            signer=Signer(creds.name.site, creds.keys.signing, creds.signing_certificate),
            recipient=recipient,
            stream=SIGNAL_STREAM,
            seq=1,  # each envelope stands alone (see the module's docstring)
            prev=bytes(32),
            now=now,
            ttl=ENVELOPE_TTL,
        )
        if len(bundle) > MAX_PAYLOAD:
            raise SignalError(f"a signalling message of {len(bundle)} bytes is too large")
        await self._write(Frame(FrameType.ENVELOPE, bundle))

    async def _write(self, frame: Frame) -> None:
        try:
            await asyncio.to_thread(self._link.send, frame)
        except (ConnectionError, OSError, EOFError) as e:
            raise SignalError(f"the relay cannot be reached now: {e}") from None

    # -- legs -----------------------------------------------------------------------------

    async def request_leg(self, leg: str, peer: str, call: str, *, join: bool = False) -> LegGrant:
        """The relay's TURN grant for ``leg`` with ``peer``; LegRefusedError with its reason."""
        if leg in self._waiting:
            raise SignalError(f"a request for leg {leg} is already waiting")
        future: asyncio.Future[LegGrant] = asyncio.get_running_loop().create_future()
        self._waiting[leg] = future
        try:
            await self._write(LegRequest(leg, peer, call, join).frame())
            async with asyncio.timeout(self.leg_timeout):
                return await future
        except TimeoutError:
            raise SignalError(f"the relay did not answer the request for leg {leg}") from None
        finally:
            self._waiting.pop(leg, None)

    async def close_leg(self, leg: str, reason: str) -> None:
        try:
            await self._write(LegClose(leg, reason).frame())
        except SignalError as e:  # the relay closes it after its grace period anyway
            log.info("leg %s: close not sent: %s", leg, e)

    # -- receiving ------------------------------------------------------------------------

    def _from_thread(self, frame: Frame) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_frame, frame)

    def _connected_from_thread(self) -> None:
        if self._loop is not None and self._on_connect is not None:
            handler = self._on_connect
            self._loop.call_soon_threadsafe(lambda: self._spawn(handler()))

    def _spawn(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await job
            except Exception:
                log.exception("signalling handler failed")

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_frame(self, frame: Frame) -> None:
        if frame.type is FrameType.ENVELOPE:
            self._envelope(frame.payload)
        elif frame.type in (FrameType.LEG_GRANT, FrameType.LEG_REFUSED, FrameType.LEG_CLOSED):
            try:
                message = parse_leg(frame)
            except FrameError as e:
                log.warning("a malformed leg frame from the relay: %s", e)
                return
            if isinstance(message, LegClosed):
                if self._on_leg_closed is not None:
                    self._spawn(self._on_leg_closed(message))
                return
            future = self._waiting.get(message.leg)
            if future is None or future.done():
                log.info("leg %s: an answer nobody waits for", message.leg)
            elif isinstance(message, LegGrant):
                future.set_result(message)
            elif isinstance(message, LegRefused):
                future.set_exception(
                    LegRefusedError(f"the relay refused leg {message.leg}: {message.reason}")
                )
        elif frame.type is FrameType.ERROR:
            text = frame.payload.decode(errors="replace")[:500]
            log.warning("relay: %s", text)
            if self._on_error is not None:
                self._spawn(self._on_error(text))

    def _envelope(self, data: bytes) -> None:
        creds = self._creds()
        now = self._clock()
        try:
            opened = open_bundle(
                data,
                trust=creds.trust,
                now=now,
                site=self.site,
                receiving_key=creds.keys.receiving,
                receiving_certificate=creds.receiving_certificate,
                max_size=MAX_PAYLOAD,
                cache=self._cache,
            )
            header = opened.header
            if header.stream != SIGNAL_STREAM:
                raise ValueError(f"stream {header.stream!r} is not {SIGNAL_STREAM!r}")
            key = opened.header_hash
            mono = time.monotonic()
            self._seen = {k: t for k, t in self._seen.items() if t > mono}
            if key in self._seen:
                raise ValueError("seen before (a replay)")
            self._seen[key] = mono + ENVELOPE_TTL.total_seconds() + 60
            if len(opened.items) != 1 or opened.items[0].kind != SIGNAL_ITEM:
                raise ValueError(f"a signalling envelope holds one {SIGNAL_ITEM} item")
            message = decode_message(opened.items[0].data)
        except (BundleError, ValueError) as e:
            self.dropped += 1
            log.warning("a signalling envelope was dropped: %s", e)
            return
        self.received += 1
        self._spawn(self._on_message(header.origin, message))
