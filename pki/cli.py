"""``zastava pki``: the CA, node enrollment by files, device certificates, revocation."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from pki.ca import CaError, CaPaths, IssuingCA, init_ca
from pki.enrollment import CertificateBundle, EnrollmentRequest, grouped
from pki.keyfile import KdfCost, KeyFileError, write_private, write_public
from pki.names import DeviceName, NodeName, Purpose, Role
from pki.node import NodeCredentials, NodeError, create_request, import_bundle
from pki.pem import split_pem
from pki.trust import TrustStore, VerificationError, fingerprint, load_crls, verify_node

USER_ERRORS = (CaError, NodeError, KeyFileError, VerificationError)

ENROLLMENT_STEPS = """\
enrollment, end to end (an air-gapped site carries files, never keys):
  1. at the CA, once:   zastava pki init --ca-dir /srv/ca --org "ACME"
                        (note the root fingerprint it prints; give it to every node's admin)
  2. on the node:       zastava pki request --node-dir /var/lib/zastava/node \\
                            --site plant-a --role edge --dns edge.plant-a.example
                        (carry request.pem to the CA; read its fingerprint aloud)
  3. at the CA:         zastava pki sign request.pem --ca-dir /srv/ca \\
                            --site plant-a --role edge --out plant-a-edge.certs.pem
                        (compare the fingerprint it shows with the node's)
  4. on the node:       zastava pki import plant-a-edge.certs.pem \\
                            --node-dir /var/lib/zastava/node --root-fingerprint <from step 1>
  later:   zastava pki revoke ... ; zastava pki crl (refresh, at least monthly)
  devices: zastava pki device --ca-dir /srv/ca --site plant-a --login ivanov --out ivanov.p12
"""


def now_utc() -> dt.datetime:
    """The wall clock, for command handlers only (library code takes ``now``)."""
    return dt.datetime.now(dt.UTC)


def read_secret(
    path: Path | None, prompt: str, *, confirm: bool = False, what: str = "passphrase"
) -> bytes:
    """A secret from the first line of ``path``, or typed at the terminal (never echoed)."""
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        secret = lines[0] if lines else ""
    elif sys.stdin.isatty():
        secret = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != secret:
            raise CaError(f"the two {what}s differ")
    else:
        raise CaError(f"no terminal to ask for the {what}: give it in a file (--{what}-file)")
    if len(secret) < 8:
        raise CaError(f"the {what} is too short: use at least 8 characters")
    return secret.encode("utf-8")


def _node_name(text: str) -> NodeName:
    role, _, site = text.partition(":")
    try:
        return NodeName(Role(role), site)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ROLE:SITE such as edge:plant-a, got {text!r}"
        ) from None


def _device_name(text: str) -> DeviceName:
    site, _, login = text.partition(":")
    try:
        return DeviceName(site, login)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected SITE:LOGIN, {e}") from None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def iso_time(text: str) -> dt.datetime:
    """argparse type for ``--at``/``--since`` options: ISO 8601, UTC when no zone is given."""
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _paths(args: argparse.Namespace) -> CaPaths:
    return CaPaths.of(args.ca_dir, getattr(args, "root_dir", None))


def _open_ca(args: argparse.Namespace) -> IssuingCA:
    paths = _paths(args)
    return IssuingCA.open(paths, read_secret(args.passphrase_file, "issuing CA passphrase: "))


def _kdf_cost(args: argparse.Namespace) -> KdfCost:
    # A cheap KDF exists only for the test suite and the loopback demo, never for a real CA.
    return KdfCost(time_cost=1, memory_kib=8 * 1024) if args.insecure_fast_kdf else KdfCost()


def cmd_init(args: argparse.Namespace) -> int:
    paths = _paths(args)
    root_pw = read_secret(args.passphrase_file, "root CA passphrase: ", confirm=True)
    issuing_pw = (
        read_secret(args.issuing_passphrase_file, "issuing CA passphrase: ", confirm=True)
        if args.issuing_passphrase_file or (args.passphrase_file is None and sys.stdin.isatty())
        else root_pw
    )
    root, issuing = init_ca(
        paths,
        organization=args.org,
        root_passphrase=root_pw,
        issuing_passphrase=issuing_pw,
        now=now_utc(),
        cost=_kdf_cost(args),
        progress=lambda m: print(f"  {m}"),
    )
    print(f"root CA:    {paths.root_cert}  (valid until {root.not_valid_after_utc:%Y-%m-%d})")
    print(f"issuing CA: {paths.issuing_cert}  (valid until {issuing.not_valid_after_utc:%Y-%m-%d})")
    print(f"CRL:        {paths.crl}")
    print("root fingerprint (SHA-256) — give it to every node's admin for 'pki import':")
    print(f"  {grouped(fingerprint(root))}")
    print(f"Keep {paths.root_dir} offline: it is needed only to renew the issuing CA.")
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    name = NodeName(Role(args.role), args.site)
    request = create_request(
        args.node_dir, name, dns_names=tuple(args.dns), ip_addresses=tuple(args.ip)
    )
    print(f"keys written to {args.node_dir / 'private'} (mode 0600; they never leave this node)")
    print(f"request written to {args.node_dir / 'request.pem'} for {name.uri}")
    print(f"request fingerprint: {grouped(request.fingerprint)}")
    print("next: carry request.pem to the CA; 'zastava pki sign' shows the same fingerprint.")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    request = EnrollmentRequest.parse(args.request.read_bytes())
    print(f"request for:  {request.name.uri}")
    if request.dns_names or request.ip_addresses:
        names = [*request.dns_names, *map(str, request.ip_addresses)]
        print(f"TLS names:    {', '.join(names)}")
    print(f"fingerprint:  {grouped(request.fingerprint)}")
    if args.fingerprint and "".join(args.fingerprint.split()).lower() != request.fingerprint:
        raise CaError("the request's fingerprint is not the one given; do not sign it")
    ca = _open_ca(args)
    bundle = ca.sign_request(
        request, expect=NodeName(Role(args.role), args.site), now=now_utc(), days=args.days
    )
    write_public(args.out, bytes(bundle))
    print(
        f"certificate bundle written to {args.out} (valid until "
        f"{bundle.tls.not_valid_after_utc:%Y-%m-%d}); carry it to the node and run "
        "'zastava pki import'"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    bundle = CertificateBundle.parse(args.bundle.read_bytes())
    creds = import_bundle(
        args.node_dir, bundle, now=now_utc(), root_fingerprint=args.root_fingerprint
    )
    print(f"imported certificates for {creds.name.uri} into {args.node_dir}")
    for purpose in Purpose:
        cert = bundle.certificate(purpose)
        print(
            f"  {purpose.value:<10} serial {cert.serial_number:x}, valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d}"
        )
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    ca = _open_ca(args)
    password = read_secret(
        args.password_file, "password for the PKCS#12 file: ", confirm=True, what="password"
    )
    name = DeviceName(args.site, args.login)
    key, cert = ca.issue_device(name, now=now_utc(), days=args.days)
    if args.legacy_p12:
        enc = (
            PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50000)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(password)
        )
    else:
        enc = (
            PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(200000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password)
        )
    data = pkcs12.serialize_key_and_certificates(
        name.login.encode(), key, cert, [ca.certificate, ca.root], enc
    )
    write_private(args.out, data)
    print(
        f"device certificate for {name.uri}: serial {cert.serial_number:x}, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}"
    )
    print(
        f"written to {args.out} (PKCS#12, mode 0600); install it on the device, then delete "
        "this copy"
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    ca = _open_ca(args)
    serials = ca.revoke(
        now=now_utc(),
        serial=args.serial,
        node=args.node,
        device=args.device,
        reason=x509.ReasonFlags(args.reason),
    )
    for s in serials:
        print(f"revoked {s}")
    print(f"new CRL written to {ca.paths.crl}: distribute it (core sends it to every edge)")
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    ca = _open_ca(args)
    crl = ca.write_crl(now_utc(), days=args.days)
    if args.out:
        write_public(args.out, ca.paths.crl.read_bytes())
    revoked = len(list(crl))
    print(
        f"CRL signed: {revoked} revoked, next update due {crl.next_update_utc:%Y-%m-%d %H:%M} "
        f"UTC, written to {args.out or ca.paths.crl}"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    paths = _paths(args)
    if not paths.registry.exists():
        raise CaError(f"no CA registry at {paths.registry}")
    import sqlite_utils

    rows = list(sqlite_utils.Database(paths.registry)["issued"].rows_where(order_by="issued_at"))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'serial':<42} {'kind':<15} {'valid until':<11} {'revoked':<11} subject")
    for r in rows:
        revoked = str(r["revoked_at"] or "")[:10]
        print(
            f"{r['serial']:<42} {r['kind']:<15} {str(r['not_after'])[:10]:<11} "
            f"{revoked:<11} {r['subject']}"
        )
    return 0


def _describe_cert(cert: x509.Certificate) -> dict[str, Any]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "names": names,
        "key": type(cert.public_key()).__name__.removeprefix("_"),
        "fingerprint": fingerprint(cert),
    }


def cmd_show(args: argparse.Namespace) -> int:
    data = args.file.read_bytes()
    labels = [label for label, _ in split_pem(data)]
    out: dict[str, Any]
    if labels == ["CERTIFICATE REQUEST"] * 2:
        req = EnrollmentRequest.parse(data)
        out = {
            "type": "enrollment request",
            "node": req.name.uri,
            "dns": req.dns_names,
            "ip": [str(i) for i in req.ip_addresses],
            "fingerprint": req.fingerprint,
        }
    elif labels and set(labels) <= {"CERTIFICATE"}:
        out = {
            "type": "certificates",
            "certificates": [_describe_cert(c) for c in x509.load_pem_x509_certificates(data)],
        }
    elif labels == ["CERTIFICATE"] * 5 + ["X509 CRL"]:
        bundle = CertificateBundle.parse(data)
        certs = [bundle.tls, bundle.signing, bundle.receiving, bundle.issuing, bundle.root]
        out = {"type": "certificate bundle", "certificates": [_describe_cert(c) for c in certs]}
    elif labels and set(labels) == {"X509 CRL"}:
        out = {
            "type": "CRLs",
            "crls": [
                {
                    "issuer": c.issuer.rfc4514_string(),
                    "next_update": c.next_update_utc.isoformat() if c.next_update_utc else None,
                    "revoked": [f"{r.serial_number:x}" for r in c],
                }
                for c in load_crls(data)
            ],
        }
    else:
        raise ValueError(f"{args.file}: not a request, certificate, bundle or CRL ({labels})")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_tree(out)
    return 0


def _print_tree(obj: Any, indent: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict | list) and v:
                print(f"{indent}{k}:")
                _print_tree(v, indent + "  ")
            else:
                print(f"{indent}{k}: {v if v != [] else '-'}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, dict):
                print(f"{indent}[{i}]")
                _print_tree(v, indent + "  ")
            else:
                print(f"{indent}- {v}")


def cmd_verify(args: argparse.Namespace) -> int:
    chain = x509.load_pem_x509_certificates(args.cert.read_bytes())
    trust = (
        NodeCredentials.load(args.node_dir).trust
        if args.node_dir
        else TrustStore.load(args.trust_dir)
    )
    verified = verify_node(
        chain,
        trust=trust,
        role=Role(args.role),
        site=args.site,
        purpose=Purpose(args.purpose),
        now=args.at or now_utc(),
    )
    print(
        f"valid: {verified.name.uri} ({verified.purpose.value}), fingerprint {verified.fingerprint}"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pki",
        help="certificate authority, node enrollment, device certificates, revocation",
        description="Zastava's PKI: an offline root CA and an issuing CA certify every node's "
        "keys and users' managed devices.",
        epilog=ENROLLMENT_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(group_parser=p)
    s = p.add_subparsers(title="commands", metavar="COMMAND")

    def ca_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--ca-dir", type=Path, required=True, help="the CA directory")
        q.add_argument(
            "--passphrase-file",
            type=Path,
            help="read the issuing CA passphrase from this file's first line "
            "(default: ask at the terminal)",
        )

    q = s.add_parser(
        "init",
        help="create the root CA and the issuing CA",
        description="Create an offline root CA (ECDSA P-384) and an issuing CA "
        "(ECDSA P-256) with passphrase-sealed keys, and an empty CRL.",
    )
    q.add_argument("--ca-dir", type=Path, required=True)
    q.add_argument(
        "--root-dir",
        type=Path,
        help="where the root CA goes (default CA_DIR/root); removable media",
    )
    q.add_argument("--org", required=True, help="organisation name in the CA certificates")
    q.add_argument(
        "--passphrase-file",
        type=Path,
        help="root CA passphrase (first line); also used for the issuing CA unless "
        "--issuing-passphrase-file is given",
    )
    q.add_argument("--issuing-passphrase-file", type=Path)
    q.add_argument("--insecure-fast-kdf", action="store_true", help=argparse.SUPPRESS)
    q.set_defaults(handler=cmd_init)

    q = s.add_parser(
        "request",
        help="on a node: generate its keys and an enrollment request",
        description="Generate the node's TLS (ECDSA P-256), bundle-signing "
        "(Ed25519) and bundle-receiving (X25519) keys, and request.pem for the CA.",
    )
    q.add_argument("--node-dir", type=Path, required=True)
    q.add_argument("--site", required=True, help="site id, e.g. plant-a")
    q.add_argument("--role", required=True, choices=[r.value for r in Role])
    q.add_argument("--dns", action="append", default=[], help="DNS name for the TLS certificate")
    q.add_argument(
        "--ip", action="append", default=[], type=_ip, help="IP address for the TLS certificate"
    )
    q.set_defaults(handler=cmd_request)

    q = s.add_parser(
        "sign",
        help="at the CA: certify an enrollment request",
        description="Certify the three keys of a node's request. The role and site "
        "you give must be the ones the request names, or nothing is signed.",
    )
    q.add_argument("request", type=Path)
    ca_args(q)
    q.add_argument("--site", required=True)
    q.add_argument("--role", required=True, choices=[r.value for r in Role])
    q.add_argument("--fingerprint", help="the request fingerprint the node's admin read out")
    q.add_argument("--days", type=int, default=365)
    q.add_argument("--out", type=Path, required=True)
    q.set_defaults(handler=cmd_sign)

    q = s.add_parser("import", help="on a node: install the certificate bundle from the CA")
    q.add_argument("bundle", type=Path)
    q.add_argument("--node-dir", type=Path, required=True)
    q.add_argument(
        "--root-fingerprint", help="SHA-256 of the root CA, as 'pki init' printed it (first import)"
    )
    q.set_defaults(handler=cmd_import)

    q = s.add_parser(
        "device",
        help="at the CA: a client certificate for a managed device",
        description="Issue a key and client certificate for a user's managed "
        "phone or laptop, exported as a password-protected PKCS#12 file.",
    )
    ca_args(q)
    q.add_argument("--site", required=True, help="the user's home site")
    q.add_argument("--login", required=True)
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--password-file", type=Path, help="PKCS#12 password (first line)")
    q.add_argument("--days", type=int, default=365)
    q.add_argument(
        "--legacy-p12",
        action="store_true",
        help="3DES/SHA-1 PKCS#12 for old devices that cannot read AES-256",
    )
    q.set_defaults(handler=cmd_device)

    q = s.add_parser("revoke", help="at the CA: revoke certificates and sign a new CRL")
    ca_args(q)
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--serial", help="certificate serial (hex, as 'pki list' shows)")
    g.add_argument("--node", type=_node_name, help="ROLE:SITE, all three keys of a node")
    g.add_argument("--device", type=_device_name, help="SITE:LOGIN, a user's devices")
    q.add_argument(
        "--reason",
        default="unspecified",
        choices=[r.value for r in x509.ReasonFlags if r not in (x509.ReasonFlags.remove_from_crl,)],
    )
    q.set_defaults(handler=cmd_revoke)

    q = s.add_parser("crl", help="at the CA: sign a fresh CRL (do this at least monthly)")
    ca_args(q)
    q.add_argument("--days", type=int, default=30, help="validity of the new CRL")
    q.add_argument("--out", type=Path, help="also copy the CRL here (removable media)")
    q.set_defaults(handler=cmd_crl)

    q = s.add_parser("list", help="at the CA: certificates issued and revoked")
    q.add_argument("--ca-dir", type=Path, required=True)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_list)

    q = s.add_parser("show", help="describe a request, certificate, bundle or CRL file")
    q.add_argument("file", type=Path)
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_show)

    q = s.add_parser(
        "verify",
        help="check a certificate as a node would",
        description="Verify a certificate chain for a role, site and purpose "
        "against a trust store, as every Zastava node does.",
    )
    q.add_argument("cert", type=Path)
    t = q.add_mutually_exclusive_group(required=True)
    t.add_argument("--node-dir", type=Path, help="use this node's trust store")
    t.add_argument("--trust-dir", type=Path, help="a directory with roots.pem, crl.pem")
    q.add_argument("--role", required=True, choices=[r.value for r in Role])
    q.add_argument("--site")
    q.add_argument("--purpose", default="tls", choices=[p.value for p in Purpose])
    q.add_argument("--at", type=iso_time, help="verify as of this time (ISO 8601)")
    q.set_defaults(handler=cmd_verify)
