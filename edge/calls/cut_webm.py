"""A recording cut short by a dead SFU worker, ended at its last whole frame.

Theory of operation
-------------------
:class:`edge.sfu.webm.WebmWriter` streams a recording: EBML header, a Segment of unknown
size, Info (with a Duration patched in only when the recording stops), Tracks, then
Clusters of unknown size holding a Timecode and SimpleBlocks. A worker killed while it
records (THREATS C1) leaves that stream as far as its file buffer reached the disk: the
last SimpleBlock may be torn and the Duration is still 0.

:func:`scan` walks the element headers (reading only headers, a block's track and time,
never the frames) and finds the longest prefix made of whole elements, the last frame's
time and the frames per track; :func:`end_cut` truncates the file there and writes that
time as the Duration. The result is the same kind of file a recording stopped at that
frame would be. A file this code did not write (an element of unknown size other than a
Segment or Cluster, an ID or size that is not EBML) is left as it is, with what was read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

EBML: Final = 0x1A45DFA3
SEGMENT: Final = 0x18538067
INFO: Final = 0x1549A966
DURATION: Final = 0x4489
CLUSTER: Final = 0x1F43B675
TIMECODE: Final = 0xE7
SIMPLE_BLOCK: Final = 0xA3
UNKNOWN: Final = -1


@dataclass
class Cut:
    length: int = 0  # bytes of whole elements from the start
    last_ms: int = 0  # the time of the last whole frame
    frames: dict[int, int] = field(default_factory=dict)  # track number -> whole frames
    duration_at: int | None = None  # offset of the Info's 8-byte Duration value
    ours: bool = True  # False: not a stream WebmWriter writes; left alone


def _vint(file: BinaryIO, marker: bool) -> tuple[int, int] | None:
    """(value, length) of an EBML ID (``marker`` kept) or size; None at the end or not one."""
    first = file.read(1)
    if not first:
        return None
    length = 9 - first[0].bit_length()
    if not 1 <= length <= 8 or (marker and length > 4):
        return None
    rest = file.read(length - 1)
    if len(rest) != length - 1:
        return None
    value = int.from_bytes(first + rest, "big")
    if marker:
        return value, length
    value &= (1 << (7 * length)) - 1
    return (UNKNOWN if value == (1 << (7 * length)) - 1 else value), length


def scan(file: BinaryIO, size: int) -> Cut:
    """How much of ``file`` (``size`` bytes) is whole, and what it holds."""
    cut = Cut()
    file.seek(0)
    cluster_ms: int | None = None
    while True:
        start = file.tell()
        head = _vint(file, marker=True)
        length = None if head is None else _vint(file, marker=False)
        if head is None or length is None:
            cut.ours = file.tell() >= size  # the end, or a header torn by it: ours
            return cut
        element, body = head[0], length[0]
        payload = file.tell()
        if start == 0 and element != EBML:
            cut.ours = False
            return cut
        if body == UNKNOWN:
            if element not in (SEGMENT, CLUSTER):
                cut.ours = False
                return cut
            if element == CLUSTER:
                cluster_ms = None
            cut.length = payload  # descend: the children follow
            continue
        if payload + body > size:
            return cut  # torn at the end
        if element == INFO:
            cut.duration_at = _duration_at(file, payload, body)
        elif element == TIMECODE:
            file.seek(payload)
            cluster_ms = int.from_bytes(file.read(body), "big")
        elif element == SIMPLE_BLOCK:
            file.seek(payload)
            track = _vint(file, marker=False)
            time = file.read(2)
            if track is None or len(time) != 2 or cluster_ms is None:
                cut.ours = False
                return cut
            (relative,) = struct.unpack(">h", time)
            cut.frames[track[0]] = cut.frames.get(track[0], 0) + 1
            cut.last_ms = max(cut.last_ms, cluster_ms + relative)
        file.seek(payload + body)
        cut.length = payload + body


def _duration_at(file: BinaryIO, start: int, size: int) -> int | None:
    file.seek(start)
    while file.tell() < start + size:
        head = _vint(file, marker=True)
        length = _vint(file, marker=False)
        if head is None or length is None or length[0] == UNKNOWN:
            return None
        if head[0] == DURATION and length[0] == 8:
            return file.tell()
        file.seek(file.tell() + length[0])
    return None


def end_cut(path: Path) -> Cut | None:
    """Blocking: end the recording at ``path`` at its last whole frame (truncate, write
    the Duration). None when no frame reached the file (nothing to keep)."""
    try:
        file = path.open("r+b")
    except FileNotFoundError:
        return None
    with file:
        size = path.stat().st_size
        cut = scan(file, size)
        if not cut.ours:
            return cut
        if not cut.frames:
            return None
        file.truncate(cut.length)
        if cut.duration_at is not None:
            file.seek(cut.duration_at)
            file.write(struct.pack(">d", float(cut.last_ms)))
    return cut
