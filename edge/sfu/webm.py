"""A streaming WebM (Matroska) writer for already-encoded VP8 and Opus frames.

Theory of operation: a recording is written as it happens, so a file cut short by a crash
still plays up to its last cluster. The EBML header, a Segment of unknown size, the Info
(timecode scale 1 ms, a Duration patched in by :meth:`WebmWriter.close`) and the Tracks
go out before the first frame; frames follow as SimpleBlocks in Clusters, a new cluster at
each video keyframe and before a block's time would leave the cluster's signed 16-bit
range. Nothing here decodes or encodes: a frame's bytes are copied into the file as they
came (this is what "mux what arrives" means). The writer takes bytes and times in ms and
writes to a binary file object; it reads no clock.

Tracks that appear later (someone joins a meeting being recorded): with ``reserve``, the
Tracks element is followed by an EBML Void of that many bytes, which Matroska readers skip.
:meth:`WebmWriter.add_track` rewrites Tracks in place with one more entry and a smaller
Void behind it, so the header region keeps its size and no block moves; the caller adds a
track before its first block, so a file cut short at any moment lists every track it holds
blocks of. When the reserve cannot hold another entry, ``add_track`` refuses with
``ValueError`` and the file stays as it was. This needs a seekable file (a file on disk).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
TRACKS_ID = 0x1654AE6B
MAX_TRACK = 16_382  # a track number in a SimpleBlock is at most a 2-byte EBML integer


def _vint(value: int) -> bytes:
    """An EBML variable-size integer (element sizes), shortest form."""
    for length in range(1, 9):
        if value < (1 << (7 * length)) - 1:
            return (value | (1 << (7 * length))).to_bytes(length, "big")
    raise ValueError(f"EBML size {value} is too large")


def element(element_id: int, payload: bytes) -> bytes:
    return (
        element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
        + _vint(len(payload))
        + payload
    )


def void(size: int) -> bytes:
    """The head of an EBML Void element ``size`` bytes long in all (its body is not
    written: whatever bytes follow in the file are its content, which readers skip)."""
    if size >= 9:  # a fixed 8-byte size, so the head is always 9 bytes
        return b"\xec" + ((size - 9) | (1 << 56)).to_bytes(8, "big")
    if size >= 2:
        return b"\xec" + bytes([0x80 | (size - 2)])
    raise ValueError(f"no Void element is {size} byte long")


def uint(element_id: int, value: int) -> bytes:
    return element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def string(element_id: int, value: str) -> bytes:
    return element(element_id, value.encode())


def float64(element_id: int, value: float) -> bytes:
    return element(element_id, struct.pack(">d", value))


@dataclass(frozen=True)
class Track:
    number: int  # 1-based, < 127
    codec_id: str  # "V_VP8" or "A_OPUS"
    width: int = 0
    height: int = 0
    sample_rate: int = 48_000
    channels: int = 2

    @property
    def video(self) -> bool:
        return self.codec_id.startswith("V_")

    def entry(self) -> bytes:
        body = (
            uint(0xD7, self.number)  # TrackNumber
            + uint(0x73C5, self.number)  # TrackUID
            + uint(0x83, 1 if self.video else 2)  # TrackType
            + string(0x86, self.codec_id)  # CodecID
            + uint(0x9C, 0)  # FlagLacing
        )
        if self.video:
            body += element(0xE0, uint(0xB0, self.width) + uint(0xBA, self.height))
        else:
            # OpusHead (RFC 7845 §5.1): version 1, channels, pre-skip 312, 48 kHz, gain 0,
            # mapping family 0
            head = b"OpusHead" + struct.pack("<BBHIhB", 1, self.channels, 312, 48_000, 0, 0)
            body += element(0x63A2, head)  # CodecPrivate
            body += uint(0x56AA, 6_500_000)  # CodecDelay (ns): the pre-skip
            body += uint(0x56BB, 80_000_000)  # SeekPreRoll (ns)
            body += element(
                0xE1, float64(0xB5, float(self.sample_rate)) + uint(0x9F, self.channels)
            )
        return element(0xAE, body)


def vp8_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8 keyframe's header (RFC 6386 §9.1); None if not one."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack_from("<HH", frame, 6)
    return width & 0x3FFF, height & 0x3FFF


class WebmWriter:
    def __init__(
        self, file: BinaryIO, tracks: list[Track], *, app: str = "zastava", reserve: int = 0
    ) -> None:
        """Write the header with ``tracks``; ``reserve`` bytes after them are kept for
        :meth:`add_track` (0: the track list is final, and must not be empty)."""
        if not tracks and not reserve:
            raise ValueError("a WebM file needs a track, or room to add one")
        if reserve < 0 or reserve == 1:
            raise ValueError(f"cannot reserve {reserve} bytes for tracks")
        numbers = [t.number for t in tracks]
        if any(not 0 < n <= MAX_TRACK for n in numbers) or len(set(numbers)) != len(numbers):
            raise ValueError(f"a WebM file needs distinct track numbers 1..{MAX_TRACK}")
        self._file = file
        self._tracks = {t.number: t for t in tracks}
        self._cluster: int | None = None  # the open cluster's time (ms)
        self._duration_at = 0
        self.last_ms = 0
        self.blocks = 0
        ebml = element(
            0x1A45DFA3,
            uint(0x4286, 1)  # EBMLVersion
            + uint(0x42F7, 1)  # EBMLReadVersion
            + uint(0x42F2, 4)  # EBMLMaxIDLength
            + uint(0x42F3, 8)  # EBMLMaxSizeLength
            + string(0x4282, "webm")  # DocType
            + uint(0x4287, 4)  # DocTypeVersion
            + uint(0x4285, 2),  # DocTypeReadVersion
        )
        file.write(ebml + b"\x18\x53\x80\x67" + UNKNOWN_SIZE)  # Segment, size unknown
        info_head = uint(0x2AD7B1, 1_000_000) + string(0x4D80, app) + string(0x5741, app)
        duration = float64(0x4489, 0.0)
        info = element(0x1549A966, info_head + duration)
        self._duration_at = file.tell() + len(info) - 8  # the Duration's 8 value bytes
        file.write(info)
        self._tracks_at = file.tell()
        head = self._tracks_element()
        self._region = len(head) + reserve  # Tracks + Void: never changes size
        file.write(head)
        if reserve:
            file.write(void(reserve) + bytes(reserve - len(void(reserve))))

    def _tracks_element(self) -> bytes:
        return element(TRACKS_ID, b"".join(t.entry() for t in self._tracks.values()))

    @property
    def tracks(self) -> tuple[int, ...]:
        """The track numbers in the file's header, in order."""
        return tuple(self._tracks)

    def add_track(self, track: Track) -> None:
        """List one more track in the header (before its first block); ``ValueError`` if
        its number is taken or out of range, or the reserve has no room for it."""
        if track.number in self._tracks or not 0 < track.number <= MAX_TRACK:
            raise ValueError(f"track number {track.number} is taken or out of range")
        self._tracks[track.number] = track
        head = self._tracks_element()
        rest = self._region - len(head)
        if rest < 0 or rest == 1:
            del self._tracks[track.number]
            raise ValueError(
                f"no room for track {track.number} in the file's header "
                f"({len(self._tracks)} tracks fill it)"
            )
        end = self._file.tell()
        self._file.seek(self._tracks_at)
        self._file.write(head + (void(rest) if rest else b""))
        self._file.seek(end)

    def write(self, track: int, time_ms: int, frame: bytes, keyframe: bool) -> None:
        """One encoded frame of ``track`` at ``time_ms`` from the recording's start."""
        if track not in self._tracks:
            raise ValueError(f"no track {track}")
        time_ms = max(0, time_ms)
        video_key = keyframe and self._tracks[track].video
        cluster = self._cluster
        if cluster is None or video_key or not -32768 <= time_ms - cluster <= 32767:
            # a new cluster; a block may then sit slightly before it (audio written late)
            self._file.write(b"\x1f\x43\xb6\x75" + UNKNOWN_SIZE + uint(0xE7, time_ms))
            self._cluster = cluster = time_ms
        relative = time_ms - cluster
        block = _vint(track) + struct.pack(">hB", relative, 0x80 if keyframe else 0) + frame
        self._file.write(b"\xa3" + _vint(len(block)) + block)  # SimpleBlock
        self.last_ms = max(self.last_ms, time_ms)
        self.blocks += 1

    def close(self) -> None:
        """Patch in the Duration (ms) if the file is seekable; the writer is done."""
        end = self._file.tell()
        if self._file.seekable():
            self._file.seek(self._duration_at)
            self._file.write(struct.pack(">d", float(self.last_ms)))
            self._file.seek(end)
        self._file.flush()
