"""``zastava bundle``: seal, open and inspect bundles by hand (admins, security officers)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from cryptography import x509

from pki.cli import iso_time
from pki.names import Purpose, Role
from pki.node import NodeCredentials, NodeError
from pki.trust import TrustStore, VerificationError, parse_certificate, verify_node
from sync.bundle.codec import (
    DEFAULT_MAX_BUNDLE,
    BundleError,
    Check,
    Item,
    Recipient,
    Signer,
    decrypt,
    from_ms,
    read_header,
    verify_envelope,
)
from sync.bundle.store import Sender, connect

USER_ERRORS = (BundleError, NodeError, VerificationError)
_TTL_RE = re.compile(r"^(\d{1,6})([smhd])$")


def _ttl(text: str) -> dt.timedelta:
    m = _TTL_RE.fullmatch(text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s, 10m, 12h, 7d; got {text!r}"
        )
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m[2]]
    return dt.timedelta(**{unit: int(m[1])})


def _item(text: str) -> tuple[str, Path]:
    kind, sep, path = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TYPE=FILE, got {text!r}")
    return kind, Path(path)


def _now(args: argparse.Namespace) -> dt.datetime:
    return getattr(args, "at", None) or dt.datetime.now(dt.UTC)


def _read_bundle(path: Path, max_size: int) -> bytes:
    """Read at most ``max_size`` bytes, refusing a larger file before reading it all."""
    with path.open("rb") as f:
        head = f.read(4096)
        read_header(head, max_size=max_size)  # announced size within the cap?
        rest = f.read(max_size + 1 - len(head))
    data = head + rest
    if len(data) > max_size:
        raise BundleError(Check.SIZE, f"{path} is larger than the cap of {max_size} bytes")
    return data


def cmd_seal(args: argparse.Namespace) -> int:
    creds = NodeCredentials.load(args.node_dir)
    now = _now(args)
    cert = x509.load_pem_x509_certificate(args.to.read_bytes())
    verified = verify_node(
        cert, trust=creds.trust, role=set(Role), purpose=Purpose.RECEIVING, now=now
    )
    items = [Item(kind, path.read_bytes()) for kind, path in args.item]
    signer = Signer(creds.name.site, creds.keys.signing, creds.signing_certificate)
    conn = connect(args.state or args.node_dir / "bundle-cli.db")
    try:
        sealed = Sender(conn, signer).seal(
            Recipient.from_verified(verified), args.stream, items, now=now, ttl=args.ttl
        )
    finally:
        conn.close()
    args.out.write_bytes(sealed.data)
    print(
        f"sealed {len(items)} item(s) for {verified.site}, stream {args.stream!r} seq "
        f"{sealed.seq}: {args.out} ({len(sealed.data)} bytes)"
    )
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    creds = NodeCredentials.load(args.node_dir)
    data = _read_bundle(args.bundle, args.max_size)
    envelope = verify_envelope(
        data, trust=creds.trust, now=_now(args), recipient=creds.name.site, max_size=args.max_size
    )
    opened = decrypt(
        envelope,
        receiving_key=creds.keys.receiving,
        receiving_certificate=creds.receiving_certificate,
    )
    h = opened.header
    print(
        f"bundle from {h.origin} to {h.recipient}, stream {h.stream!r} seq {h.seq}: "
        "every check passed (sequence not checked: the sync agent does that)"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for n, item in enumerate(opened.items):
        path = args.out_dir / f"{n:04d}-{item.kind}.bin"
        path.write_bytes(item.data)
        print(f"  item {n}: {item.kind}, {len(item.data)} bytes -> {path}")
    return 0


def inspect(
    data: bytes, trust: TrustStore | None, now: dt.datetime, max_size: int = DEFAULT_MAX_BUNDLE
) -> dict[str, Any]:
    """Header and signature status, without any decryption key."""
    header = read_header(data, max_size=max_size)
    cert = parse_certificate(header.signer_cert)
    out: dict[str, Any] = {
        "origin": header.origin,
        "recipient": header.recipient,
        "stream": header.stream,
        "seq": header.seq,
        "prev": header.prev.hex(),
        "created": from_ms(header.created_ms).isoformat(),
        "expires": from_ms(header.expires_ms).isoformat(),
        "chunk_size": header.chunk_size,
        "ciphertext_length": header.ciphertext_length,
        "ciphertext_sha256": header.ciphertext_hash.hex(),
        "header_sha256": header.header_hash.hex(),
        "bundle_id": header.bundle_id.hex(),
        "signer": cert.subject.rfc4514_string(),
        "recipient_key_id": header.recipient_key_id.hex(),
        "size": len(data),
    }
    if trust is None:
        out["status"] = "not verified: no trust store given (--node-dir or --trust-dir)"
        out["valid"] = None
        return out
    try:
        verify_envelope(data, trust=trust, now=now, recipient=None, max_size=max_size)
    except BundleError as e:
        out["status"] = f"REJECTED: {e}"
        out["failed_check"] = e.check.value
        out["valid"] = False
    else:
        out["status"] = "outer layer valid: signer certified, signature, expiry, ciphertext hash"
        out["valid"] = True
    return out


def cmd_inspect(args: argparse.Namespace) -> int:
    data = _read_bundle(args.bundle, args.max_size)
    trust = None
    if args.node_dir:
        trust = NodeCredentials.load(args.node_dir).trust
    elif args.trust_dir:
        trust = TrustStore.load(args.trust_dir)
    info = inspect(data, trust, _now(args), args.max_size)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0 if info["valid"] is not False else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bundle",
        help="seal, open and inspect sync bundles",
        description="Bundles are how data leaves a plant: signed by the origin, encrypted for "
        "the recipient, checkable by the relay without any decryption key. "
        "Format: docs/bundle-format.md.",
    )
    p.set_defaults(group_parser=p)
    s = p.add_subparsers(title="commands", metavar="COMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--at", type=iso_time, help="check as of this time (ISO 8601; default now)")
        q.add_argument(
            "--max-size",
            type=int,
            default=DEFAULT_MAX_BUNDLE,
            help=f"refuse bundles larger than this (default {DEFAULT_MAX_BUNDLE})",
        )

    q = s.add_parser(
        "seal",
        help="seal files into a bundle for another site",
        description="Seal files as items of one bundle, signed with this node's "
        "key and encrypted for the recipient's receiving certificate. Sequence "
        "numbers come from a state database (--state).",
    )
    q.add_argument("--node-dir", type=Path, required=True, help="this node's directory")
    q.add_argument(
        "--to",
        type=Path,
        required=True,
        help="the recipient's receiving certificate (certs/receiving.pem)",
    )
    q.add_argument("--stream", default="manual")
    q.add_argument(
        "--item",
        type=_item,
        action="append",
        required=True,
        help="TYPE=FILE, e.g. chat.export=messages.json (repeatable)",
    )
    q.add_argument(
        "--ttl",
        type=_ttl,
        default=dt.timedelta(days=7),
        help="how long the bundle may be applied (default 7d)",
    )
    q.add_argument("--state", type=Path, help="stream state DB (default NODE_DIR/bundle-cli.db)")
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--at", type=iso_time, help=argparse.SUPPRESS)
    q.set_defaults(handler=cmd_seal)

    q = s.add_parser(
        "open",
        help="verify and decrypt a bundle addressed to this node",
        description="Run every check (signer, signatures, recipient, expiry, "
        "hashes, final chunk) and write the items to a directory.",
    )
    q.add_argument("bundle", type=Path)
    q.add_argument("--node-dir", type=Path, required=True)
    q.add_argument("--out-dir", type=Path, required=True)
    common(q)
    q.set_defaults(handler=cmd_open)

    q = s.add_parser(
        "inspect",
        help="show a bundle's header and signature status (no key)",
        description="Print the clear header and, given a trust store, whether "
        "the outer layer is valid. Needs no decryption key. Exit status 1 if "
        "the bundle is refused.",
    )
    q.add_argument("bundle", type=Path)
    t = q.add_mutually_exclusive_group()
    t.add_argument("--node-dir", type=Path, help="use this node's trust store")
    t.add_argument("--trust-dir", type=Path, help="a directory with roots.pem, crl.pem")
    q.add_argument("--json", action="store_true")
    common(q)
    q.set_defaults(handler=cmd_inspect)
