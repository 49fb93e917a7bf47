"""Batched SFTP requests: many files, many requests in flight on one session (adapter).

Theory of operation. A small bundle costs a few requests, each tiny; sent one after the
other, the bundle rate is one over the sum of their round trips. Here a batch of files moves
in phases — upload: (stat), open, write and close, rename; fetch: stat and open, read,
close; delete: remove — and in each phase the requests of every file are sent through one
:class:`Window`, which keeps up to ``depth`` requests (and ``max_bytes`` of written data) in
flight, matches every answer to its request by id whatever the order, and hands it to the
request's callback. A phase ends when all its answers are in, so a file is renamed (handed
to the guard) only after every one of its writes and its close were acknowledged.

What it trusts: nothing in an answer beyond its type and status; a file's refusal (cap,
quota, no such file) is that file's error, recorded in its :class:`Item` while the others go
on. What it refuses: answers of the wrong type or with more data than asked
(:class:`~sync.transport.sftppipe.SFTPProtocolError`), which end the whole batch. Errors of
the connection (closed, cut by the watchdog) also end the whole batch; before raising, the
window waits for what is still in flight and closes the files it opened if the session
still works, so the relay holds exactly what it acknowledged (an upload resumes from there).

Bytes moved are reported to ``moved`` (the connection's watchdog, THREATS B9): data written
and read, and for the other requests the bytes of the request and its answer, so a relay
that answers a long phase of opens or renames slowly is cut like one that trickles data.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_REMOVE,
    CMD_RENAME,
    CMD_STAT,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    int64,
)

from sync.transport.sftppipe import WRITE_FLAGS, SFTPProtocolError, _RawSFTP, _status

Source = Callable[[int, int], bytes]  # (offset, length) -> at most length bytes
OnAnswer = Callable[[int, paramiko.Message], None]  # (answer type, message)
Moved = Callable[[int], None]
SMALL_ANSWER = 32  # bytes counted for an answer that carries no data (id, status, handle)


@dataclass
class Item:
    """One file of a batch: where it stands, and its error if it has one."""

    path: str
    size: int = 0  # upload: the data's size; fetch: the file's size, once known
    start: int = 0  # upload: the offset to write from (what the relay already holds)
    source: Source | None = None
    handle: bytes | None = None
    data: bytearray | None = None  # fetch: what was read
    error: tuple[int, str] | None = None  # the SFTP status (code, text) that refused it
    skip: bool = False  # not to be carried further (refused, too large, gone)

    def refuse(self, code: int, text: str) -> None:
        if self.error is None:
            self.error = (code, text)
        self.skip = True


class Window:
    """Up to ``depth`` requests (and ``max_bytes`` of written data) in flight on one session."""

    def __init__(
        self, sftp: paramiko.SFTPClient, *, depth: int, max_bytes: int, moved: Moved
    ) -> None:
        if depth < 1:
            raise ValueError(f"batch depth must be at least 1, got {depth}")
        self._sftp = cast(_RawSFTP, sftp)
        self.depth = depth
        self.max_bytes = max_bytes
        self.moved = moved
        self._pending: dict[int, tuple[OnAnswer, int]] = {}  # id -> (callback, bytes written)
        self._answers: deque[tuple[int, int, paramiko.Message]] = deque()
        self._bytes = 0

    # paramiko's SFTPClient calls this with the answer to each request sent with us as owner.
    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        self._answers.append((num, kind, msg))

    def send(self, command: int, on_answer: OnAnswer, *args: object, weight: int = 0) -> None:
        """Send one request once there is room; ``on_answer`` sees its answer later."""
        while self._pending and (
            len(self._pending) >= self.depth or self._bytes + weight > self.max_bytes
        ):
            self._step()
        num = self._sftp._async_request(self, command, *args)
        self._pending[num] = (on_answer, weight)
        self._bytes += weight

    def drain(self) -> None:
        """Wait for every answer and hand each to its callback."""
        while self._pending:
            self._step()

    def _step(self) -> None:
        if not self._answers:
            self._sftp._read_response()
        while self._answers:
            num, kind, msg = self._answers.popleft()
            entry = self._pending.pop(num, None)
            if entry is None:
                continue
            on_answer, weight = entry
            self._bytes -= weight
            self.moved(weight or SMALL_ANSWER)
            on_answer(kind, msg)

    def abandon(self, items: Sequence[Item]) -> None:
        """After an error: wait for what is in flight (answers ignored), close open files."""
        try:
            for num in self._pending:
                self._pending[num] = (_ignore, 0)
            for it in items:
                if it.handle is not None:
                    handle, it.handle = it.handle, None
                    self._pending[self._sftp._async_request(self, CMD_CLOSE, handle)] = (_ignore, 0)
            while self._pending:
                if not self._answers:
                    self._sftp._read_response()
                while self._answers:
                    self._pending.pop(self._answers.popleft()[0], None)
        except Exception:
            pass  # the session is broken: closing the connection is the caller's part
        finally:
            self._pending.clear()
            self._answers.clear()
            self._bytes = 0


def _ignore(kind: int, msg: paramiko.Message) -> None:
    pass


def _expect_status(kind: int, msg: paramiko.Message, what: str) -> tuple[int, str]:
    if kind != CMD_STATUS:
        raise SFTPProtocolError(f"answer of type {kind} to a {what}")
    return _status(msg)


def _on_open(it: Item) -> OnAnswer:
    def on_answer(kind: int, msg: paramiko.Message) -> None:
        if kind == CMD_STATUS:
            it.refuse(*_status(msg))
        elif kind == CMD_HANDLE:
            it.handle = msg.get_binary()
        else:
            raise SFTPProtocolError(f"answer of type {kind} to an open")

    return on_answer


def _checked(it: Item, what: str, then: Callable[[], None] | None = None) -> OnAnswer:
    def on_answer(kind: int, msg: paramiko.Message) -> None:
        code, text = _expect_status(kind, msg, what)
        if code != SFTP_OK:
            it.refuse(code, text)
        elif then is not None:
            then()

    return on_answer


def _close_all(window: Window, items: Sequence[Item]) -> None:
    for it in items:
        if it.handle is not None:
            handle, it.handle = it.handle, None
            window.send(CMD_CLOSE, _checked(it, "close"), handle)


def held_sizes(window: Window, items: Sequence[Item]) -> None:
    """Set each item's ``start`` to what the relay holds of its path (0 if nothing, or more
    than the data: then not ours, and written again from 0)."""

    def on_stat(it: Item) -> OnAnswer:
        def on_answer(kind: int, msg: paramiko.Message) -> None:
            if kind == CMD_STATUS:
                code, text = _status(msg)
                if code != SFTP_NO_SUCH_FILE:
                    it.refuse(code, text)
                return
            if kind != CMD_ATTRS:
                raise SFTPProtocolError(f"answer of type {kind} to a stat")
            held = _size_of(msg) or 0
            it.start = held if held <= it.size else 0

        return on_answer

    for it in items:
        window.send(CMD_STAT, on_stat(it), it.path)
    window.drain()


def write_all(
    window: Window,
    items: Sequence[Item],
    *,
    request_size: int,
    wrote: Callable[[Item, int], None],
) -> None:
    """Open every item (truncating unless it resumes), write ``[start, size)``, close it.

    An item refused at any step is marked and carried no further; its file is still closed.
    """
    for it in items:
        flags = WRITE_FLAGS | (SFTP_FLAG_TRUNC if it.start == 0 else 0)
        window.send(CMD_OPEN, _on_open(it), it.path, flags, _no_attrs())
    window.drain()
    for it in items:
        if it.handle is None:
            continue
        assert it.source is not None
        offset = it.start
        while offset < it.size and not it.skip:
            data = it.source(offset, min(request_size, it.size - offset))
            if not data:
                raise ValueError(f"upload source of {it.path} ended at byte {offset}")
            n = len(data)
            window.send(
                CMD_WRITE,
                _checked(it, "write", functools.partial(wrote, it, n)),
                it.handle,
                int64(offset),
                data,
                weight=n,
            )
            offset += n
        _close_all(window, [it])  # right behind its last write
    window.drain()


def rename_all(window: Window, moves: Sequence[tuple[Item, str]]) -> None:
    """Rename each item's path to its new name."""
    for it, new in moves:
        window.send(CMD_RENAME, _checked(it, "rename"), it.path, new)
    window.drain()


def read_all(
    window: Window,
    items: Sequence[Item],
    *,
    limit: int,
    request_size: int,
    too_large: Callable[[Item], None],
) -> None:
    """Stat and open every item, read it whole into ``item.data``, close it.

    A file larger than ``limit`` is not read (``too_large`` is told, THREATS B8); a file
    gone meanwhile is marked refused (no such file). Never asks for a byte at or past the
    size the stat gave; a short read is asked again for the rest.
    """

    def on_stat(it: Item) -> OnAnswer:
        def on_answer(kind: int, msg: paramiko.Message) -> None:
            if kind == CMD_STATUS:
                it.refuse(*_status(msg))
                return
            if kind != CMD_ATTRS:
                raise SFTPProtocolError(f"answer of type {kind} to a stat")
            size = _size_of(msg)
            if size is None:
                raise SFTPProtocolError(f"no size in the attributes of {it.path}")
            it.size = size

        return on_answer

    for it in items:
        window.send(CMD_STAT, on_stat(it), it.path)
        window.send(CMD_OPEN, _on_open(it), it.path, SFTP_FLAG_READ, _no_attrs())
    window.drain()
    todo: deque[tuple[Item, int, int]] = deque()
    for it in items:
        if it.handle is None:
            continue
        if it.skip:  # the stat failed after the open succeeded
            continue
        if it.size > limit:
            it.skip = True
            too_large(it)
            continue
        it.data = bytearray(it.size)
        todo.extend(
            (it, off, min(request_size, it.size - off)) for off in range(0, it.size, request_size)
        )

    def on_read(it: Item, offset: int, length: int) -> OnAnswer:
        def on_answer(kind: int, msg: paramiko.Message) -> None:
            if kind == CMD_STATUS:
                code, text = _status(msg)
                if code == SFTP_EOF:
                    raise SFTPProtocolError(f"{it.path} ended at byte {offset}, before {it.size}")
                it.refuse(code, text)
                return
            if kind != CMD_DATA:
                raise SFTPProtocolError(f"answer of type {kind} to a read")
            data = msg.get_binary()
            if len(data) > length:
                raise SFTPProtocolError(f"asked for {length} bytes, got {len(data)}")
            if not data:
                raise SFTPProtocolError(f"empty read at byte {offset} of {it.path}")
            assert it.data is not None
            it.data[offset : offset + len(data)] = data
            if len(data) < length:  # a short read: ask for the rest
                todo.appendleft((it, offset + len(data), length - len(data)))

        return on_answer

    while todo:
        it, offset, length = todo.popleft()
        if not it.skip:
            assert it.handle is not None
            window.send(
                CMD_READ,
                on_read(it, offset, length),
                it.handle,
                int64(offset),
                length,
                weight=length,
            )
        if not todo:
            window.drain()  # short reads may add more
    _close_all(window, items)
    window.drain()


def remove_all(window: Window, items: Sequence[Item]) -> None:
    for it in items:
        window.send(CMD_REMOVE, _checked(it, "remove"), it.path)
    window.drain()


def _size_of(attrs: paramiko.Message) -> int | None:
    """The size in an ATTRS answer (the size field comes first), if it has one."""
    if not attrs.get_int() & paramiko.SFTPAttributes.FLAG_SIZE:
        return None
    return int(attrs.get_int64())


def _no_attrs() -> paramiko.SFTPAttributes:
    return paramiko.SFTPAttributes()
