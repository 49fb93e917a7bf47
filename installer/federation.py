"""A federation laid out on one machine: trust, node configurations, a seeded directory.

The demo and the multi-process tests build the same thing: a CA; core, relay and two plants
(``plant-a``, ``plant-b``) enrolled through the request → sign → import round trip an admin
performs, each key checked by the verification API every node uses; then one configuration
file per node (``relay.toml``, ``core.toml``, ``edge-<site>.toml``) with free loopback ports,
and the public certificates each node pins copied beside them (the relay's TLS and signing
certificates, the core's receiving certificate). Nothing here runs a node:
:func:`supervise` registers each one with the supervisor, which starts it as its own
``zastava ... serve`` process.

By default every node runs here, on loopback. A :class:`Placement` per node puts it
elsewhere: in a network namespace (``ip netns exec``), listening on an address of that
namespace, reaching the relay at the relay's address on its link. The isolation test bed
(installer/netbed.py) places each node in a namespace of its own that way.

Layout under ``base``::

    ca/  ca-passphrase.txt       the demo CA (its passphrase file is 0600)
    nodes/<role>-<site>/         each node's keys, certificates and trust store
    public/                      certificates the nodes pin (no private keys)
    relay.toml relay-data/ relay-nodes/
    core.toml  core-data/        the master directory and the core's sync state
    edge-<site>.toml <site>-data/
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import secrets
import shutil
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from core.directory import Directory
from installer.supervisor import Supervisor
from pki.ca import CaPaths, IssuingCA, init_ca
from pki.keyfile import KdfCost, write_private, write_public
from pki.names import NodeName, Purpose, Role
from pki.node import NodeCredentials, create_request, import_bundle
from pki.trust import fingerprint, verify_node
from sync.directory import Site, User, UserRole

NODES = (
    NodeName(Role.CORE, "hq"),
    NodeName(Role.RELAY, "dmz"),
    NodeName(Role.EDGE, "plant-a"),
    NodeName(Role.EDGE, "plant-b"),
)


@dataclass(frozen=True)
class DemoNode:
    name: NodeName
    directory: Path
    tls_fingerprint: str


def build_federation(
    base: Path,
    now: dt.datetime,
    cost: KdfCost | None = None,
    *,
    ip_addresses: Mapping[str, Sequence[str]] | None = None,
    names: Sequence[NodeName] = NODES,
) -> tuple[str, list[DemoNode]]:
    """Create the demo CA and enroll every node of ``names`` (the demo's :data:`NODES` by
    default) under ``base``, reusing what exists.

    ``ip_addresses`` (site -> addresses) go into that node's TLS certificate beside
    ``localhost`` when it is enrolled: the relay's TURN server takes an edge as a peer only
    by the addresses its certificate names. Returns the root fingerprint and the enrolled nodes.
    """
    steps = len(names) + 1
    paths = CaPaths.of(base / "ca")
    pw_file = base / "ca-passphrase.txt"
    if not paths.issuing_key.exists():
        write_private(pw_file, (secrets.token_urlsafe(24) + "\n").encode())
        print(
            f"[1/{steps}] creating the demo CA in {paths.ca_dir} (its passphrase is in "
            f"{pw_file}, mode 0600; Argon2id takes a few seconds)",
            flush=True,
        )
        passphrase = pw_file.read_text().strip().encode()
        init_ca(
            paths,
            organization="Zastava Demo",
            root_passphrase=passphrase,
            issuing_passphrase=passphrase,
            now=now,
            cost=cost,
        )
    else:
        print(f"[1/{steps}] reusing the demo CA in {paths.ca_dir}", flush=True)
    ca: IssuingCA | None = None
    nodes = []
    for step, name in enumerate(names, start=2):
        node_dir = base / "nodes" / f"{name.role.value}-{name.site}"
        if not (node_dir / "certs" / "tls.pem").exists():
            print(f"[{step}/{steps}] enrolling {name.uri}: request, sign, import", flush=True)
            ca = ca or IssuingCA.open(paths, pw_file.read_text().strip().encode())
            ips = tuple(ipaddress.ip_address(a) for a in (ip_addresses or {}).get(name.site, ()))
            request = create_request(node_dir, name, dns_names=("localhost",), ip_addresses=ips)
            bundle = ca.sign_request(request, expect=name, now=now)
            import_bundle(node_dir, bundle, now=now, root_fingerprint=fingerprint(ca.root))
        else:
            print(f"[{step}/{steps}] {name.uri} already enrolled", flush=True)
        creds = NodeCredentials.load(node_dir)
        for purpose, cert in (
            (Purpose.TLS, creds.tls_chain),
            (Purpose.SIGNING, (creds.signing_certificate,)),
            (Purpose.RECEIVING, (creds.receiving_certificate,)),
        ):
            verify_node(
                list(cert),
                trust=creds.trust,
                role=name.role,
                site=name.site,
                purpose=purpose,
                now=now,
            )
        nodes.append(DemoNode(name, node_dir, fingerprint(creds.tls_chain[0])))
    root = creds.trust.roots[0]
    return fingerprint(root), nodes


EPHEMERAL_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(taken: set[int] | None = None) -> int:
    """A TCP port free on loopback right now (the node binds it a moment later), chosen at
    random *below* the kernel's ephemeral range: the kernel never hands such a port to a
    ``bind(0)`` or an outgoing connection, so a node that is stopped and started again (the
    relay killed in a test, a restarted demo) finds its port still free, whatever else runs
    on the machine meanwhile. Not one of ``taken`` (ports chosen already for nodes that have
    not bound them yet), to which the port is added."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        if taken is not None and port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if taken is not None:
            taken.add(port)
        return port
    raise RuntimeError(f"no free TCP port found below {low} on 127.0.0.1")


@dataclass(frozen=True)
class EdgePorts:
    https: int
    device: int


@dataclass(frozen=True)
class Placement:
    """Where one node runs: in network namespace ``netns`` (None: where the caller runs),
    listening on ``host``, reaching the relay at ``relay_host``."""

    netns: str | None = None
    host: str = "127.0.0.1"
    relay_host: str = "127.0.0.1"


LOOPBACK = Placement()


@dataclass(frozen=True)
class Layout:
    base: Path
    root_fingerprint: str
    nodes: tuple[DemoNode, ...]
    relay_port: int
    edge_ports: dict[str, EdgePorts]
    # "relay", "core" or an edge's site -> where it runs; a node not named runs on loopback
    placements: dict[str, Placement] = field(default_factory=dict)

    def placement(self, node: str) -> Placement:
        return self.placements.get(node, LOOPBACK)

    def node(self, role: Role, site: str | None = None) -> DemoNode:
        return next(
            n for n in self.nodes if n.name.role is role and (site is None or n.name.site == site)
        )

    @property
    def edges(self) -> list[str]:
        return [n.name.site for n in self.nodes if n.name.role is Role.EDGE]

    @property
    def relay_toml(self) -> Path:
        return self.base / "relay.toml"

    @property
    def core_toml(self) -> Path:
        return self.base / "core.toml"

    @property
    def directory_db(self) -> Path:
        return self.base / "core-data" / "directory.db"

    def edge_toml(self, site: str) -> Path:
        return self.base / f"edge-{site}.toml"

    def edge_db(self, site: str) -> Path:
        return self.base / f"{site}-data" / "edge.db"

    def url(self, site: str) -> str:
        host = self.placement(site).host
        name = "localhost" if host == "127.0.0.1" else host
        return f"https://{name}:{self.edge_ports[site].https}/"


def write_layout(
    base: Path,
    root_fingerprint: str,
    nodes: list[DemoNode],
    *,
    relay_port: int = 0,
    interval: float = 2.0,
    placements: Mapping[str, Placement] | None = None,
) -> Layout:
    """Write every node's configuration under ``base``, with free ports where none is given.

    Ports already in the files are kept, so running the demo again keeps its URLs. Each node
    listens and reaches the relay where its placement says (loopback when it has none).
    """
    old = _ports_in(base)
    # every port distinct: none is bound before the nodes start, so free_port alone would
    # find a port it had just chosen for another node free again (CI: two edges' device
    # listeners on one port, and the second edge did not start)
    taken = {*old.values(), relay_port}
    relay_port = relay_port or old.get("relay") or free_port(taken)
    edge_ports = {
        n.name.site: EdgePorts(
            old.get(f"{n.name.site}.https") or free_port(taken),
            old.get(f"{n.name.site}.device") or free_port(taken),
        )
        for n in nodes
        if n.name.role is Role.EDGE
    }
    layout = Layout(
        base, root_fingerprint, tuple(nodes), relay_port, edge_ports, dict(placements or {})
    )
    relay = layout.node(Role.RELAY)
    core = layout.node(Role.CORE)
    public = base / "public"
    public.mkdir(parents=True, exist_ok=True)
    relay_creds = NodeCredentials.load(relay.directory)
    core_creds = NodeCredentials.load(core.directory)
    write_public(public / "relay-tls.pem", _pem(relay_creds.tls_chain[0]))
    write_public(public / "relay-signing.pem", _pem(relay_creds.signing_certificate))
    write_public(public / "core-receiving.pem", _pem(core_creds.receiving_certificate))

    nodes_dir = base / "relay-nodes"
    nodes_dir.mkdir(parents=True, exist_ok=True)
    for n in nodes:
        if n.name.role is not Role.RELAY:
            shutil.copyfile(n.directory / "certs" / "tls.pem", nodes_dir / f"{n.name.site}.pem")
    _write(
        layout.relay_toml,
        f"""\
data_dir = "relay-data"
node_dir = "{relay.directory}"
nodes_dir = "relay-nodes"
listen = "{layout.placement("relay").host}:{relay_port}"
""",
    )

    def relay_section(node: str) -> str:
        return f"""\
[relay]
address = "{layout.placement(node).relay_host}:{relay_port}"
certificate = "public/relay-tls.pem"
log_certificate = "public/relay-signing.pem"
interval_seconds = {interval}
"""

    _write(
        layout.core_toml,
        f"""\
[core]
db = "core-data/directory.db"
data_dir = "core-data"
node_dir = "{core.directory}"
crl = "ca/crl.pem"

{relay_section("core")}""",
    )
    for site, ports in edge_ports.items():
        _write(
            layout.edge_toml(site),
            f"""\
[edge]
site = "{site}"
data_dir = "{site}-data"
node_dir = "{layout.node(Role.EDGE, site).directory}"
listen = "{layout.placement(site).host}:{ports.https}"
device_listen = "{layout.placement(site).host}:{ports.device}"

{relay_section(site)}core_certificate = "public/core-receiving.pem"
""",
        )
    return layout


def supervise(layout: Layout) -> Supervisor:
    """Every node of ``layout`` as a child process, registered, none started: ``relay``,
    ``core`` and ``edge-<site>``, each ready when its ``serve`` command says so, each in
    the network namespace of its placement."""
    sup = Supervisor(layout.base / "logs")
    sup.add(
        "relay",
        ["relay", "serve", "--config", str(layout.relay_toml)],
        ready="serving on",
        netns=layout.placement("relay").netns,
    )
    sup.add(
        "core",
        ["core", "serve", "--config", str(layout.core_toml)],
        ready="serving;",
        netns=layout.placement("core").netns,
    )
    for site in layout.edges:
        sup.add(
            edge_child(site),
            ["edge", "serve", "--config", str(layout.edge_toml(site))],
            ready="federation: running",
            netns=layout.placement(site).netns,
        )
    return sup


def edge_child(site: str) -> str:
    """The supervisor's name for ``site``'s edge process."""
    return f"edge-{site}"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


def _write(path: Path, text: str) -> None:
    write_public(path, text.encode())


def _ports_in(base: Path) -> dict[str, int]:
    """The ports an earlier run wrote, so that URLs stay the same."""
    ports: dict[str, int] = {}
    try:
        relay = tomllib.loads((base / "relay.toml").read_text())
        ports["relay"] = int(str(relay["listen"]).rpartition(":")[2])
        for toml in base.glob("edge-*.toml"):
            edge = tomllib.loads(toml.read_text())["edge"]
            site = edge["site"]
            ports[f"{site}.https"] = int(str(edge["listen"]).rpartition(":")[2])
            ports[f"{site}.device"] = int(str(edge["device_listen"]).rpartition(":")[2])
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError):
        return {}
    return ports


DEMO_SITES = (
    Site("hq", "Головной офис"),
    Site("plant-a", "Завод А"),
    Site("plant-b", "Завод Б"),
)
DEMO_USERS = (
    User("ivanov", "Иванов Иван Петрович", "plant-a", "Цех 1", ("+7 812 555-01-01",)),
    User("petrova", "Петрова Анна Сергеевна", "plant-a", "Лаборатория", ("+7 812 555-01-02",)),
    User("sidorov", "Сидоров Пётр Ильич", "plant-b", "Цех 4", ("+7 843 555-02-01",)),
    User("kuznetsova", "Кузнецова Мария Олеговна", "plant-b", "ОТК", ("+7 843 555-02-02",)),
    User("admin.a", "Администратор А", "plant-a", "ИТ", roles=(UserRole.USER, UserRole.ADMIN)),
    User(
        "officer",
        "Офицер безопасности",
        "hq",
        "Служба безопасности",
        roles=(UserRole.USER, UserRole.SECURITY_OFFICER),
    ),
)


def seed_directory(
    layout: Layout,
    now: Callable[[], dt.datetime],
    sites: Sequence[Site] = DEMO_SITES,
    users: Sequence[User] = DEMO_USERS,
) -> list[User]:
    """Create the master directory with ``sites`` and ``users`` (the demo's by default;
    idempotent)."""
    layout.directory_db.parent.mkdir(parents=True, exist_ok=True)
    with Directory.open(layout.directory_db, clock=now) as d:
        for site in sites:
            d.add_site(site)
        for user in users:
            d.add_user(user)
    return list(users)
