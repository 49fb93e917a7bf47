"""The federation in the isolation test bed (issue 8): plants, relay and core in network
namespaces of their own, linked only plant-relay and core-relay (installer/netbed.py).

Real processes in real namespaces: the relay (SSH server and coturn with the configuration
the relay's installer renders), the core and each edge, each started with ``ip netns exec``.
The test process acts as the admin and the plants' applications, as
tests/test_federation_procs.py does (its helpers are reused), and opens sockets inside the
namespaces to prove what a plant can and cannot reach. A raw capture on the relay shows what
crosses it (THREATS.md B15). Needs root, iproute2, procps and coturn.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import secrets
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from installer import netbed
from installer.netbed import PLANTS, RELAY, SSH_PORT, TURN_PORT, Bed, Capture
from pki.keyfile import KdfCost
from sync import turn
from tests.test_federation_procs import Fed, chat_at, eventually, now, texts
from tests.test_turn import TurnClient, TurnError

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]
HOUR = dt.timedelta(hours=1)


def net_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def processes_in(inodes: set[int]) -> list[int]:
    """Every process on this host whose network namespace is one of ``inodes``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if net_inode(f"/proc/{pid}/ns/net") in inodes:
            found.append(int(pid))
    return found


class BedFed(Fed):
    """tests/test_federation_procs.py's federation, each node in its namespace of ``bed``."""

    def __init__(self, bed: Bed, base: Path) -> None:  # not Fed's: that one lays out loopback
        self.bed = bed
        self.net = netbed.run_federation(
            bed, base, interval=0.5, cost=KdfCost(time_cost=1, memory_kib=8 * 1024)
        )
        self.layout = self.net.layout
        self.sup = self.net.supervisor


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BedFed]:
    netbed.require_tools()
    bed = netbed.up(Bed.new())
    inodes = {i for ns in bed.namespaces if (i := net_inode(f"/run/netns/{ns}")) is not None}
    assert len(inodes) == len(bed.namespaces) == 5
    f: BedFed | None = None
    try:
        f = BedFed(bed, tmp_path_factory.mktemp("netbed"))
        for name in f.sup.children:
            f.sup.start(name)
        yield f
    finally:
        if f is not None:
            f.sup.stop_all()
        netbed.down(bed.run_id)
    # Teardown leaves nothing behind: no namespace, no process in one, no child alive.
    assert netbed.existing(f"{netbed.PREFIX}{bed.run_id}-") == []
    assert processes_in(inodes) == []
    assert f is not None and all(
        c.process and c.process.poll() is not None for c in f.sup.children.values()
    )


def connect_from(ns: str, host: str, port: int) -> int:
    """errno of a TCP connect from namespace ``ns`` (0: connected)."""
    with netbed.socket_in(ns) as s:
        s.settimeout(2)
        return s.connect_ex((host, port))


def test_the_links_are_plant_relay_and_core_relay_only(fed: BedFed) -> None:
    bed = fed.bed
    forward = subprocess.run(
        ["ip", "netns", "exec", bed.ns(RELAY), "sysctl", "-n", "net.ipv4.ip_forward"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert forward.stdout.strip() == "0"
    for node in (*PLANTS, "core"):
        routes = subprocess.run(
            ["ip", "-n", bed.ns(node), "-4", "route"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert len(routes) == 1 and routes[0].startswith(f"{bed.relay_address(node)[:-1]}0/24 ")
        assert "default" not in "".join(routes)


def test_a_plant_reaches_the_relays_ssh_and_turn_ports_and_nothing_else(fed: BedFed) -> None:
    bed = fed.bed
    for plant in PLANTS:
        ns = bed.ns(plant)
        others = [bed.address(n) for n in (*PLANTS, "core") if n != plant]
        others += [bed.relay_address(n) for n in (*PLANTS, "core") if n != plant]
        for host in others:  # the other plant, the core, the relay's other links
            assert connect_from(ns, host, SSH_PORT) == errno.ENETUNREACH, (plant, host)
            assert connect_from(ns, host, TURN_PORT) == errno.ENETUNREACH, (plant, host)
        relay = bed.relay_address(plant)
        assert connect_from(ns, relay, SSH_PORT) == 0
        assert connect_from(ns, relay, TURN_PORT) == 0
        # Every other TCP port of the relay refuses (a full scan, in batches).
        accepted, refused = scan(ns, relay)
        assert accepted == {SSH_PORT, TURN_PORT}, plant
        assert refused == 65535 - 2, plant
    # And the core reaches no plant.
    for plant in PLANTS:
        assert connect_from(bed.ns("core"), bed.address(plant), 443) == errno.ENETUNREACH


def scan(ns: str, host: str) -> tuple[set[int], int]:
    """Connect from ``ns`` to every TCP port of ``host``, 512 at a time: the ports that
    accepted, and how many refused (RST). Anything else (a timeout: a silent drop) fails."""
    accepted: set[int] = set()
    refused = 0
    ports = iter(range(1, 65536))
    pending: dict[socket.socket, int] = {}
    sel = selectors.DefaultSelector()
    with netbed.inside(ns):  # every socket made here is plant's
        while True:
            for port in ports:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((host, port))
                pending[s] = port
                sel.register(s, selectors.EVENT_WRITE)
                if len(pending) >= 512:
                    break
            if not pending:
                break
            events = sel.select(timeout=5)
            assert events, f"connects to {host} neither accepted nor refused within 5 s"
            for key, _ in events:
                done = key.fileobj
                assert isinstance(done, socket.socket)
                err = done.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                port = pending.pop(done)
                sel.unregister(done)
                done.close()
                if err == 0:
                    accepted.add(port)
                else:
                    assert err == errno.ECONNREFUSED, (port, os.strerror(err))
                    refused += 1
    sel.close()
    return accepted, refused


def test_a_user_added_at_core_appears_at_both_plants(fed: BedFed) -> None:
    eventually(
        lambda: all("ivanov" in fed.edge_users(s) for s in fed.layout.edges), what="snapshot"
    )
    fed.core("user", "add", "smirnov", "--name", "Смирнов Олег", "--site", "plant-b")
    eventually(
        lambda: all(fed.edge_users(s).get("smirnov") for s in fed.layout.edges),
        what="smirnov at both edges",
    )


def test_a_chat_message_crosses_the_relay_and_no_plaintext_does(fed: BedFed) -> None:
    """B15: the relay's links carry SSH and the plants' messages, never their text."""
    bed = fed.bed
    eventually(lambda: all("sidorov" in fed.edge_users(s) for s in fed.layout.edges))
    marker = f"B15-plaintext-marker-{secrets.token_hex(8)}"
    name = f"Маркер {secrets.token_hex(4)}"
    control = f"B15-control-{secrets.token_hex(8)}".encode()
    capture = Capture(bed.ns(RELAY))
    try:
        chat = chat_at(fed, "plant-a")
        try:
            conv = chat.open_direct("ivanov", "sidorov", now=now())
            chat.post_message("ivanov", conv.id, f"Привет! {marker}", now=now())
        finally:
            chat.close()
        fed.core("user", "add", "marker", "--name", name, "--site", "plant-a")
        got = eventually(lambda: texts(fed, "plant-b", conv.id), what="the message at plant-b")
        assert got == [f"Привет! {marker}"]
        eventually(lambda: fed.edge_users("plant-b").get("marker"), what="the user at plant-b")
        # The positive control: plaintext sent across a link is seen by this capture.
        with netbed.socket_in(bed.ns("plant-a"), socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(control, (bed.relay_address("plant-a"), TURN_PORT))
        time.sleep(0.3)
    finally:
        packets = capture.stop()
    assert capture.drops == 0
    assert any(control in p.data for p in packets), "the capture does not see payloads"
    forbidden = [
        marker.encode(),
        name.encode(),
        name.encode("unicode_escape"),  # as JSON with ensure_ascii would write it
        name.encode("unicode_escape").replace(b"\\u", b"\\\\u"),
    ]
    flows: dict[tuple[str, int, str, int], bytearray] = {}
    ssh_links = set()
    for p in packets:
        assert not any(f in p.data for f in forbidden), p
        seg = p.tcp
        if seg is not None:
            src, sport, dst, dport, payload = seg
            flows.setdefault((src, sport, dst, dport), bytearray()).extend(payload)
            if SSH_PORT in (sport, dport) and payload:
                ssh_links.add(p.interface)
    for flow, stream in flows.items():  # a marker split across segments too
        assert not any(f in stream for f in forbidden), flow
    assert {"to-plant-a", "to-plant-b", "to-plant-c", "to-core"} <= ssh_links, ssh_links


@dataclass
class PlantTurnClient(TurnClient):
    """tests/test_turn.py's client, its socket made in a plant's namespace."""

    netns: str = ""

    def __post_init__(self) -> None:
        self.sock = netbed.socket_in(self.netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.settimeout(3)


def turn_client(fed: BedFed, plant: str, cred: turn.Credential) -> PlantTurnClient:
    server = (fed.bed.relay_address(plant), TURN_PORT)
    return PlantTurnClient(server, cred.username, cred.password, netns=fed.bed.ns(plant))


def test_a_turn_leg_between_the_plants_flows_through_the_relay(fed: BedFed) -> None:
    """Relay-only at both ends, as a bridge leg is: each plant allocates on the relay with a
    credential the relay issued, and the data goes relayed address to relayed address. C3: a
    credential the relay did not sign, or an expired one, gets 401 from each plant's link."""
    secret = turn.load_secret(fed.net.turn.secret_file)
    t = dt.datetime.now(dt.UTC)
    a = turn_client(fed, "plant-a", turn.issue(secret, "leg-1.plant-a", now=t))
    b = turn_client(fed, "plant-b", turn.issue(secret, "leg-1.plant-b", now=t))
    refused_clients = [
        turn_client(fed, plant, turn.issue(turn.new_secret(), f"leg-1.{plant}", now=t))
        for plant in PLANTS
    ]
    old = t - dt.timedelta(hours=2)
    refused_clients.append(
        turn_client(fed, "plant-c", turn.issue(secret, "leg-2.plant-c", now=old, ttl=HOUR))
    )
    try:
        relayed_a, relayed_b = a.allocate(), b.allocate()
        assert relayed_a[0] in fed.bed.turn_addresses and relayed_b[0] in fed.bed.turn_addresses
        a.permit(relayed_b[0])
        b.permit(relayed_a[0])
        a.send(relayed_b, b"srtp a->b")
        assert b.data() == (relayed_a, b"srtp a->b")
        b.send(relayed_a, b"srtp b->a")
        assert a.data() == (relayed_b, b"srtp b->a")
        for forged in refused_clients:  # C3: no credential of the relay's, no leg
            with pytest.raises(TurnError) as refused:
                forged.allocate()
            assert refused.value.code == 401, forged.username
    finally:
        for c in (a, b, *refused_clients):
            c.close()


def test_down_removes_a_crashed_beds_namespaces_and_processes() -> None:
    """A bed whose owner died with processes still inside: ``down`` leaves nothing."""
    bed = netbed.up(Bed.new())
    inodes = {i for ns in bed.namespaces if (i := net_inode(f"/run/netns/{ns}")) is not None}
    procs = [subprocess.Popen(["ip", "netns", "exec", bed.ns(n), "sleep", "600"]) for n in PLANTS]
    try:
        eventually(lambda: len(processes_in(inodes)) == len(PLANTS), what="sleepers in the bed")
        removed = netbed.down(bed.run_id)
        assert sorted(removed) == sorted(bed.namespaces)
        for p in procs:
            assert p.wait(5) == -15  # SIGTERM
        assert netbed.existing(f"{netbed.PREFIX}{bed.run_id}-") == []
        assert processes_in(inodes) == []
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        netbed.down(bed.run_id)
