"""Control items every stream relies on: cumulative acknowledgements and heartbeats.

Both travel on the ``control`` stream, which is *latest-wins* (a newer control bundle
supersedes an older one; a missing one is no loss, since each carries the full state):

- ``zastava.ack``: for each stream, the highest seq applied *in order* and that bundle's
  header hash. The sender drops everything up to it from its outbox; a hash that differs
  from what it sent means the streams forked, and is an alarm, not an ack.
- ``zastava.heartbeat``: when it was made and, for each stream, the highest seq the sender
  has sealed for this recipient. A recipient that keeps receiving heartbeats but not the
  bundles they announce is being withheld from; one that stops receiving heartbeats (they
  expire within minutes) is frozen. Both raise alerts (THREATS B5).
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.bundle.wire import Reader, Writer

ACK = "zastava.ack"
HEARTBEAT = "zastava.heartbeat"
CONTROL_STREAM = "control"
MAX_STREAMS = 10_000


@dataclass(frozen=True)
class StreamPosition:
    stream: str
    seq: int
    header_hash: bytes


@dataclass(frozen=True)
class Ack:
    positions: tuple[StreamPosition, ...]

    def __bytes__(self) -> bytes:
        w = Writer().u32(len(self.positions))
        for p in self.positions:
            w.token(p.stream).u64(p.seq).raw(p.header_hash)
        return w.getvalue()

    @classmethod
    def parse(cls, data: bytes) -> Ack:
        r = Reader(data, "ack")
        n = r.u32("count")
        if n > MAX_STREAMS:
            raise ValueError(f"ack: {n} streams exceeds {MAX_STREAMS}")
        out = tuple(
            StreamPosition(r.token("stream"), r.u64("seq"), r.raw(32, "header hash"))
            for _ in range(n)
        )
        r.end()
        return cls(out)


@dataclass(frozen=True)
class Heartbeat:
    sent_ms: int
    sealed: tuple[tuple[str, int], ...]  # (stream, highest seq sealed for this recipient)

    def __bytes__(self) -> bytes:
        w = Writer().u64(self.sent_ms).u32(len(self.sealed))
        for stream, seq in self.sealed:
            w.token(stream).u64(seq)
        return w.getvalue()

    @classmethod
    def parse(cls, data: bytes) -> Heartbeat:
        r = Reader(data, "heartbeat")
        sent = r.u64("sent")
        n = r.u32("count")
        if n > MAX_STREAMS:
            raise ValueError(f"heartbeat: {n} streams exceeds {MAX_STREAMS}")
        sealed = tuple((r.token("stream"), r.u64("seq")) for _ in range(n))
        r.end()
        return cls(sent, sealed)
