"""``zastava demo``: a whole federation on loopback for a first look.

It builds the federation's trust — a CA, and core, relay and two plants (``plant-a``,
``plant-b``) enrolled through the same request → sign → import file round trip an admin
performs, each key checked by the verification API every node uses — then starts the relay
on loopback with every node's certificate in its ``nodes_dir``. The core and the edges join
this command as they are built.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from pki.ca import CaPaths, IssuingCA, init_ca
from pki.enrollment import grouped
from pki.keyfile import KdfCost, write_private, write_public
from pki.names import NodeName, Purpose, Role
from pki.node import NodeCredentials, create_request, import_bundle
from pki.trust import fingerprint, verify_node
from sync.relay.config import RelayConfig
from sync.relay.server import RelayServer

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
    base: Path, now: dt.datetime, cost: KdfCost | None = None
) -> tuple[str, list[DemoNode]]:
    """Create the demo CA and enroll every node under ``base``, reusing what exists.

    Returns the root fingerprint and the enrolled nodes.
    """
    steps = len(NODES) + 1
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
    for step, name in enumerate(NODES, start=2):
        node_dir = base / "nodes" / f"{name.role.value}-{name.site}"
        if not (node_dir / "certs" / "tls.pem").exists():
            print(f"[{step}/{steps}] enrolling {name.uri}: request, sign, import", flush=True)
            ca = ca or IssuingCA.open(paths, pw_file.read_text().strip().encode())
            request = create_request(node_dir, name, dns_names=("localhost",))
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


def relay_config(base: Path, nodes: list[DemoNode], port: int) -> RelayConfig:
    """The demo relay: its data under BASE/relay-data, every other node allowed to connect."""
    relay = next(n for n in nodes if n.name.role is Role.RELAY)
    nodes_dir = base / "relay-nodes"
    nodes_dir.mkdir(parents=True, exist_ok=True)
    for n in nodes:
        if n.name.role is not Role.RELAY:
            shutil.copyfile(n.directory / "certs" / "tls.pem", nodes_dir / f"{n.name.site}.pem")
    toml = (
        f'data_dir = "{base / "relay-data"}"\n'
        f'node_dir = "{relay.directory}"\n'
        f'nodes_dir = "{nodes_dir}"\n'
        f'listen = "127.0.0.1:{port}"\n'
    )
    write_public(base / "relay.toml", toml.encode())
    return RelayConfig.from_toml(base / "relay.toml")


def cmd_demo(args: argparse.Namespace) -> int:
    base: Path = args.dir.resolve()
    cost = KdfCost(time_cost=1, memory_kib=8 * 1024) if args.insecure_fast_kdf else None
    root_fp, nodes = build_federation(base, dt.datetime.now(dt.UTC), cost)
    print(f"\nZastava demo federation in {base}")
    print(f"  root CA fingerprint: {grouped(root_fp)}")
    for n in nodes:
        print(
            f"  {n.name.role.value:<6} {n.name.site:<8} {n.directory}  (keys, certificates, "
            "trust store: verified)"
        )
    print("\nstarting the relay (SSH/SFTP, guard, audit log) on loopback...", flush=True)
    relay = RelayServer(relay_config(base, nodes, args.relay_port))
    relay.start()
    services = [
        {
            "name": "relay",
            "host": "127.0.0.1",
            "port": relay.port,
            "config": str(base / "relay.toml"),
        }
    ]
    print(f"  relay   ssh://127.0.0.1:{relay.port}  (config {base / 'relay.toml'})")
    print(f"  audit   zastava relay audit show --db {base / 'relay-data' / 'audit.db'}")
    print("\nThe core and the plants' edges join this command as they are built.")
    if args.state:
        state = {
            "base": str(base),
            "root_fingerprint": root_fp,
            "nodes": [
                {
                    "role": n.name.role.value,
                    "site": n.name.site,
                    "dir": str(n.directory),
                    "tls_fingerprint": n.tls_fingerprint,
                }
                for n in nodes
            ],
            "services": services,
        }
        write_public(args.state, (json.dumps(state, indent=2) + "\n").encode())
        print(f"state written to {args.state}")
    try:
        if not args.once:
            print("\nrunning; Ctrl-C to stop", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the relay", flush=True)
        relay.stop()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run a whole federation on loopback for a first look",
        description="Create a demo CA and enroll core, relay and two plants under --dir, "
        "checking every certificate. Safe to run again: it reuses what exists.",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("demo-federation"),
        help="where the demo keeps its CA and nodes (default ./demo-federation)",
    )
    p.add_argument("--state", type=Path, help="also write the demo's facts as JSON here")
    p.add_argument("--relay-port", type=int, default=0, help="relay SSH port (default: any free)")
    p.add_argument("--insecure-fast-kdf", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--once",
        action="store_true",
        help="start everything, print the facts, and stop (for scripts and tests)",
    )
    p.set_defaults(handler=cmd_demo)
