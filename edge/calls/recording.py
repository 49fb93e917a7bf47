"""Recording a meeting to the edge's disk: the forwarded streams, muxed as they arrive.

Theory of operation: a :class:`Recorder` taps each publication it records inside the SFU
(:meth:`edge.sfu.room.Room.tap`): a slot with no peer connection that gets the same
rewritten RTP a subscriber would, before SRTP, starting on a video keyframe (the slot asks
the publisher for one, throttled as for any subscriber). Each stream's packets become
frames without decoding: an Opus packet is one frame; VP8 packets are put in sequence
order and a frame is the payloads (their VP8 descriptors stripped) from a partition start
to the marker bit, with no sequence gap (a retransmission that fills a gap completes its
frame late). A stream that stays broken for more than :data:`MAX_PENDING` packets drops
what it holds, asks for a keyframe and resumes on it, so a loss costs a few frames of
that stream and never stalls the file. Frames go to one WebM file (:mod:`edge.sfu.webm`),
one track per publication, each stamped ``(first arrival - start) + (RTP time - first RTP
time) / clock rate``, so tracks keep their relative timing. No decoder or encoder exists
anywhere on this path: frame bytes are what the publishers' encoders produced.

The set of publications changes while it records: :meth:`Recorder.add` taps one that
appeared (someone joined, or started sharing a screen) and :meth:`Recorder.remove` lets go
of one that ended (its track just has no more frames). A publication becomes a track of the
file at its first frame (a video track's size comes from that first frame, a keyframe):
the header keeps room for :data:`TRACKS_RESERVE` bytes of track entries
(:meth:`edge.sfu.webm.WebmWriter.add_track`), so the one file holds everyone who published
while it ran, each track starting at its own time. A publication that finds no room left
(past ~1,200 tracks) is not recorded and is named in :attr:`RecordingInfo.refused`.

Where recordings live: ``<root>/<call id>/<recording id>.webm`` with a JSON sidecar naming
the participants who may download it (:func:`list_recordings`, :func:`recording_path`);
deciding who is a participant is the call service's (``edge.calls.service``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from edge.sfu.keyframes import vp8_keyframe_start, vp8_payload_offset
from edge.sfu.packets import parse_rtp
from edge.sfu.room import Room
from edge.sfu.webm import Track, WebmWriter, vp8_size

logger = logging.getLogger(__name__)

MAX_PENDING = 256  # video packets held waiting for a gap to fill before resyncing
TRACKS_RESERVE = 64 * 1024  # header bytes for track entries: ~1,200 (audio 75 B, video 34 B)
FALLBACK_SIZE = (640, 480)  # a first keyframe whose header does not parse
_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass
class _Stream:
    publication: str
    video: bool
    clock_rate: int
    tap: str
    first_ts: int | None = None
    first_at: float = 0.0
    last_ts: int = 0
    ext_ts: int = 0
    next_seq: int | None = None  # video: the sequence number the next frame starts at
    pending: dict[int, tuple[bool, int, bytes, bool]] = field(default_factory=dict)
    # seq -> (marker, timestamp, payload, starts a partition 0)
    frames: int = 0
    resyncs: int = 0
    number: int = 0  # its track in the file, from its first frame on (0: none yet)
    ended: bool = False  # untapped: the publication ended, or no track could be added


@dataclass(frozen=True)
class RecordingInfo:
    path: Path
    duration_ms: int
    frames: dict[str, int]  # publication -> frames written
    resyncs: int
    refused: tuple[str, ...] = ()  # publications left out: no room for another track


class Recorder:
    def __init__(
        self,
        room: Room,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        reserve: int = TRACKS_RESERVE,
    ) -> None:
        self._room = room
        self._path = path
        self._clock = clock
        self._reserve = reserve
        self._streams: dict[str, _Stream] = {}
        self._file: BinaryIO | None = None
        self._writer: WebmWriter | None = None
        self._start = 0.0
        self._silenced: set[str] = set()  # audio publications the moderator holds
        self._refused: list[str] = []
        self._stopped = False
        self.malformed = 0

    def silence(self, publication: str, silenced: bool) -> None:
        """A moderator's hold on a microphone holds the recording too: while ``silenced``,
        that publication's audio is not written (the file has a gap, not the voice)."""
        if silenced:
            self._silenced.add(publication)
        else:
            self._silenced.discard(publication)

    async def start(self, publications: Sequence[str]) -> None:
        """Start the file and tap these publications (audio and video)."""
        if not publications:
            raise ValueError("nothing to record")
        self._start = self._clock()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._path.open("wb")
        self._writer = WebmWriter(self._file, [], reserve=self._reserve)
        for key in publications:
            await self.add(key)

    async def add(self, publication: str) -> None:
        """Record one more publication from now on (one that appeared while recording);
        nothing if it is recorded already. ``ValueError`` if the room does not have it."""
        if self._writer is None or self._stopped:
            raise ValueError("the recorder is not running")
        if publication in self._streams:
            return
        kind = self._room.publications.get(publication)
        if kind is None:
            raise ValueError(f"no publication {publication} in room {self._room.id}")
        video = kind == "video"
        stream = _Stream(publication, video, 90_000 if video else 48_000, f"rec:{publication}")
        self._streams[publication] = stream
        try:
            await self._room.tap(stream.tap, publication, self._sink(stream))
        except ValueError:
            del self._streams[publication]
            raise
        if self.stopped:  # stopped while the tap was being set up
            self._end(stream)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def remove(self, publication: str) -> None:
        """The publication ended: let it go (its track keeps the frames written so far)."""
        stream = self._streams.get(publication)
        if stream is not None and not stream.ended:
            self._end(stream)

    def _end(self, stream: _Stream) -> None:
        stream.ended = True
        stream.pending.clear()
        self._room.untap(stream.tap)

    def _sink(self, stream: _Stream) -> Callable[[bytes], Awaitable[None]]:
        async def sink(data: bytes) -> None:
            if stream.ended or 192 <= data[1] <= 223:  # RTCP: the rewritten sender reports
                return
            try:
                await self._on_rtp(stream, data)
            except ValueError as exc:
                self.malformed += 1
                logger.info("recording %s: dropped a packet: %s", self._path.name, exc)

        return sink

    async def _on_rtp(self, stream: _Stream, data: bytes) -> None:
        packet = parse_rtp(data)
        now = self._clock()
        if not stream.video:
            if packet.payload and stream.publication not in self._silenced:
                self._emit(stream, packet.timestamp, packet.payload, True, now)
            return
        payload = packet.payload
        offset = vp8_payload_offset(payload)
        start = bool(payload[0] & 0x10) and payload[0] & 0x0F == 0
        if stream.next_seq is None:
            if not (start and vp8_keyframe_start(payload)):
                return  # waiting for a keyframe to begin (or resume) on
            stream.next_seq = packet.sequence_number
        ahead = (packet.sequence_number - stream.next_seq) & 0xFFFF
        if ahead >= 0x8000:
            return  # belongs to a frame already written or given up
        stream.pending[packet.sequence_number] = (
            bool(packet.marker),
            packet.timestamp,
            payload[offset:],
            start,
        )
        self._assemble(stream, now)
        if len(stream.pending) > MAX_PENDING:
            stream.pending.clear()
            stream.next_seq = None
            stream.resyncs += 1
            await self._room.request_keyframe(stream.tap)

    def _assemble(self, stream: _Stream, now: float) -> None:
        while stream.next_seq is not None:
            seq = stream.next_seq
            first = stream.pending.get(seq)
            if first is None or not first[3]:
                return
            parts: list[bytes] = []
            while True:
                entry = stream.pending.get(seq)
                if entry is None or entry[1] != first[1]:
                    return  # a gap, or the frame's marker was lost: wait
                parts.append(entry[2])
                if entry[0]:
                    break
                seq = (seq + 1) & 0xFFFF
            for n in range(len(parts)):
                stream.pending.pop((stream.next_seq + n) & 0xFFFF, None)
            stream.next_seq = (seq + 1) & 0xFFFF
            frame = b"".join(parts)
            keyframe = bool(frame) and not frame[0] & 1
            self._emit(stream, first[1], frame, keyframe, now)

    def _emit(self, stream: _Stream, timestamp: int, frame: bytes, key: bool, now: float) -> None:
        writer = self._writer
        if writer is None or stream.ended or self._stopped:
            return
        if stream.first_ts is None:
            if not self._add_track(writer, stream, frame):
                return
            stream.first_ts, stream.first_at = timestamp, now
            stream.last_ts, stream.ext_ts = timestamp, timestamp
        assert stream.first_ts is not None
        delta = (timestamp - stream.last_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 1 << 32
        if delta < 0 and not stream.video:
            return  # a late audio packet: its time was written past already
        stream.ext_ts += delta
        stream.last_ts = timestamp
        time_ms = round(
            (stream.first_at - self._start) * 1000
            + (stream.ext_ts - stream.first_ts) * 1000 / stream.clock_rate
        )
        stream.frames += 1
        writer.write(stream.number, time_ms, frame, key)

    def _add_track(self, writer: WebmWriter, stream: _Stream, frame: bytes) -> bool:
        """Make the stream a track of the file, at its first frame (a video keyframe)."""
        number = max(writer.tracks, default=0) + 1
        if stream.video:
            track = Track(number, "V_VP8", *(vp8_size(frame) or FALLBACK_SIZE))
        else:
            track = Track(number, "A_OPUS")
        try:
            writer.add_track(track)
        except ValueError as exc:
            logger.warning(
                "recording %s: %s not recorded: %s", self._path.name, stream.publication, exc
            )
            self._refused.append(stream.publication)
            self._end(stream)
            return False
        stream.number = number
        return True

    async def stop(self) -> RecordingInfo:
        """Untap everything and finish the file."""
        self._stopped = True
        for stream in self._streams.values():
            if not stream.ended:
                self._end(stream)
        if self._file is None or self._writer is None:
            raise ValueError("the recorder was not started")
        self._writer.close()
        self._file.close()
        return RecordingInfo(
            self._path,
            self._writer.last_ms,
            {key: s.frames for key, s in self._streams.items()},
            sum(s.resyncs for s in self._streams.values()),
            tuple(self._refused),
        )


# -- where recordings are kept ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredRecording:
    id: str
    call: str
    participants: tuple[str, ...]  # logins who may list and download it
    started_at: float
    duration_ms: int
    size: int


def recording_path(root: Path, call_id: str, recording_id: str) -> Path:
    """The file of a recording; both ids are checked to be plain names (no traversal)."""
    for value in (call_id, recording_id):
        if not _ID.match(value) or value in (".", ".."):
            raise ValueError(f"not a recording or call id: {value!r}")
    return root / call_id / f"{recording_id}.webm"


def save_metadata(
    root: Path,
    call_id: str,
    recording_id: str,
    participants: Sequence[str],
    started_at: float,
    info: RecordingInfo,
) -> StoredRecording:
    path = recording_path(root, call_id, recording_id)
    stored = StoredRecording(
        recording_id,
        call_id,
        tuple(sorted(set(participants))),
        started_at,
        info.duration_ms,
        path.stat().st_size,
    )
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "participants": list(stored.participants),
                "started_at": started_at,
                "duration_ms": info.duration_ms,
            }
        )
    )
    return stored


def list_recordings(root: Path, call_id: str, login: str) -> list[StoredRecording]:
    """The recordings of a call that ``login`` took part in, oldest first."""
    directory = recording_path(root, call_id, "x").parent
    found = []
    for meta in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        data = json.loads(meta.read_text())
        if login not in data["participants"]:
            continue
        media = meta.with_suffix(".webm")
        found.append(
            StoredRecording(
                meta.stem,
                call_id,
                tuple(data["participants"]),
                float(data["started_at"]),
                int(data["duration_ms"]),
                media.stat().st_size if media.exists() else 0,
            )
        )
    return sorted(found, key=lambda r: r.started_at)
