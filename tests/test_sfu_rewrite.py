"""Sequence/timestamp rewriting of one slot across keyframe waits and publisher switches."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sfu.rewrite import SlotPhase, Source, StreamRewriter

VIDEO = 90_000


def video(key: str) -> Source:
    return Source(key, True, VIDEO)


def test_first_source_starts_at_the_initial_numbers_on_a_keyframe() -> None:
    a = video("a")
    rewriter = StreamRewriter(VIDEO, initial_sequence=100, initial_timestamp=5000)
    assert rewriter.phase is SlotPhase.IDLE
    rewriter.switch(a)
    assert rewriter.phase is SlotPhase.WAITING_KEYFRAME
    assert rewriter.rewrite(a, 40_000, 7, keyframe=False, now=0.0) is None
    assert rewriter.rewrite(a, 40_001, 3007, keyframe=True, now=0.03) == (100, 5000)
    assert rewriter.phase is SlotPhase.FORWARDING
    assert rewriter.rewrite(a, 40_002, 3007, keyframe=False, now=0.03) == (101, 5000)
    # a late packet from before the keyframe is dropped, not mapped onto 99
    assert rewriter.rewrite(a, 40_000, 7, keyframe=False, now=0.04) is None
    assert rewriter.source_sequence(101) == 40_002
    assert rewriter.source_sequence(99) is None
    assert rewriter.source_sequence(102) is None


def test_switch_is_make_before_break_and_continuous() -> None:
    a, b = video("a"), video("b")
    rewriter = StreamRewriter(VIDEO, 65_534, 0xFFFF_FF00)
    rewriter.switch(a)
    assert rewriter.rewrite(a, 10, 1000, True, 0.0) == (65_534, 0xFFFF_FF00)
    rewriter.switch(b)
    assert rewriter.phase is SlotPhase.SWITCHING
    # a keeps flowing until b's keyframe
    assert rewriter.rewrite(a, 11, 4000, False, 0.033) == (
        65_535,
        (0xFFFF_FF00 + 3000) & 0xFFFFFFFF,
    )
    assert rewriter.rewrite(b, 500, 77, False, 0.040) is None
    out = rewriter.rewrite(b, 501, 3077, True, 0.100)
    assert out is not None
    assert out[0] == 0  # 65535 + 1, wrapped
    step = round((0.100 - 0.033) * VIDEO)
    assert out[1] == (0xFFFF_FF00 + 3000 + step) & 0xFFFFFFFF
    assert rewriter.rewrite(a, 12, 7000, False, 0.1) is None  # a is gone
    assert rewriter.output_timestamp(a, 7000) is None
    assert rewriter.output_timestamp(b, 3077) == out[1]


def test_audio_switches_without_a_keyframe() -> None:
    a, b = Source("a", False, 48_000), Source("b", False, 48_000)
    rewriter = StreamRewriter(48_000, 0, 0)
    rewriter.switch(a)
    assert rewriter.rewrite(a, 9, 960, False, 0.0) == (0, 0)
    rewriter.switch(b)
    assert rewriter.rewrite(b, 1000, 123, False, 0.020) == (1, 960)


def test_clock_rate_mismatch_is_refused() -> None:
    rewriter = StreamRewriter(VIDEO, 0, 0)
    with pytest.raises(ValueError, match="runs at 48000 Hz, the slot at 90000 Hz"):
        rewriter.switch(Source("opus", False, 48_000))


def test_drop_keeps_a_pending_source() -> None:
    a, b = video("a"), video("b")
    rewriter = StreamRewriter(VIDEO, 0, 0)
    rewriter.switch(a)
    rewriter.rewrite(a, 1, 1, True, 0.0)
    rewriter.switch(b)
    rewriter.drop(a)
    assert rewriter.phase is SlotPhase.WAITING_KEYFRAME
    assert rewriter.rewrite(b, 7, 7, True, 1.0) == (1, VIDEO)


# -- properties -----------------------------------------------------------------------------


@dataclass
class Upstream:
    source: Source
    sequence: int
    timestamp: int
    sent: list[tuple[int, int, bool]]


step_strategy = st.one_of(
    st.tuples(st.just("switch"), st.integers(0, 2)),
    st.tuples(
        st.just("packets"),
        st.integers(0, 2),
        st.integers(1, 40),  # how many
        st.integers(0, 3),  # gap after each (publisher-side loss)
        st.integers(1, 10),  # keyframe every n packets
    ),
    st.tuples(st.just("wait"), st.floats(0.0, 5.0)),
    st.tuples(st.just("repeat"), st.integers(0, 2), st.integers(0, 60)),
)


@settings(max_examples=300, deadline=None)
@given(
    starts=st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.booleans()),
        min_size=3,
        max_size=3,
    ),
    initial=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)),
    steps=st.lists(step_strategy, max_size=40),
)
def test_output_is_continuous_across_switches(
    starts: list[tuple[int, int, bool]],
    initial: tuple[int, int],
    steps: list[tuple],  # type: ignore[type-arg]
) -> None:
    upstreams = [
        Upstream(Source(f"s{i}", is_video, VIDEO), seq, ts, [])
        for i, (seq, ts, is_video) in enumerate(starts)
    ]
    rewriter = StreamRewriter(VIDEO, *initial)
    now = 0.0
    last: tuple[int, int, Source, int, int] | None = None  # out seq, out ts, source, in seq, ts
    mapping: dict[tuple[str, int], tuple[int, int]] = {}
    for step in steps:
        if step[0] == "switch":
            rewriter.switch(upstreams[step[1]].source)
        elif step[0] == "wait":
            now += step[1]
        elif step[0] == "repeat":  # a retransmission of an earlier packet maps the same way
            up = upstreams[step[1]]
            if up.sent and up.source is rewriter.current:
                seq, ts, keyframe = up.sent[-1 - step[2] % len(up.sent)]
                again = rewriter.rewrite(up.source, seq, ts, keyframe, now)
                # mapped the same way as the first time, or dropped if before this stint
                assert again is None or again == mapping[(up.source.key, seq)]
        else:
            _, index, count, gap, keyframe_every = step
            up = upstreams[index]
            for n in range(count):
                keyframe = n % keyframe_every == 0
                seq, ts = up.sequence, up.timestamp
                up.sent.append((seq, ts, keyframe))
                was_current = rewriter.current is up.source
                out = rewriter.rewrite(up.source, seq, ts, keyframe, now)
                if out is not None:
                    if not was_current and up.source.video:
                        assert keyframe, "a video source must start on a keyframe"
                    if last is not None:
                        d_seq = (out[0] - last[0]) & 0xFFFF
                        d_ts = (out[1] - last[1]) & 0xFFFFFFFF
                        if last[2] is up.source and was_current:
                            assert d_seq == (seq - last[3]) & 0xFFFF
                            assert d_ts == (ts - last[4]) & 0xFFFFFFFF
                        else:
                            assert d_seq == 1, "a switch must not leave a sequence gap"
                            assert 1 <= d_ts < 1 << 31, "timestamps must move forward"
                    else:
                        assert out == (initial[0], initial[1])
                    assert rewriter.source_sequence(out[0]) == seq
                    mapping[(up.source.key, seq)] = out
                    last = (out[0], out[1], up.source, seq, ts)
                up.sequence = (seq + 1 + gap) & 0xFFFF
                up.timestamp = (ts + 3000) & 0xFFFFFFFF
                now += 0.01
