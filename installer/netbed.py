"""The isolation test bed: plants, relay and core in network namespaces of their own.

Theory of operation. :func:`up` builds five network namespaces, ``znb-<run>-plant-a``,
``-plant-b``, ``-plant-c``, ``-relay`` and ``-core``, and four veth links, each a /24 of its
own: plant-a to relay (10.231.1.0/24), plant-b to relay (10.231.2.0/24), core to relay
(10.231.3.0/24), plant-c to relay (10.231.4.0/24).
The relay end of each link is ``.1``, the other end ``.2``. There is no other link and no
default route anywhere; the relay does not forward (``net.ipv4.ip_forward=0`` in its
namespace) and IPv6 is off in every namespace. So a plant reaches the relay's address on its
own link and nothing else: not the other plants, not the core, not the relay's other links
(the kernel answers "network unreachable" before a packet leaves).

Everything is done with explicit ``ip`` commands, each printed before it runs. Every name
starts with the run id, and the veth pairs live only inside the namespaces (created there,
never in the caller's), so deleting a run's namespaces removes everything it built:
:func:`down` kills every process still in them, then deletes them; without a run id it
removes every test bed's leftovers, after a crash too.

:func:`run_federation` places the demo federation (installer/federation.py), with a third
plant (``plant-c``, two more people) and an account for every person, in a bed: the
relay's SSH server on its namespace, coturn with the configuration ``installer/turn.py``
renders on the relay's plant-facing addresses, the core and each edge in their namespaces,
reaching the relay at its address on their link. :func:`inside` lets the calling thread
create sockets in a namespace (a socket stays in the namespace it was made in).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from installer import turn as turn_conf
from installer.demo import USERS_FILE, demo_accounts
from installer.federation import (
    DEMO_SITES,
    DEMO_USERS,
    NODES,
    Layout,
    Placement,
    build_federation,
    seed_directory,
    supervise,
    write_layout,
)
from installer.layout import Installation
from installer.supervisor import Supervisor
from pki.keyfile import KdfCost
from pki.names import NodeName, Role
from sync.directory import Site, User
from sync.turn import TurnConfig

PREFIX = "znb-"
SUBNET = "10.231"
RELAY = "relay"
CORE = "core"
PLANTS = ("plant-a", "plant-b", "plant-c")
# (node, link number): the node's link to the relay is SUBNET.<number>.0/24
LINKS = (("plant-a", 1), ("plant-b", 2), (CORE, 3), ("plant-c", 4))
SSH_PORT = 2222
TURN_PORT = 3478
RELAY_SITE = "dmz"
CORE_SITE = "hq"
# The demo's nodes, sites and people, and a third plant (a meeting of three plants, issue 8).
BED_NODES = (*NODES, NodeName(Role.EDGE, "plant-c"))
BED_SITES = (*DEMO_SITES, Site("plant-c", "Завод В"))
BED_USERS = (
    *DEMO_USERS,
    User("morozov", "Морозов Алексей Викторович", "plant-c", "Цех 7", ("+7 351 555-03-01",)),
    User("volkova", "Волкова Ольга Игоревна", "plant-c", "Лаборатория", ("+7 351 555-03-02",)),
)
# The relay's [calls] policy in the bed: every plant may call every plant.
CALLS_ALLOW: tuple[tuple[str, str], ...] = (("edge", "edge"),)

USER_ERRORS: tuple[type[BaseException], ...] = ()


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command, printed first as a shell would read it."""
    print("+ " + shlex.join(argv), flush=True)
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


@dataclass(frozen=True)
class Bed:
    """One test bed, named by its run id."""

    run_id: str

    @classmethod
    def new(cls) -> Bed:
        return cls(secrets.token_hex(3))

    def ns(self, node: str) -> str:
        """The namespace of ``node`` (``relay``, ``core`` or a plant of :data:`PLANTS`)."""
        return f"{PREFIX}{self.run_id}-{node}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self.ns(n) for n in (RELAY, CORE, *PLANTS))

    @staticmethod
    def _link(node: str) -> int:
        return dict(LINKS)[node]

    def address(self, node: str) -> str:
        """``node``'s address on its link to the relay."""
        return f"{SUBNET}.{self._link(node)}.2"

    def relay_address(self, node: str) -> str:
        """The relay's address on its link to ``node``: the only address ``node`` reaches."""
        return f"{SUBNET}.{self._link(node)}.1"

    @property
    def turn_addresses(self) -> tuple[str, ...]:
        """Where TURN listens: the relay's addresses on the plants' links."""
        return tuple(self.relay_address(p) for p in PLANTS)


def existing(prefix: str = PREFIX) -> list[str]:
    """The namespaces whose names start with ``prefix``."""
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def pids(ns: str) -> list[int]:
    """The processes in namespace ``ns``."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def sysctl(ns: str, setting: str) -> None:
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", setting])


def up(bed: Bed) -> Bed:
    """Build ``bed``; on any failure remove what was built and raise."""
    if not re.fullmatch(r"[a-z0-9]{1,12}", bed.run_id):
        raise ValueError(f"run id {bed.run_id!r}: 1 to 12 of a-z 0-9")
    if existing(f"{PREFIX}{bed.run_id}-"):
        raise ValueError(f"a test bed with run id {bed.run_id} exists; 'zastava netbed down'")
    relay = bed.ns(RELAY)
    try:
        for ns in bed.namespaces:
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")
        sysctl(relay, "net.ipv4.ip_forward=0")
        for node, _ in LINKS:
            ns = bed.ns(node)
            # created in the relay's namespace, its peer moved straight into the node's
            run(
                ["ip", "-n", relay, "link", "add", "name", f"to-{node}", "type", "veth",
                 "peer", "name", "to-relay", "netns", ns]
            )  # fmt: skip
            at_relay = f"{bed.relay_address(node)}/24"
            run(["ip", "-n", relay, "addr", "add", at_relay, "dev", f"to-{node}"])
            run(["ip", "-n", relay, "link", "set", f"to-{node}", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{bed.address(node)}/24", "dev", "to-relay"])
            run(["ip", "-n", ns, "link", "set", "to-relay", "up"])
    except BaseException:
        down(bed.run_id)
        raise
    return bed


def down(run_id: str | None = None) -> list[str]:
    """Kill the processes in the run's namespaces (every test bed's, without a run id) and
    delete the namespaces. Returns the namespaces removed."""
    names = existing(f"{PREFIX}{run_id}-" if run_id else PREFIX)
    for ns in names:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = pids(ns)
            for pid in left:
                print(f"+ kill -{sig.name} {pid}  # in {ns}", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while pids(ns) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pids(ns):
                break
        run(["ip", "netns", "del", ns], check=False)
    return names


def status(run_id: str | None = None) -> str:
    """What exists: each namespace's addresses, routes and processes; the relay's forwarding."""
    lines = []
    for ns in existing(f"{PREFIX}{run_id}-" if run_id else PREFIX):
        addrs = subprocess.run(
            ["ip", "-n", ns, "-brief", "addr"], capture_output=True, text=True
        ).stdout
        routes = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True).stdout
        lines.append(f"{ns}:")
        lines += [f"  {a}" for a in addrs.splitlines()]
        lines += [f"  route {r}" for r in routes.splitlines()] or ["  no route"]
        if ns.endswith(f"-{RELAY}"):
            fwd = subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            lines.append(f"  net.ipv4.ip_forward = {fwd}")
        procs = pids(ns)
        lines.append(f"  processes: {' '.join(map(str, procs)) if procs else 'none'}")
    return "\n".join(lines) if lines else "no test bed"


# --- sockets in a namespace ------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """The calling thread in network namespace ``ns`` (back in its own afterwards): the
    sockets it creates there stay there."""
    with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{ns}", "rb") as there:
        _setns(there.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def socket_in(
    ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    with inside(ns):
        return socket.socket(family, kind)


def tcp_listening(ns: str, host: str, port: int) -> bool:
    """Does a TCP connect to ``host:port`` from namespace ``ns`` succeed?"""
    with socket_in(ns) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class Packet:
    """One captured frame: the interface it was seen on and its bytes (Ethernet)."""

    interface: str
    data: bytes

    @property
    def tcp(self) -> tuple[str, int, str, int, bytes] | None:
        """(source, source port, destination, destination port, payload) of an IPv4 TCP
        segment; None for anything else."""
        d = self.data
        if len(d) < 34 or d[12:14] != b"\x08\x00" or d[23] != 6:
            return None
        ihl = (d[14] & 0x0F) * 4
        t = 14 + ihl
        if len(d) < t + 20:
            return None
        off = (d[t + 12] >> 4) * 4
        total = int.from_bytes(d[16:18], "big")
        src, dst = socket.inet_ntoa(d[26:30]), socket.inet_ntoa(d[30:34])
        sport, dport = int.from_bytes(d[t : t + 2], "big"), int.from_bytes(d[t + 2 : t + 4], "big")
        return src, sport, dst, dport, d[t + off : 14 + total]

    @property
    def ip_protocol(self) -> int | None:
        """The IPv4 protocol number (6 TCP, 17 UDP, 1 ICMP); None for anything else (ARP)."""
        d = self.data
        return d[23] if len(d) >= 34 and d[12:14] == b"\x08\x00" else None

    @property
    def udp(self) -> tuple[str, int, str, int, bytes] | None:
        """(source, source port, destination, destination port, payload) of an IPv4 UDP
        datagram (not a fragment); None for anything else."""
        d = self.data
        if self.ip_protocol != 17 or int.from_bytes(d[20:22], "big") & 0x3FFF:
            return None
        u = 14 + (d[14] & 0x0F) * 4
        if len(d) < u + 8:
            return None
        length = int.from_bytes(d[u + 4 : u + 6], "big")
        src, dst = socket.inet_ntoa(d[26:30]), socket.inet_ntoa(d[30:34])
        sport, dport = int.from_bytes(d[u : u + 2], "big"), int.from_bytes(d[u + 2 : u + 4], "big")
        return src, sport, dst, dport, d[u + 8 : u + length]


class Capture:
    """Every frame on every interface of namespace ``ns`` (a raw AF_PACKET socket made
    there; what tcpdump -i any would see), until :meth:`stop`. ``drops`` counts frames the
    kernel could not queue (a capture with drops proves nothing). ``keep`` sees each frame
    as it arrives and says whether to keep it in :attr:`packets` (all are kept without it):
    a long capture of media can be checked as it goes instead of held."""

    def __init__(self, ns: str, keep: Callable[[Packet], bool] | None = None) -> None:
        eth_p_all = 0x0003
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(eth_p_all))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.settimeout(0.1)
        self.packets: list[Packet] = []
        self.seen = 0
        self.drops = 0
        self.error: BaseException | None = None  # what ``keep`` raised (the capture stopped)
        self._keep = keep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture {ns}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            packet = Packet(str(addr[0]), data)
            self.seen += 1
            try:
                if self._keep is None or self._keep(packet):
                    self.packets.append(packet)
            except BaseException as e:
                self.error = e
                return

    def stop(self) -> list[Packet]:
        self._stop.set()
        self._thread.join()
        packet_statistics = 6  # <linux/if_packet.h>: struct tpacket_stats {packets, drops}
        stats = self.sock.getsockopt(263, packet_statistics, 8)  # SOL_PACKET
        self.drops = int.from_bytes(stats[4:8], sys.byteorder)
        self.sock.close()
        if self.error is not None:
            raise self.error
        return self.packets


# --- the federation in a bed -----------------------------------------------------------------


def placements(bed: Bed) -> dict[str, Placement]:
    """The relay listens on every address of its namespace; the core and each edge on their
    link address, reaching the relay at its address on that link."""
    p = {RELAY: Placement(bed.ns(RELAY), "0.0.0.0")}
    for node in (CORE, *PLANTS):
        p[node] = Placement(bed.ns(node), bed.address(node), bed.relay_address(node))
    return p


@dataclass(frozen=True)
class Federation:
    bed: Bed
    layout: Layout
    supervisor: Supervisor
    turn: TurnConfig
    accounts: tuple[dict[str, Any], ...] = ()  # installer.demo's: login, site, password, TOTP


def require_tools() -> None:
    for tool, package in (("ip", "iproute2"), ("sysctl", "procps"), ("turnserver", "coturn")):
        if shutil.which(tool) is None:
            raise ValueError(f"{tool} is missing: apt-get install {package}")
    if os.geteuid() != 0:
        raise ValueError("network namespaces need root: run as root (or with sudo)")


def run_federation(
    bed: Bed, base: Path, *, interval: float = 0.5, cost: KdfCost | None = None
) -> Federation:
    """Enroll, configure and register (not start) the federation's processes in ``bed``:
    ``relay``, ``core``, ``edge-<site>`` for each plant and ``turn`` (coturn, in the relay's
    namespace). Every person of a plant gets an account at its edge (a password and an
    authenticator secret, as the demo's: ``DIR/demo-users.json``)."""
    now = dt.datetime.now(dt.UTC)
    ips = {
        RELAY_SITE: tuple(bed.relay_address(n) for n, _ in LINKS),
        CORE_SITE: (bed.address(CORE),),
    }
    ips.update({p: (bed.address(p),) for p in PLANTS})
    root, nodes = build_federation(base, now, cost, ip_addresses=ips, names=BED_NODES)
    layout = write_layout(
        base, root, nodes, relay_port=SSH_PORT, interval=interval, placements=placements(bed)
    )
    users = seed_directory(layout, lambda: dt.datetime.now(dt.UTC), BED_SITES, BED_USERS)
    accounts = demo_accounts(layout, users)
    turn = _turn_files(layout, bed, now)
    sup = supervise(layout)
    relay_ns, turn_host = bed.ns(RELAY), bed.turn_addresses[0]
    sup.add(
        "turn",
        ["-c", str(turn.conf_file)],
        program=[shutil.which("turnserver") or "turnserver"],
        netns=relay_ns,
        ready=lambda: tcp_listening(relay_ns, turn_host, turn.port),
    )
    return Federation(bed, layout, sup, turn, tuple(accounts))


def _turn_files(layout: Layout, bed: Bed, now: dt.datetime) -> TurnConfig:
    """coturn's secret and ``turnserver.conf`` as the relay's installer writes them
    (installer/turn.py), its peers the edges certified in ``relay-nodes/``; the relay's
    ``[turn]`` and ``[calls]`` sections (:data:`CALLS_ALLOW`)."""
    relay_dir = layout.base / "relay-host"  # what an installation's data_dir holds: node/
    relay_dir.mkdir(exist_ok=True)
    if not (relay_dir / "node").exists():
        (relay_dir / "node").symlink_to(layout.node(Role.RELAY).directory)
    inst = Installation(
        Role.RELAY,
        RELAY_SITE,
        layout.relay_toml,
        relay_dir,
        relay_dir,
        "root",
        sys.executable,
        False,
    )
    config = TurnConfig(
        realm=f"{RELAY_SITE}.zastava",
        listen=bed.turn_addresses,
        port=TURN_PORT,
        secret_file=layout.base / "turn-secret",
        conf_file=layout.base / "turnserver.conf",
        state_dir=layout.base / "relay-data" / "turn",
    )
    for line in turn_conf.write_conf(inst, config, now):
        print(f"turn: {line}", flush=True)
    # The relay grants call legs with this TURN server, between the plants CALLS_ALLOW names.
    (layout.base / "turn.toml").write_text(config.toml())
    set_call_policy(layout, CALLS_ALLOW)
    return config


_CALLS_SECTIONS = re.compile(r"\n*\[turn\]\n.*", re.DOTALL)


def set_call_policy(layout: Layout, allow: Sequence[tuple[str, str]]) -> None:
    """Write the relay's ``[turn]`` and ``[calls]`` sections, ``allow`` its pairs of plants
    (or roles) that may call each other, in place of any written before. The relay reads
    them when it starts."""
    text = _CALLS_SECTIONS.sub("", layout.relay_toml.read_text()).rstrip("\n")
    pairs = ", ".join(f'["{a}", "{b}"]' for a, b in allow)
    text += f'\n\n[turn]\nconfig = "turn.toml"\n\n[calls]\nallow = [{pairs}]\n'
    layout.relay_toml.write_text(text)


# --- the command -----------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the federation and removes the bed, as Ctrl-C


def cmd_up(args: argparse.Namespace) -> int:
    require_tools()
    bed = up(Bed(args.run_id) if args.run_id else Bed.new())
    print(f"test bed {bed.run_id} is up:")
    print(status(bed.run_id))
    if args.federation is None:
        print(f"enter a namespace: ip netns exec {bed.ns('plant-a')} bash")
        print(f"remove it: zastava netbed down --run-id {bed.run_id}")
        return 0
    fed = run_federation(bed, args.federation.resolve(), interval=1.0)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for name in fed.supervisor.children:
            print(f"starting {name} ...", flush=True)
            fed.supervisor.start(name)
        print("the federation runs in the test bed; Ctrl-C stops it and removes the bed")
        for site in PLANTS:
            print(f"  {site}: {fed.layout.url(site)} (from {bed.ns(site)})")
        print(f"  relay: SSH {bed.relay_address('plant-a')}:{SSH_PORT}, TURN port {TURN_PORT}")
        print(f"  logs: {fed.layout.base / 'logs'}")
        people = ", ".join(f"{a['login']} ({a['site']})" for a in fed.accounts)
        print(f"  people: {people}; passwords and authenticator secrets in")
        print(f"    {fed.layout.base / USERS_FILE}; a code: zastava demo code LOGIN --dir DIR")
        while all(fed.supervisor.running(n) for n in fed.supervisor.children):
            time.sleep(0.5)
        print("a node exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        fed.supervisor.stop_all()
        down(bed.run_id)


def cmd_down(args: argparse.Namespace) -> int:
    removed = down(args.run_id)
    print(f"removed {len(removed)} namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(status(args.run_id))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "netbed",
        help="the isolation test bed: plants, relay and core in network namespaces (root)",
        description="Network namespaces plant-a, plant-b, plant-c, relay and core, linked "
        "only plant-relay and core-relay; the relay does not forward. See docs/netbed.md.",
    )
    p.set_defaults(group_parser=p)
    s = p.add_subparsers(title="commands", metavar="COMMAND")
    q = s.add_parser(
        "up",
        help="build the namespaces and links (and run the federation in them)",
        description="Build a test bed and print it. With --federation DIR, also enroll and "
        "run relay (SSH and coturn), core and the three edges in it until Ctrl-C, then remove it.",
    )
    q.add_argument("--run-id", help="the bed's name (default: random); namespaces znb-ID-*")
    q.add_argument(
        "--federation", type=Path, metavar="DIR", help="run the federation, its files in DIR"
    )
    q.set_defaults(handler=cmd_up)
    q = s.add_parser(
        "down",
        help="remove a test bed, killing its processes first",
        description="Kill every process in the bed's namespaces and delete them; without "
        "--run-id, every test bed's (leftovers of a crash included).",
    )
    q.add_argument("--run-id")
    q.set_defaults(handler=cmd_down)
    q = s.add_parser("status", help="namespaces, addresses, routes, processes")
    q.add_argument("--run-id")
    q.set_defaults(handler=cmd_status)
