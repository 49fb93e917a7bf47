"""Frames on the signalling channel between a node and the relay (sans-IO codec).

Theory of operation. Besides SFTP, a connected node opens one SSH channel with the
subsystem ``zastava-signal``. Both directions carry frames: ``type (u8) ‖ length (u32) ‖
payload``, payloads at most 64 KiB. A :class:`FrameReader` turns received bytes into
frames incrementally and refuses an unknown type or an oversized length before buffering
it (THREATS W5: a malformed frame closes that connection only).

Frame types:

- ``ENVELOPE`` (both ways): a sealed bundle on the ``signal`` stream, for real-time call
  set-up. The relay checks its outer layer (signer, origin = sender, policy, expiry) and
  passes it to every connection of the recipient site, unchanged: end-to-end encrypted.
- ``DOORBELL`` (relay → node): the name of a bundle just released into the node's inbox.
- ``ERROR`` (relay → node): a text saying what was refused and why.
- ``CHECKPOINT_REQUEST`` (node → relay): u64 size of the last checkpoint the node trusts.
- ``CHECKPOINT`` (relay → node): the latest signed checkpoint note (u32 length + UTF-8) and
  the consistency proof from the requested size (u16 count, 32-byte hashes).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAX_PAYLOAD = 64 * 1024
_HEAD = struct.Struct(">BI")
SIGNAL_STREAM = "signal"


class FrameType(enum.IntEnum):
    ENVELOPE = 1
    DOORBELL = 2
    ERROR = 3
    CHECKPOINT_REQUEST = 4
    CHECKPOINT = 5


class FrameError(ValueError):
    """A malformed frame; the connection that sent it is closed."""


@dataclass(frozen=True)
class Frame:
    type: FrameType
    payload: bytes

    def __post_init__(self) -> None:
        if len(self.payload) > MAX_PAYLOAD:
            raise FrameError(f"frame payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")

    def __bytes__(self) -> bytes:
        return _HEAD.pack(self.type, len(self.payload)) + self.payload


class FrameReader:
    """Feed bytes as they arrive; take whole frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= _HEAD.size:
            kind, length = _HEAD.unpack_from(self._buf)
            try:
                ftype = FrameType(kind)
            except ValueError:
                raise FrameError(f"unknown frame type {kind}") from None
            if length > MAX_PAYLOAD:
                raise FrameError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
            if len(self._buf) < _HEAD.size + length:
                break
            payload = bytes(self._buf[_HEAD.size : _HEAD.size + length])
            del self._buf[: _HEAD.size + length]
            frames.append(Frame(ftype, payload))
        return frames


def checkpoint_request(size: int) -> Frame:
    return Frame(FrameType.CHECKPOINT_REQUEST, struct.pack(">Q", size))


def parse_checkpoint_request(frame: Frame) -> int:
    if len(frame.payload) != 8:
        raise FrameError("checkpoint request must hold one u64")
    return int(struct.unpack(">Q", frame.payload)[0])


def checkpoint_frame(note: str, proof: list[bytes]) -> Frame:
    text = note.encode("utf-8")
    return Frame(
        FrameType.CHECKPOINT,
        struct.pack(">I", len(text)) + text + struct.pack(">H", len(proof)) + b"".join(proof),
    )


def parse_checkpoint(frame: Frame) -> tuple[str, list[bytes]]:
    p = frame.payload
    if len(p) < 6:
        raise FrameError("checkpoint frame truncated")
    (n,) = struct.unpack_from(">I", p)
    if len(p) < 4 + n + 2:
        raise FrameError("checkpoint frame truncated")
    try:
        note = p[4 : 4 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("checkpoint note is not UTF-8") from None
    (count,) = struct.unpack_from(">H", p, 4 + n)
    hashes = p[4 + n + 2 :]
    if len(hashes) != 32 * count:
        raise FrameError("checkpoint proof length does not match its count")
    return note, [hashes[i : i + 32] for i in range(0, len(hashes), 32)]
