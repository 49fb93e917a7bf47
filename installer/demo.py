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
import shutil
import signal
import threading
from pathlib import Path

from installer.federation import DemoNode, build_federation
from pki.enrollment import grouped
from pki.keyfile import KdfCost, write_public
from pki.names import Role
from sync.relay.config import RelayConfig
from sync.relay.server import RelayServer


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
