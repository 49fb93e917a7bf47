"""Recording a meeting: the forwarded VP8 + Opus muxed into WebM as they arrive (issue 7).

A real aiortc publisher sends a pre-encoded clip through a :class:`Room`; a
:class:`Recorder` taps its audio and video inside the SFU. The file must demux into
exactly the frames the publisher's "encoder" produced, byte for byte (so nothing was
decoded and re-encoded), decode with PyAV afterwards with a plausible frame count and
duration, and the SFU must have built no decoder or encoder while recording.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from dataclasses import dataclass, field
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
            assert frame.pts is not None and frame.time_base is not None
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


def late_clip() -> Clip:
    """Another picture size, bitrate and tone: a late joiner's frames are not alice's bytes."""
    return make_clip(seconds=6.0, fps=10, width=176, height=144, bitrate=120_000, tone=660.0)


@dataclass
class Demuxed:
    type: str
    size: tuple[int, int] | None  # video: the picture size the file's header gives
    frames: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # seconds, the file's own timestamps


def demuxed(path: Path) -> dict[int, Demuxed]:
    """Per stream of the file: codec type, picture size, the frames' bytes and times."""
    out: dict[int, Demuxed] = {}
    with av.open(str(path)) as container:
        for s in container.streams:
            size = None
            if isinstance(s, av.VideoStream):
                size = (s.codec_context.width, s.codec_context.height)
            out[s.index] = Demuxed(s.type, size)
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None:
                continue
            entry = out[packet.stream.index]
            entry.frames.append(bytes(packet))
            entry.times.append(float(packet.pts * packet.time_base))
    return out


def test_a_late_publisher_is_recorded_from_when_it_came_until_it_left(tmp_path: Path) -> None:
    """bob publishes ~1.5 s after the recording started and leaves ~2 s later: the one file
    holds alice's tracks from the start to the end and bob's from his first frame to his
    leaving, each frame byte for byte what its publisher sent, decodable, at bob's size."""
    alice_media, bob_media = clip(), late_clip()
    path = recording_path(tmp_path, "call-3", "rec-1")
    marks: dict[str, float] = {}

    async def scenario() -> tuple[recording.RecordingInfo, dict[str, str], dict[str, str]]:
        room = Room("rec-late", rng=random.Random(5))
        await room.join("alice")
        alice = Publisher(alice_media)
        bob = Publisher(bob_media)
        await alice.pc.setRemoteDescription(await room.publish("alice", await alice.offer()))
        try:
            await wait_for(lambda: room.stats.received >= 20, 10, "alice's media at the SFU")
            alices = dict(room.publications)
            recorder = Recorder(room, path)
            start = time.monotonic()
            await recorder.start(sorted(alices))
            await asyncio.sleep(1.5)

            await room.join("bob")
            await bob.pc.setRemoteDescription(await room.publish("bob", await bob.offer()))
            bobs = {k: v for k, v in room.publications.items() if k not in alices}
            assert len(bobs) == 2
            marks["bob_in"] = time.monotonic() - start
            for key in sorted(bobs):
                await recorder.add(key)
                await recorder.add(key)  # twice: still one tap, one track
            await wait_for(
                lambda: all(written(recorder).get(k, 0) >= 5 for k in bobs), 10, "bob recorded"
            )
            marks["bob_seen"] = time.monotonic() - start
            await asyncio.sleep(1.5)
            await room.leave("bob")
            marks["bob_out"] = time.monotonic() - start
            for key in bobs:
                recorder.remove(key)
            with pytest.raises(ValueError, match="no publication"):
                await recorder.add("bob/9")
            bob_frames = {k: n for k, n in written(recorder).items() if k in bobs}
            await asyncio.sleep(1.5)
            assert {k: n for k, n in written(recorder).items() if k in bobs} == bob_frames
            info = await recorder.stop()
            marks["end"] = time.monotonic() - start
            with pytest.raises(ValueError, match="the recorder is not running"):
                await recorder.add(sorted(alices)[0])
            assert recorder.malformed == 0 and info.refused == ()
            return info, alices, bobs
        finally:
            await room.close()
            await alice.close()
            await bob.close()

    info, alices, bobs = asyncio.run(asyncio.wait_for(scenario(), 40))
    assert set(info.frames) == set(alices) | set(bobs)

    streams = demuxed(path)
    assert sorted(s.type for s in streams.values()) == ["audio"] * 2 + ["video"] * 2
    sent = {
        "alice": set(alice_media.video) | set(alice_media.keyframes) | set(alice_media.audio),
        "bob": set(bob_media.video) | set(bob_media.keyframes) | set(bob_media.audio),
    }
    assert not sent["alice"] & sent["bob"]
    owner: dict[int, str] = {}
    for index, s in streams.items():
        assert s.frames, (index, s.type)
        whose = {who for who, theirs in sent.items() if set(s.frames) <= theirs}
        assert len(whose) == 1, f"stream {index}: frames not all of one publisher's"
        owner[index] = whose.pop()
    assert sorted(owner.values()) == ["alice", "alice", "bob", "bob"]
    for index, s in streams.items():
        times = s.times
        if owner[index] == "alice":
            assert times[0] < 1.5 and times[-1] > marks["end"] - 1.0, (index, times[:3])
        else:  # bob's tracks: from when he came to when he left (he was gone 1.5 s before
            # the end; frame times follow the RTP clock from the first frame's arrival)
            assert marks["bob_in"] - 0.2 <= times[0] <= marks["bob_seen"], (index, marks)
            assert times[-1] <= marks["bob_out"] + 1.0, (index, times[-1], marks)
        if s.type == "video":
            assert s.size == ((176, 144) if owner[index] == "bob" else (160, 120))
    counts = dict.fromkeys(sent, 0)
    for index, s in streams.items():
        counts[owner[index]] += len(s.frames)
    assert counts["bob"] == sum(n for k, n in info.frames.items() if k in bobs)

    # every video frame of both decodes (libvpx, as in the browsers)
    with av.open(str(path)) as container:
        for stream in container.streams.video:
            decoder = av.CodecContext.create("libvpx", "r")
            decoded = packets = 0
            for packet in container.demux(stream):
                if packet.size:
                    packets += 1
                    decoded += len(decoder.decode(packet))
            assert decoded == packets > 5
            container.seek(0)


def test_a_publication_finding_the_header_full_is_left_out(tmp_path: Path) -> None:
    """With room in the file's header for alice's two tracks only, bob's publications are
    refused (named in the result), and alice's recording goes on untouched."""
    media = clip()
    path = recording_path(tmp_path, "call-4", "rec-1")
    # exactly alice's two entries (the video one made at her size)
    two = webm.Track(1, "V_VP8", 160, 120).entry() + webm.Track(2, "A_OPUS").entry()
    reserve = len(webm.element(webm.TRACKS_ID, two)) - len(webm.element(webm.TRACKS_ID, b""))

    async def scenario() -> tuple[recording.RecordingInfo, set[str]]:
        room = Room("rec-full", rng=random.Random(6))
        await room.join("alice")
        alice, bob = Publisher(media), Publisher(late_clip())
        await alice.pc.setRemoteDescription(await room.publish("alice", await alice.offer()))
        try:
            await wait_for(lambda: room.stats.received >= 20, 10, "alice's media at the SFU")
            alices = set(room.publications)
            recorder = Recorder(room, path, reserve=reserve)
            await recorder.start(sorted(alices))
            await wait_for(
                lambda: all(written(recorder).get(k, 0) >= 3 for k in alices), 10, "alice"
            )
            await room.join("bob")
            await bob.pc.setRemoteDescription(await room.publish("bob", await bob.offer()))
            bobs = set(room.publications) - alices
            for key in sorted(bobs):
                await recorder.add(key)
            await wait_for(lambda: len(recorder._refused) == 2, 10, "bob's tracks refused")
            before = {k: written(recorder)[k] for k in alices}
            await asyncio.sleep(1.0)
            assert all(written(recorder)[k] > before[k] for k in alices)  # alice goes on
            return await recorder.stop(), bobs
        finally:
            await room.close()
            await alice.close()
            await bob.close()

    info, bobs = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert set(info.refused) == bobs and all(info.frames[k] == 0 for k in bobs)
    streams = demuxed(path)
    assert sorted((s.type, s.size or (0, 0)) for s in streams.values()) == [
        ("audio", (0, 0)),
        ("video", (160, 120)),
    ]


def test_tracks_are_added_to_the_header_in_place_until_its_reserve_is_full(
    tmp_path: Path,
) -> None:
    """The writer's header region (Tracks + Void) keeps its size as tracks are added, so no
    block moves; what does not fit is refused with the file unchanged; readers see every
    track added, each starting at its first block."""
    media, other = clip(), late_clip()
    path = tmp_path / "grow.webm"
    with path.open("wb") as file:
        writer = webm.WebmWriter(file, [], reserve=200)
        header = file.tell()
        writer.add_track(webm.Track(1, "V_VP8", 160, 120))
        writer.add_track(webm.Track(2, "A_OPUS"))
        assert file.tell() == header  # the region did not grow
        with pytest.raises(ValueError, match="track number 2 is taken"):
            writer.add_track(webm.Track(2, "A_OPUS"))
        for i in range(10):
            writer.write(1, i * 100, media.video[i], i == 0)
            writer.write(2, i * 100, media.audio[i], True)
        writer.add_track(webm.Track(3, "V_VP8", 176, 144))  # a late joiner at 1 s
        with pytest.raises(ValueError, match="no room for track 4 in the file's header"):
            writer.add_track(webm.Track(4, "A_OPUS"))  # 200 bytes hold three entries
        assert writer.tracks == (1, 2, 3)
        for i in range(10, 20):
            writer.write(1, i * 100, media.video[i], False)
            writer.write(3, i * 100, other.video[i - 10], i == 10)
        writer.close()
    streams = demuxed(path)
    assert [(s.type, s.size, len(s.frames)) for s in streams.values()] == [
        ("video", (160, 120), 20),
        ("audio", None, 10),
        ("video", (176, 144), 10),
    ]
    assert streams[2].times == [i / 10 for i in range(10, 20)]
    assert streams[2].frames == list(other.video[:10])
    for bad in (-1, 1):
        with pytest.raises(ValueError, match=f"cannot reserve {bad} bytes"):
            webm.WebmWriter(io.BytesIO(), [], reserve=bad)
    with pytest.raises(ValueError, match="needs a track, or room to add one"):
        webm.WebmWriter(io.BytesIO(), [])
    with pytest.raises(ValueError, match="no Void element is 1 byte long"):
        webm.void(1)
