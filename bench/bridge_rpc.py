"""Calls both ways between the bridge benchmark's processes: framed JSON on a socket pair.

Theory of operation. The bridge benchmark (``bench/bridge.py``) runs each plant's SFU in a
process of its own, inside that plant's network namespace, where the driver cannot reach it
by any address (the plants reach only the relay). A Unix socket pair made before the fork
belongs to no network namespace, so it joins the driver and each plant process wherever
they run.

On it, each frame is a 4-byte big-endian length and one JSON object (:func:`encode`,
:class:`Decoder`: sans-IO, bytes in, objects out; a frame that is not one JSON object, or
longer than :data:`MAX_FRAME`, is a ``ValueError`` naming what is wrong). :class:`Channel`
carries calls in both directions: ``{"call": id, "op": name, "args": [...]}`` answered by
``{"reply": id, "ok": result}`` or ``{"reply": id, "error": text}``. Each incoming call runs
as a task of its own, so a handler may call back through the same channel (a plant asking
the driver for a TURN grant while the driver's call into that plant waits). When the other
end goes away, every call still waiting fails with ``ConnectionError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

MAX_FRAME = 16 << 20
_LENGTH = struct.Struct("!I")

Handler = Callable[..., Awaitable[Any]]


class RemoteError(RuntimeError):
    """The other end's handler raised; the message is its ``Type: text``."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame: the length, then the object as compact UTF-8 JSON."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f"a frame of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return _LENGTH.pack(len(body)) + body


class Decoder:
    """Frames from a byte stream, however it is cut."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        out: list[dict[str, Any]] = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise ValueError(f"a frame announces {size} bytes, over the {MAX_FRAME} limit")
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_LENGTH.size : end])
            del self._buffer[:end]
            try:
                message = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"a frame is not JSON: {e}") from None
            if not isinstance(message, dict):
                raise ValueError(f"a frame holds a {type(message).__name__}, not an object")
            out.append(message)
        return out


class Channel:
    """Calls to the other end (:meth:`call`) and its calls to ``handlers`` (by op name)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handlers: dict[str, Handler],
    ) -> None:
        self._reader, self._writer = reader, writer
        self.handlers = handlers
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @classmethod
    async def over(cls, sock: Any, handlers: dict[str, Handler]) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        channel = cls(reader, writer, handlers)
        channel._reading = asyncio.ensure_future(channel._read())
        return channel

    async def call(self, op: str, *args: Any, limit: float | None = None) -> Any:
        if self.closed.is_set():
            raise ConnectionError(f"{op}: the other process is gone")
        self._next += 1
        ident = self._next
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        self._writer.write(encode({"call": ident, "op": op, "args": list(args)}))
        try:
            return await asyncio.wait_for(future, limit)
        finally:
            self._waiting.pop(ident, None)

    async def _read(self) -> None:
        decoder = Decoder()
        try:
            while data := await self._reader.read(1 << 16):
                for message in decoder.feed(data):
                    self._dispatch(message)
        except (ConnectionError, ValueError):
            pass
        finally:
            self.closed.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("the other process went away"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "reply" in message:
            future = self._waiting.get(message["reply"])
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(RemoteError(str(message["error"])))
                else:
                    future.set_result(message.get("ok"))
            return
        task = asyncio.ensure_future(self._serve(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, message: dict[str, Any]) -> None:
        ident, op, args = message.get("call"), message.get("op"), message.get("args")
        try:
            handler = self.handlers.get(str(op))
            if handler is None or not isinstance(args, list):
                raise ValueError(f"no operation {str(op)[:40]!r} here")
            reply: dict[str, Any] = {"reply": ident, "ok": await handler(*args)}
        except Exception as e:  # the caller gets the reason; this process goes on
            reply = {"reply": ident, "error": f"{type(e).__name__}: {e}"}
        if not self.closed.is_set():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(encode(reply))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._writer.close()
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._reading
        self.closed.set()
