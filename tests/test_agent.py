"""Sync agents through a real relay (real SSH, real SQLite): exactly once, in order, across
relay restarts and a plant that was offline (issue 5; THREATS B3, B13, B16)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from sync.agent import SyncAgent
from sync.bundle.codec import Item, OpenedBundle
from sync.bundle.store import connect
from sync.relay.audit import RollbackError, log_key_from_certificate
from sync.relay.config import RelayConfig
from sync.relay.server import RelayServer
from sync.transport import RelayClient, TransportError, TransportOptions
from tests.relayfixture import TEST_LIMITS, RelayPKI, utcnow


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RelayPKI:
    return RelayPKI.create(tmp_path_factory.mktemp("pki"))


class Relay:
    """A relay that can be stopped and started again on the same port and data."""

    def __init__(self, pki: RelayPKI, directory: Path) -> None:
        nodes = pki.nodes_dir(directory / "nodes")
        self.config = RelayConfig(
            data_dir=directory / "data",
            node_dir=pki.relay.directory,
            nodes_dir=nodes,
            port=0,
            limits=TEST_LIMITS,
        )
        self.server: RelayServer | None = None
        self.start()

    def start(self) -> None:
        self.server = RelayServer(self.config)
        self.server.start()
        self.config = dataclasses.replace(self.config, port=self.server.port)

    def stop(self) -> None:
        assert self.server is not None
        self.server.stop()
        self.server = None


def events(conn: sqlite3.Connection, opened: OpenedBundle) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS got (origin, stream, seq, body)")
    for item in opened.items:
        h = opened.header
        conn.execute("INSERT INTO got VALUES (?, ?, ?, ?)", (h.origin, h.stream, h.seq, item.data))


def got(conn: sqlite3.Connection) -> list[bytes]:
    conn.execute("CREATE TABLE IF NOT EXISTS got (origin, stream, seq, body)")
    return [r[0] for r in conn.execute("SELECT body FROM got ORDER BY rowid")]


class Node:
    def __init__(self, pki: RelayPKI, site: str, relay: Relay, directory: Path) -> None:
        self.creds = pki.nodes[site]
        self.conn = connect(directory / f"{site}.db")
        self.client = RelayClient(
            "127.0.0.1",
            relay.config.port,
            self.creds,
            pki.relay.tls_chain[0],
            options=TransportOptions(connect_timeout=5.0),
        )
        self.agent = SyncAgent(
            self.conn,
            self.creds,
            self.client,
            {"events": events, "directory": events},
            clock=utcnow,
            relay_log_key=log_key_from_certificate(pki.relay.signing_certificate),
        )

    def close(self) -> None:
        self.client.close()
        self.conn.close()


@pytest.fixture
def federation(pki: RelayPKI, tmp_path: Path) -> Iterator[tuple[Relay, Node, Node]]:
    relay = Relay(pki, tmp_path / "relay")
    a, hq = Node(pki, "plant-a", relay, tmp_path), Node(pki, "hq", relay, tmp_path)
    # The edge is configured with the core's receiving certificate; the core learns the
    # edge's from its hello.
    a.agent.add_peer(hq.creds.receiving_certificate.public_bytes(Encoding.DER), utcnow())
    a.agent.hello("hq", utcnow())
    yield relay, a, hq
    a.close()
    hq.close()
    if relay.server is not None:
        relay.stop()


def settle(*nodes: Node, rounds: int = 4) -> None:
    """Run passes until nothing moves (the guard releases asynchronously)."""
    import time

    for _ in range(rounds):
        for n in nodes:
            try:
                n.agent.sync_once()
            except TransportError:  # a connection the relay's restart cut: next pass reconnects
                pass
        time.sleep(0.15)


def test_edge_to_core_and_back_exactly_once(federation: tuple[Relay, Node, Node]) -> None:
    _, a, hq = federation
    for i in range(5):
        a.agent.send("hq", "events", [Item("event", f"login {i}".encode())], now=utcnow())
    settle(a, hq)
    assert got(hq.conn) == [f"login {i}".encode() for i in range(5)]
    assert hq.agent.peers() == ["plant-a"]  # learned from the hello
    assert a.agent.sender.pending("hq") == []  # acknowledged through control bundles
    hq.agent.send("plant-a", "directory", [Item("directory.changes", b"v2")], now=utcnow())
    settle(hq, a)
    assert got(a.conn) == [b"v2"]
    # Nothing is applied twice however often the agents pass.
    settle(a, hq)
    assert len(got(hq.conn)) == 5 and got(a.conn) == [b"v2"]


def test_relay_restart_mid_flow_loses_and_duplicates_nothing(
    federation: tuple[Relay, Node, Node],
) -> None:
    relay, a, hq = federation
    for i in range(10):
        a.agent.send("hq", "events", [Item("event", f"e{i}".encode())], now=utcnow())
    a.agent.sync_once()  # uploads all ten
    relay.stop()
    with pytest.raises(TransportError):
        hq.agent.sync_once()
    for i in range(10, 15):  # the plant keeps working while the relay is down
        a.agent.send("hq", "events", [Item("event", f"e{i}".encode())], now=utcnow())
    relay.start()
    settle(a, hq, rounds=6)
    assert got(hq.conn) == [f"e{i}".encode() for i in range(15)]
    assert a.agent.sender.pending("hq") == []


def test_a_plant_offline_for_many_bundles_catches_up_in_order(
    federation: tuple[Relay, Node, Node],
) -> None:
    relay, a, hq = federation
    settle(a, hq)
    relay.stop()
    for i in range(60):
        a.agent.send("hq", "events", [Item("event", b"offline %d" % i)], now=utcnow())
        with pytest.raises(TransportError):
            a.agent.sync_once()
    relay.start()
    settle(a, hq, rounds=6)
    assert got(hq.conn) == [b"offline %d" % i for i in range(60)]


def test_each_new_session_checks_the_relay_log_and_a_wiped_log_is_caught(
    federation: tuple[Relay, Node, Node],
) -> None:
    """Edges and core keep the last checkpoint they accepted and check consistency every
    time they connect; a relay whose log was rolled back (here: wiped) is refused."""
    relay, a, hq = federation
    a.agent.send("hq", "events", [Item("event", b"x")], now=utcnow())
    settle(a, hq)
    stored = a.conn.execute("SELECT value FROM zs_agent WHERE key='relay-witness'").fetchone()
    assert stored is not None and "zastava-relay/dmz" in stored[0]
    relay.stop()
    relay.start()  # same log: the reconnecting agents check it and carry on
    settle(a, hq)
    relay.stop()
    for f in relay.config.data_dir.glob("audit.db*"):
        f.unlink()
    relay.start()
    with pytest.raises(RollbackError, match="rollback"):
        for _ in range(3):  # the first pass may only notice the old session is gone
            try:
                a.agent.sync_once()
            except TransportError:
                continue
    alerts = a.conn.execute("SELECT kind FROM zs_alert WHERE origin='relay'").fetchall()
    assert ("audit-log",) in alerts


def test_large_transfers_show_progress(caplog: pytest.LogCaptureFixture) -> None:
    from sync.agent import _ProgressLog

    caplog.set_level("INFO", logger="zastava.sync")
    small = _ProgressLog("upload to hq")
    small(1, 100)
    small(100, 100)
    assert caplog.text == ""
    big = _ProgressLog("upload to hq")
    total = 64 * 2**20
    for done in range(0, total + 1, 2**20):
        big(done, total)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "upload to hq: 16 of 64 MiB (25%)",
        "upload to hq: 32 of 64 MiB (50%)",
        "upload to hq: 48 of 64 MiB (75%)",
        "upload to hq: 64 of 64 MiB (100%)",
    ]
