"""The SFU's receive statistics equal aiortc's StreamStatistics, packet by packet (the fields
aiortc's RTCP task and getStats read from them)."""

from __future__ import annotations

from unittest import mock

from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sfu.rtpstats import ReceiveStatistics

# (sequence step, timestamp step, arrival step in ms, read the report fields after it)
steps = st.lists(
    st.tuples(
        st.one_of(st.integers(-40, 40), st.integers(-40_000, 40_000)),  # reordering, jumps
        st.integers(-3_000, 9_000),
        st.integers(0, 80),
        st.booleans(),
    ),
    min_size=1,
    max_size=300,
)


def fields(stats: StreamStatistics | ReceiveStatistics) -> tuple[int, ...]:
    return (
        stats.packets_received,
        stats.packets_lost,
        stats.jitter,
        stats.fraction_lost,  # read last: it starts the next interval
        stats.max_seq or 0,
        stats.cycles,
    )


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 0xFFFF), clockrate=st.sampled_from([48_000, 90_000]), path=steps)
def test_the_sfus_receive_statistics_are_aiortcs(
    start: int, clockrate: int, path: list[tuple[int, int, int, bool]]
) -> None:
    theirs, ours = StreamStatistics(clockrate), ReceiveStatistics(clockrate)
    sequence, timestamp, now = start, 1_000_000, 1_000.0
    for seq_step, ts_step, ms, read in path:
        sequence = (sequence + seq_step) & 0xFFFF
        timestamp = (timestamp + ts_step) & 0xFFFFFFFF
        now += ms / 1000
        packet = RtpPacket(sequence_number=sequence, timestamp=timestamp)
        with mock.patch("time.time", return_value=now):  # aiortc reads the wall clock
            theirs.add(packet)
        ours.add(sequence, timestamp, now)
        if read:
            assert fields(ours) == fields(theirs)
    assert fields(ours) == fields(theirs)
