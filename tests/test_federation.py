"""Core and two plants through a real relay: the directory flows out (snapshot, then
changes; a disabled user everywhere, A7), events flow in once each (issue 5)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from core.directory import Directory
from core.federation import CoreFederation
from edge.directory import EdgeDirectory
from sync.agent import SyncAgent
from sync.bundle.codec import Item
from sync.bundle.store import connect
from sync.directory import Site, User, edge_state
from sync.events import event_kind
from sync.relay.audit import log_key_from_certificate
from sync.transport import RelayClient, TransportError, TransportOptions
from tests.relayfixture import RelayPKI, utcnow
from tests.test_agent import Relay


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RelayPKI:
    return RelayPKI.create(tmp_path_factory.mktemp("pki"))


class Plant:
    def __init__(self, pki: RelayPKI, site: str, relay: Relay, base: Path) -> None:
        self.creds = pki.nodes[site]
        self.conn = connect(base / f"{site}.db")
        self.client = RelayClient(
            "127.0.0.1",
            relay.config.port,
            self.creds,
            pki.relay.tls_chain[0],
            options=TransportOptions(connect_timeout=5.0),
        )
        self.ended: list[str] = []
        self.directory = EdgeDirectory(site, on_disabled=lambda c, ls: self.ended.extend(ls))
        self.agent = SyncAgent(
            self.conn,
            self.creds,
            self.client,
            {"directory": self.directory.apply},
            clock=utcnow,
            relay_log_key=log_key_from_certificate(pki.relay.signing_certificate),
        )
        core_cert = pki.nodes["hq"].receiving_certificate.public_bytes(Encoding.DER)
        self.agent.add_peer(core_cert, utcnow())
        self.agent.hello("hq", utcnow())

    def users(self) -> dict[str, bool]:
        return {r[0]: bool(r[1]) for r in self.conn.execute("SELECT login, enabled FROM zd_users")}

    def close(self) -> None:
        self.client.close()
        self.conn.close()


class Core:
    def __init__(self, pki: RelayPKI, relay: Relay, base: Path) -> None:
        self.directory = Directory.open(base / "core.db", clock=utcnow)
        self.conn = connect(base / "core-sync.db")
        self.client = RelayClient(
            "127.0.0.1",
            relay.config.port,
            pki.nodes["hq"],
            pki.relay.tls_chain[0],
            options=TransportOptions(connect_timeout=5.0),
        )
        self.federation = CoreFederation(
            self.directory,
            self.conn,
            pki.nodes["hq"],
            self.client,
            clock=utcnow,
            relay_log_key=log_key_from_certificate(pki.relay.signing_certificate),
        )

    def close(self) -> None:
        self.client.close()
        self.conn.close()
        self.directory.close()


@pytest.fixture
def federation(pki: RelayPKI, tmp_path: Path) -> Iterator[tuple[Relay, Core, Plant, Plant]]:
    relay = Relay(pki, tmp_path / "relay")
    core = Core(pki, relay, tmp_path)
    a, b = Plant(pki, "plant-a", relay, tmp_path), Plant(pki, "plant-b", relay, tmp_path)
    yield relay, core, a, b
    for n in (a, b, core):
        n.close()
    relay.stop()


def settle(core: Core, *plants: Plant, rounds: int = 5) -> None:
    for _ in range(rounds):
        for step in [p.agent.sync_once for p in plants] + [core.federation.sync_once]:
            try:
                step()
            except TransportError:
                pass
        time.sleep(0.1)


def person(login: str, site: str, **kw: object) -> User:
    return User(login=login, display_name=f"{login.title()} Тестов", site=site, **kw)  # type: ignore[arg-type]


def test_directory_reaches_both_plants_and_a_disabled_user_everywhere(
    federation: tuple[Relay, Core, Plant, Plant],
) -> None:
    _, core, a, b = federation
    core.directory.add_site(Site("plant-a", "Завод А"))
    core.directory.add_site(Site("plant-b", "Завод Б"))
    core.directory.add_user(person("ivanov", "plant-a"))
    core.directory.add_user(person("petrov", "plant-b"))
    settle(core, a, b)
    assert a.users() == b.users() == {"ivanov": True, "petrov": True}
    version = core.directory.version
    state = edge_state(a.conn)
    assert state is not None and state.version == version
    # A user added later reaches both as a change set, not a new snapshot.
    core.directory.add_user(person("sidorov", "plant-a"))
    core.directory.set_enabled("ivanov", False)
    settle(core, a, b)
    assert a.users() == b.users() == {"ivanov": False, "petrov": True, "sidorov": True}
    # A7: the disabled user's sessions end on both plants as the change lands.
    assert a.ended == ["ivanov"] and b.ended == ["ivanov"]


def test_events_from_both_plants_arrive_once_each(
    federation: tuple[Relay, Core, Plant, Plant],
) -> None:
    _, core, a, b = federation
    settle(core, a, b)  # hellos: the core learns both plants
    for plant in (a, b):
        for i in range(5):
            plant.agent.send(
                "hq",
                "events",
                [Item(event_kind("login"), f"{plant.creds.name.site} {i}".encode())],
                now=utcnow(),
            )
    settle(core, a, b)
    settle(core, a, b)  # more passes change nothing
    got = sorted(d.decode() for _, _, _, d in core.federation.events())
    assert got == sorted(f"{s} {i}" for s in ("plant-a", "plant-b") for i in range(5))
    assert a.agent.sender.pending("hq") == [] and b.agent.sender.pending("hq") == []


def test_acknowledgements_are_not_acknowledged(
    federation: tuple[Relay, Core, Plant, Plant],
) -> None:
    """A control bundle (acks, heartbeat) never triggers one back: with a doorbell, two nodes
    answering each other's acks would exchange bundles for ever (found by bench/federation.py).
    """
    _, core, a, b = federation
    settle(core, a, b)
    a.agent.send("hq", "events", [Item(event_kind("login"), b"x")], now=utcnow())
    settle(core, a, b, rounds=3)  # delivered, acknowledged, the ack received
    quiet = []
    for _ in range(3):
        for step in (a.agent.sync_once, b.agent.sync_once, core.federation.sync_once):
            quiet.append(step().controls)
        time.sleep(0.1)
    assert quiet == [[]] * 9
