"""Recording a meeting: the forwarded VP8 + Opus muxed into WebM as they arrive (issue 7).

A real aiortc publisher sends a pre-encoded clip through a :class:`Room`; a
:class:`Recorder` taps its audio and video inside the SFU. The file must demux into
exactly the frames the publisher's "encoder" produced, byte for byte (so nothing was
decoded and re-encoded), decode with PyAV afterwards with a plausible frame count and
duration, and the SFU must have built no decoder or encoder while recording.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import av
import pytest

import edge.calls.recording as recording
import edge.sfu.webm as webm
from bench.sfu_clients import Clip, Publisher, make_clip, wait_for
from edge.calls.recording import (
    Recorder,
    list_recordings,
    recording_path,
    save_metadata,
)
from edge.sfu.room import Room
from tests.test_sfu_room import CodecWatch

pytestmark = pytest.mark.slow


def clip() -> Clip:
    return make_clip(seconds=6.0, fps=10, width=160, height=120, bitrate=150_000)


def test_a_recording_is_the_forwarded_frames_muxed_and_plays_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = CodecWatch(monkeypatch)
    media = clip()
    path = recording_path(tmp_path, "call-1", "rec-1")
    seconds = 4.0

    kinds: dict[str, str] = {}

    async def scenario() -> recording.RecordingInfo:
        room = Room("rec", rng=random.Random(3))
        await room.join("alice")
        alice = Publisher(media)
        await alice.pc.setRemoteDescription(await room.publish("alice", await alice.offer()))
        try:
            await wait_for(lambda: room.stats.received >= 20, 10, "alice's media at the SFU")
            kinds.update(room.publications)
            recorder = Recorder(room, path)
            await recorder.start(sorted(room.publications))
            start = time.monotonic()
            await asyncio.sleep(seconds)
            info = await recorder.stop()
            elapsed = time.monotonic() - start
            received = room.stats.forwarded
            await asyncio.sleep(0.3)
            # untapped: nothing more is forwarded (alice has no other subscriber)
            assert room.stats.forwarded == received
            assert watch.built_by(room) == (0, 0)  # the SFU built no decoder or encoder
            assert recorder.malformed == 0
            assert abs(info.duration_ms / 1000 - elapsed) < 1.0, (info, elapsed)
            return info
        finally:
            await room.close()
            await alice.close()

    info = asyncio.run(asyncio.wait_for(scenario(), 30))

    # demux only (no decoder): every packet is one the publisher sent, byte for byte
    sent = {"video": set(media.video) | set(media.keyframes), "audio": set(media.audio)}
    counts = {"video": 0, "audio": 0}
    keyframes = 0
    with av.open(str(path)) as container:
        assert {s.type: s.codec_context.name for s in container.streams} == {
            "video": "vp8",
            "audio": "opus",
        }
        for packet in container.demux():
            if packet.size == 0:
                continue
            kind = packet.stream.type
            assert bytes(packet) in sent[kind], f"a {kind} frame that was not sent"
            counts[kind] += 1
            keyframes += kind == "video" and packet.is_keyframe
    for kind in ("audio", "video"):
        assert counts[kind] == sum(n for k, n in info.frames.items() if kinds[k] == kind)
    # 10 fps video and 50 packets/s audio over ~4 s (the video starts on a keyframe request)
    assert 0.7 * 10 * seconds <= counts["video"] <= 10 * (seconds + 1), counts
    assert 0.8 * 50 * seconds <= counts["audio"] <= 50 * (seconds + 1), counts
    assert keyframes >= 1

    # and it plays: PyAV decodes every frame of both tracks, in time order, at 160x120
    with av.open(str(path)) as container:
        assert container.duration is not None
        duration = container.duration / av.time_base
        assert abs(duration - info.duration_ms / 1000) < 0.2, duration
        assert seconds - 1.0 <= duration <= seconds + 1.0, duration
        pts: list[float] = []
        sizes = set()
        for frame in container.decode(video=0):
            pts.append(float(frame.pts * frame.time_base))
            sizes.add((frame.width, frame.height))
        assert len(pts) == counts["video"] and sizes == {(160, 120)}
        assert pts == sorted(pts)
        gaps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
        assert 0.08 <= sum(gaps) / len(gaps) <= 0.12  # 10 fps in the file's own timestamps
    with av.open(str(path)) as container:
        audio = list(container.decode(audio=0))
        assert len(audio) == counts["audio"]
        assert {f.sample_rate for f in audio} == {48_000}

    # the recording path holds no codec at all: no av, no aiortc codec module imported there
    for module in (recording, webm):
        assert "av" not in vars(module) and "codecs" not in vars(module)


def test_recordings_are_listed_for_their_participants_only(tmp_path: Path) -> None:
    path = recording_path(tmp_path, "call-7", "r1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 10)
    info = recording.RecordingInfo(path, 4000, {}, 0)
    stored = save_metadata(tmp_path, "call-7", "r1", ["bob", "alice", "bob"], 100.0, info)
    assert stored.participants == ("alice", "bob") and stored.size == 10
    assert [r.id for r in list_recordings(tmp_path, "call-7", "alice")] == ["r1"]
    assert list_recordings(tmp_path, "call-7", "mallory") == []
    assert list_recordings(tmp_path, "call-8", "alice") == []
    for bad in ("..", "../x", "a/b", ""):
        with pytest.raises(ValueError, match="not a recording or call id"):
            recording_path(tmp_path, bad, "r1")
        with pytest.raises(ValueError, match="not a recording or call id"):
            recording_path(tmp_path, "call-7", bad)


def test_a_microphone_on_hold_is_not_recorded(tmp_path: Path) -> None:
    """The moderator's hold reaches the recording: while alice's microphone is held, none of
    its packets are written; her camera goes on; released, her voice is recorded again."""
    media = clip()
    path = recording_path(tmp_path, "call-2", "rec-1")

    async def scenario() -> dict[str, int]:
        room = Room("rec-hold", rng=random.Random(4))
        await room.join("alice")
        alice = Publisher(media)
        await alice.pc.setRemoteDescription(await room.publish("alice", await alice.offer()))
        try:
            await wait_for(lambda: room.stats.received >= 20, 10, "alice's media at the SFU")
            (mic,) = [k for k, kind in room.publications.items() if kind == "audio"]
            recorder = Recorder(room, path)
            recorder.silence(mic, True)
            await recorder.start(sorted(room.publications))
            await asyncio.sleep(1.5)
            held = written(recorder)
            recorder.silence(mic, False)
            await asyncio.sleep(1.5)
            info = await recorder.stop()
            kinds = dict(room.publications)
            return {
                "held_audio": sum(n for k, n in held.items() if kinds[k] == "audio"),
                "held_video": sum(n for k, n in held.items() if kinds[k] == "video"),
                "audio": sum(n for k, n in info.frames.items() if kinds[k] == "audio"),
            }
        finally:
            await room.close()
            await alice.close()

    counts = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert counts["held_audio"] == 0 and counts["held_video"] > 0, counts
    assert counts["audio"] >= 0.5 * 50 * 1.5, counts  # recorded again once released


def written(recorder: Recorder) -> dict[str, int]:
    """Frames written so far per publication."""
    return {s.publication: s.frames for s in recorder._streams.values()}
