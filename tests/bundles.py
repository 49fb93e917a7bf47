"""A small federation for bundle tests: CA, two plants, a core, a relay, and a foreign node."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from pki.names import Purpose, Role
from pki.node import NodeCredentials
from pki.trust import verify_node
from sync.bundle.codec import Item, Recipient, Signer, seal
from tests.conftest import NOW, enroll_node, make_ca


@dataclass
class Federation:
    a: NodeCredentials  # edge plant-a
    b: NodeCredentials  # edge plant-b
    hq: NodeCredentials  # core
    relay: NodeCredentials
    foreign: NodeCredentials  # edge plant-a under another CA
    ca_dir: Path

    @staticmethod
    def build(base: Path) -> Federation:
        ca = make_ca(base / "ca")
        other = make_ca(base / "foreign-ca")
        return Federation(
            a=enroll_node(ca, base / "a", Role.EDGE, "plant-a"),
            b=enroll_node(ca, base / "b", Role.EDGE, "plant-b"),
            hq=enroll_node(ca, base / "hq", Role.CORE, "hq"),
            relay=enroll_node(ca, base / "relay", Role.RELAY, "dmz"),
            foreign=enroll_node(other, base / "foreign", Role.EDGE, "plant-a"),
            ca_dir=base / "ca",
        )


def signer(creds: NodeCredentials) -> Signer:
    return Signer(creds.name.site, creds.keys.signing, creds.signing_certificate)


def recipient(
    of: NodeCredentials, seen_by: NodeCredentials | None = None, now: dt.datetime = NOW
) -> Recipient:
    """``of``'s receiving key, as ``seen_by`` verifies it (by default, ``of`` itself)."""
    v = verify_node(
        of.receiving_certificate,
        trust=(seen_by or of).trust,
        role=set(Role),
        purpose=Purpose.RECEIVING,
        now=now,
    )
    return Recipient.from_verified(v)


def seal_simple(
    sender: NodeCredentials,
    to: NodeCredentials,
    items: list[Item] | None = None,
    *,
    stream: str = "events",
    seq: int = 1,
    prev: bytes = bytes(32),
    now: dt.datetime = NOW,
    ttl: dt.timedelta = dt.timedelta(days=7),
    chunk_size: int = 64 * 1024,
) -> bytes:
    return seal(
        items if items is not None else [Item("chat.message", b"hello from the plant")],
        signer=signer(sender),
        recipient=recipient(to, None, now),
        stream=stream,
        seq=seq,
        prev=prev,
        now=now,
        ttl=ttl,
        chunk_size=chunk_size,
    )
