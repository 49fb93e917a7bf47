"""The other edges this edge may signal with: their verified receiving certificates.

Theory of operation. The core sends every edge the receiving certificates of the other edges
that introduced themselves (``zastava.peer`` items on the ``policy`` stream, the whole set each
time it changes). :func:`replace` verifies each one against this edge's trust store (an edge's
certificate, for receiving, valid now, not revoked) and stores the set in ``edge.db``, in the
transaction of the bundle that brought it; a certificate that fails is skipped with a warning,
the others are kept. :func:`recipient` reads one back and verifies it again (a CRL may have
arrived since): that is what :mod:`edge.signalling` seals a call's signalling envelopes for, so
only the edge holding the matching private key can read them — not the relay, not the core.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3

from cryptography.hazmat.primitives.serialization import Encoding

from pki.names import Purpose, Role
from pki.trust import TrustStore, VerificationError, parse_certificate, verify_node
from sync.bundle.codec import Recipient, to_ms

log = logging.getLogger("zastava.edge.signal")

SCHEMA = """CREATE TABLE IF NOT EXISTS edge_signal_peers (
    site TEXT PRIMARY KEY, certificate BLOB NOT NULL, stored_ms INTEGER NOT NULL)"""


def ensure_schema(conn: sqlite3.Connection) -> None:
    """One statement through ``execute``, so that inside a transaction it stays inside it
    (``executescript`` would commit it first)."""
    conn.execute(SCHEMA)


def replace(
    conn: sqlite3.Connection, certificates: list[bytes], *, trust: TrustStore, now: dt.datetime
) -> list[str]:
    """Store the verified ones of ``certificates`` (DER) as the whole set; their sites."""
    ensure_schema(conn)
    good: dict[str, bytes] = {}
    for der in certificates:
        try:
            v = verify_node(
                parse_certificate(der),
                trust=trust,
                role=Role.EDGE,
                purpose=Purpose.RECEIVING,
                now=now,
            )
        except (VerificationError, ValueError) as e:
            log.warning("a peer edge's receiving certificate was refused: %s", e)
            continue
        good[v.site] = v.certificate.public_bytes(Encoding.DER)
    conn.execute("DELETE FROM edge_signal_peers")
    conn.executemany(
        "INSERT INTO edge_signal_peers VALUES (?, ?, ?)",
        [(site, der, to_ms(now)) for site, der in sorted(good.items())],
    )
    return sorted(good)


def sites(conn: sqlite3.Connection) -> list[str]:
    ensure_schema(conn)
    return [r[0] for r in conn.execute("SELECT site FROM edge_signal_peers ORDER BY site")]


def recipient(
    conn: sqlite3.Connection, site: str, *, trust: TrustStore, now: dt.datetime
) -> Recipient:
    """``site``'s receiving certificate, verified now; LookupError if this edge has none."""
    ensure_schema(conn)
    row = conn.execute("SELECT certificate FROM edge_signal_peers WHERE site=?", (site,)).fetchone()
    if row is None:
        raise LookupError(
            f"no receiving certificate known for plant {site!r}: the core sends them once that "
            "edge has connected"
        )
    try:
        v = verify_node(
            parse_certificate(row[0]),
            trust=trust,
            role=Role.EDGE,
            site=site,
            purpose=Purpose.RECEIVING,
            now=now,
        )
    except VerificationError as e:
        raise LookupError(f"plant {site!r}'s receiving certificate is not valid now: {e}") from None
    return Recipient.from_verified(v)
