"""``zastava demo``: a whole federation on loopback for a first look.

Today it builds the federation's trust: a CA, and core, relay and two plants (``plant-a``,
``plant-b``) enrolled through the same request → sign → import file round trip an admin
performs, each key checked by the verification API every node uses. The services (relay,
core, edges) join this command as they are built; until then it stops after enrollment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from pki.ca import CaPaths, IssuingCA, init_ca
from pki.enrollment import grouped
from pki.keyfile import write_private, write_public
from pki.names import NodeName, Purpose, Role
from pki.node import NodeCredentials, create_request, import_bundle
from pki.trust import fingerprint, verify_node

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


def build_federation(base: Path, now: dt.datetime) -> tuple[str, list[DemoNode]]:
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


def cmd_demo(args: argparse.Namespace) -> int:
    base: Path = args.dir.resolve()
    root_fp, nodes = build_federation(base, dt.datetime.now(dt.UTC))
    print(f"\nZastava demo federation in {base}")
    print(f"  root CA fingerprint: {grouped(root_fp)}")
    for n in nodes:
        print(
            f"  {n.name.role.value:<6} {n.name.site:<8} {n.directory}  (keys, certificates, "
            "trust store: verified)"
        )
    print(
        "\nNo services run in this build yet: the relay, core and edges join this command "
        "as they are built. Inspect a node with:\n"
        f"  zastava pki show {nodes[-1].directory / 'certs' / 'tls.pem'}"
    )
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
            "services": [],
        }
        write_public(args.state, (json.dumps(state, indent=2) + "\n").encode())
        print(f"state written to {args.state}")
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
    p.set_defaults(handler=cmd_demo)
