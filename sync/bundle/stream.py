"""Stream state: the sans-IO rules that make delivery exactly-once and in order.

A stream is one (origin, recipient, stream name) sequence. The receiver remembers the last
seq it applied and that bundle's header hash; an incoming header is then exactly one of:

- the next (``seq = last + 1`` and ``prev`` = last hash): apply it;
- a duplicate of one already applied (same seq, same header hash): no effect, ack again;
- a replay or rollback (``seq <= last`` with another hash): refused (THREATS B3, B4);
- a fork (next seq, but ``prev`` names another bundle): refused;
- ahead (``seq > last + 1``): held until the gap closes, and the gap reported (B16).

*Latest-wins* streams (the control stream) accept any seq above the last one, gaps and
all, since each bundle there carries a full state and supersedes the one before.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sync.bundle.header import BundleHeader


class Mode(enum.Enum):
    ORDERED = "ordered"
    LATEST = "latest"


class Disposition(enum.Enum):
    APPLY = "apply"
    DUPLICATE = "duplicate"
    REPLAY = "replay"
    FORK = "fork"
    GAP = "gap"


@dataclass(frozen=True)
class InboundState:
    """What a receiver has applied on one stream. A new stream starts at seq 0."""

    last_seq: int = 0
    last_hash: bytes = bytes(32)


@dataclass(frozen=True)
class Decision:
    disposition: Disposition
    reason: str
    missing: tuple[int, int] | None = None  # inclusive range of seqs not yet received


def classify(
    state: InboundState,
    header: BundleHeader,
    *,
    mode: Mode,
    applied_hash: bytes | None,
) -> Decision:
    """Decide what to do with ``header``. ``applied_hash`` is the hash recorded for
    ``header.seq`` if that seq was applied before (the caller looks it up)."""
    seq, last = header.seq, state.last_seq
    if seq <= last:
        if applied_hash is not None and applied_hash == header.header_hash:
            return Decision(Disposition.DUPLICATE, f"seq {seq} was already applied")
        return Decision(
            Disposition.REPLAY,
            f"seq {seq} is not after the last applied seq {last}: replay or rollback",
        )
    if mode is Mode.LATEST:
        return Decision(Disposition.APPLY, "newer state")
    if seq > last + 1:
        return Decision(
            Disposition.GAP, f"seq {seq} arrived before {last + 1}; holding it", (last + 1, seq - 1)
        )
    if header.prev != state.last_hash:
        return Decision(
            Disposition.FORK,
            f"prev of seq {seq} does not name the bundle applied as seq {last}: stream forked",
        )
    return Decision(Disposition.APPLY, "next in sequence")
