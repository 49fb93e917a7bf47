"""Golden bundles: a deterministic test PKI and three bundles sealed with it.

    .venv/bin/python -m tests.golden_bundle            # build in memory, print a summary
    .venv/bin/python -m tests.golden_bundle --write    # (re)write tests/data/bundle/

Every private key here is derived at run time from a constant string (SHA-256 of
``zastava-golden-<label>``): they are *test-only* keys that anyone can recompute, which is
the point: the golden test re-derives the recipient's X25519 key instead of reading a key
file, and no private key is ever committed. Only public material is written: the trust
store (root, issuing CA, CRL), the recipient's receiving certificate, the bundles and
``expected.json``.

Certificates carry ECDSA signatures (random ``k``) and bundles carry random content keys,
sealed-box ephemeral keys and secretstream headers, so rewriting produces different bytes each
time: the golden files are the committed ones, not a function of this module. Re-derived
*keys* are stable, which is all the test needs.

The PKI mirrors what ``pki.ca`` issues (ECDSA P-384 root, P-256 issuing CA with path length
0, node certificates with one key each, the purpose as an extended key usage, a node URI in
subjectAltName) and must pass ``pki.trust.verify_node`` at :data:`FIXED_NOW`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from pki.names import NodeName, Purpose, Role
from pki.trust import TrustStore, verify_node
from sync.bundle.codec import Item, Recipient, Signer, seal
from sync.bundle.header import BundleHeader
from sync.bundle.items import ACK, CONTROL_STREAM, HEARTBEAT, Ack, Heartbeat, StreamPosition
from sync.delta import delta

DATA_DIR = Path(__file__).resolve().parent / "data" / "bundle"
FIXED_NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
BACKDATE = dt.timedelta(minutes=10)
CRL_DAYS = 30
ORG = "Zastava Golden Test"
ORIGIN = "plant-a"
RECIPIENT = "hq"

# Group orders (SEC 2): a derived scalar is reduced modulo the order of its curve.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)

SERIAL_ROOT = 0x5A0001
SERIAL_ISSUING = 0x5A0002
SERIAL_SIGNING = 0x5A0010
SERIAL_RECEIVING = 0x5A0011
SERIAL_OTHER_RECEIVING = 0x5A0012
SERIAL_NOT_A_SENDER = 0x5A0013


def seed(label: str) -> bytes:
    """32 test-only secret bytes, recomputable by anyone: SHA-256("zastava-golden-" label)."""
    return hashlib.sha256(b"zastava-golden-" + label.encode()).digest()


def ec_key(label: str, curve: ec.EllipticCurve, order: int) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(seed(label), "big") % order
    if scalar == 0:  # pragma: no cover - probability 2^-256
        raise ValueError(f"seed {label!r} gives a zero scalar")
    return ec.derive_private_key(scalar, curve)


def signing_key(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed(label))


def receiving_key(label: str) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(seed(label))


def recipient_receiving_key() -> x25519.X25519PrivateKey:
    """The golden recipient's (``hq``) X25519 key, re-derived from its seed."""
    return receiving_key("hq-receiving")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, cn),
        ]
    )


def _usage(*, ca: bool, key_agreement: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca and not key_agreement,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class GoldenPki:
    """A root, an issuing CA, its CRL, and the node keys and certificates bundles need."""

    root: x509.Certificate
    issuing: x509.Certificate
    crl: x509.CertificateRevocationList
    trust: TrustStore
    signer: Signer  # plant-a (edge), Ed25519
    receiving_certificate: x509.Certificate  # hq (core), X25519
    receiving_key: x25519.X25519PrivateKey
    other_receiving_certificate: x509.Certificate  # hq again, another X25519 key
    other_receiving_key: x25519.X25519PrivateKey
    relay_signer: Signer  # a relay's signing key: a role that may not send bundles

    @property
    def recipient(self) -> Recipient:
        verified = verify_node(
            self.receiving_certificate,
            trust=self.trust,
            role=Role.CORE,
            purpose=Purpose.RECEIVING,
            now=FIXED_NOW,
            site=RECIPIENT,
        )
        return Recipient.from_verified(verified)

    @classmethod
    def build(cls, now: dt.datetime = FIXED_NOW) -> GoldenPki:
        root_key = ec_key("root", ec.SECP384R1(), P384_ORDER)
        issuing_key = ec_key("issuing", ec.SECP256R1(), P256_ORDER)
        root_name = _name("Zastava Golden Root CA")
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(SERIAL_ROOT)
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=20 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
            .sign(root_key, hashes.SHA384())
        )
        issuing = (
            x509.CertificateBuilder()
            .subject_name(_name("Zastava Golden Issuing CA"))
            .issuer_name(root_name)
            .public_key(issuing_key.public_key())
            .serial_number(SERIAL_ISSUING)
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=5 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()), False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
            )
            .sign(root_key, hashes.SHA384())
        )

        def node_cert(
            name: NodeName, purpose: Purpose, public_key: CertificatePublicKeyTypes, serial: int
        ) -> x509.Certificate:
            return (
                x509.CertificateBuilder()
                .subject_name(_name(f"{name.site} {name.role.value} {purpose.value}"))
                .issuer_name(issuing.subject)
                .public_key(public_key)
                .serial_number(serial)
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + dt.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing_key.public_key()),
                    False,
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
                .add_extension(
                    x509.SubjectAlternativeName([x509.UniformResourceIdentifier(name.uri)]),
                    critical=False,
                )
                .add_extension(
                    _usage(ca=False, key_agreement=purpose is Purpose.RECEIVING), critical=True
                )
                .add_extension(x509.ExtendedKeyUsage(list(purpose.eku)), critical=False)
                .sign(issuing_key, hashes.SHA256())
            )

        sign_key = signing_key("plant-a-signing")
        recv_key = recipient_receiving_key()
        other_key = receiving_key("hq-receiving-2")
        relay_key = signing_key("relay-signing")
        plant_a = NodeName(Role.EDGE, ORIGIN)
        hq = NodeName(Role.CORE, RECIPIENT)
        relay = NodeName(Role.RELAY, "dmz")
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuing.subject)
            .last_update(now - BACKDATE)
            .next_update(now + dt.timedelta(days=CRL_DAYS))
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing_key.public_key()), False
            )
            .sign(issuing_key, hashes.SHA256())
        )
        return cls(
            root=root,
            issuing=issuing,
            crl=crl,
            trust=TrustStore((root,), (issuing,), (crl,)),
            signer=Signer(
                ORIGIN,
                sign_key,
                node_cert(plant_a, Purpose.SIGNING, sign_key.public_key(), SERIAL_SIGNING),
            ),
            receiving_certificate=node_cert(
                hq, Purpose.RECEIVING, recv_key.public_key(), SERIAL_RECEIVING
            ),
            receiving_key=recv_key,
            other_receiving_certificate=node_cert(
                hq, Purpose.RECEIVING, other_key.public_key(), SERIAL_OTHER_RECEIVING
            ),
            other_receiving_key=other_key,
            relay_signer=Signer(
                "dmz",
                relay_key,
                node_cert(relay, Purpose.SIGNING, relay_key.public_key(), SERIAL_NOT_A_SENDER),
            ),
        )


# --- the golden bundles -------------------------------------------------------------------


def _pseudo_random(label: str, n: int) -> bytes:
    """Deterministic filler: SHA-256 in counter mode."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def _directory_rows(changed: bool) -> bytes:
    rows = []
    for i in range(40):
        dept = "maintenance" if changed and i == 17 else ("shift-a", "shift-b", "lab")[i % 3]
        rows.append(f"u{i:04d},User {i},{dept},{ORIGIN},+381 11 555 {i:04d}\n")
    return "".join(rows).encode()


def golden_items() -> dict[str, list[Item]]:
    """The items of each golden bundle, by file stem (deterministic)."""
    old, new = _directory_rows(False), _directory_rows(True)
    return {
        "single": [
            Item(
                "note.text",
                "Smena 3: pumpa P-7 u kvaru, servis u ponedeljak. — Đorđe Š.\n".encode(),
            ),
            Item("directory.delta", bytes(delta(old, new, block_size=64))),
        ],
        "multichunk": [
            Item("recording.opus", _pseudo_random("recording", 3000)),
            Item("empty.marker", b""),
            Item("log.text", b"line\n" * 300),
        ],
        "control": [
            Item(
                ACK,
                bytes(Ack((StreamPosition("directory", 7, hashlib.sha256(b"hq/7").digest()),))),
            ),
            Item(
                HEARTBEAT,
                bytes(Heartbeat(1795348800000, (("directory", 2), ("events", 0)))),
            ),
        ],
    }


@dataclass(frozen=True)
class GoldenSpec:
    stem: str
    stream: str
    seq: int
    prev_from: str | None  # stem of the bundle whose header hash is ``prev``
    created: dt.datetime
    ttl: dt.timedelta
    chunk_size: int


SPECS = (
    GoldenSpec("single", "directory", 1, None, FIXED_NOW, dt.timedelta(days=7), 64 * 1024),
    GoldenSpec(
        "multichunk",
        "directory",
        2,
        "single",
        FIXED_NOW + dt.timedelta(minutes=1),
        dt.timedelta(days=7),
        1024,
    ),
    GoldenSpec(
        "control",
        CONTROL_STREAM,
        1,
        None,
        FIXED_NOW + dt.timedelta(minutes=2),
        dt.timedelta(minutes=10),
        64 * 1024,
    ),
)


def seal_golden(pki: GoldenPki) -> dict[str, bytes]:
    items = golden_items()
    out: dict[str, bytes] = {}
    for spec in SPECS:
        prev = bytes(32)
        if spec.prev_from is not None:
            prev = BundleHeader.from_bundle(out[spec.prev_from]).header_hash
        out[spec.stem] = seal(
            items[spec.stem],
            signer=pki.signer,
            recipient=pki.recipient,
            stream=spec.stream,
            seq=spec.seq,
            prev=prev,
            now=spec.created,
            ttl=spec.ttl,
            chunk_size=spec.chunk_size,
        )
    return out


def header_fields(h: Any) -> dict[str, Any]:
    """What ``expected.json`` records of a header (the codec's or the reference's)."""
    return {
        "origin": h.origin,
        "recipient": h.recipient,
        "stream": h.stream,
        "seq": h.seq,
        "prev": h.prev.hex(),
        "created_ms": h.created_ms,
        "expires_ms": h.expires_ms,
        "chunk_size": h.chunk_size,
        "signer_cert_sha256": hashlib.sha256(h.signer_cert).hexdigest(),
        "recipient_key_id": h.recipient_key_id.hex(),
        "ciphertext_length": h.ciphertext_length,
        "ciphertext_hash": h.ciphertext_hash.hex(),
    }


def expected(bundles: dict[str, bytes]) -> dict[str, Any]:
    items = golden_items()
    out: dict[str, Any] = {"fixed_now": FIXED_NOW.isoformat(), "bundles": {}}
    for stem, data in bundles.items():
        h = BundleHeader.from_bundle(data)
        out["bundles"][f"{stem}.zbnd"] = {
            "size": len(data),
            "header_length": len(bytes(h)),
            "header": header_fields(h),
            "header_hash": h.header_hash.hex(),
            "bundle_id": h.bundle_id.hex(),
            "items": [
                {
                    "kind": i.kind,
                    "length": len(i.data),
                    "sha256": hashlib.sha256(i.data).hexdigest(),
                }
                for i in items[stem]
            ],
        }
    return out


def files(pki: GoldenPki, bundles: dict[str, bytes]) -> dict[str, bytes]:
    """Relative path -> bytes of everything written under ``tests/data/bundle``."""
    out = {f"trust/{name}": data for name, data in pki.trust.pem_files().items()}
    out["receiving.pem"] = pki.receiving_certificate.public_bytes(Encoding.PEM)
    for stem, data in bundles.items():
        out[f"{stem}.zbnd"] = data
    out["expected.json"] = (json.dumps(expected(bundles), indent=2) + "\n").encode()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write the files to {DATA_DIR}")
    args = parser.parse_args(argv)
    pki = GoldenPki.build()
    bundles = seal_golden(pki)
    for rel, data in sorted(files(pki, bundles).items()):
        if args.write:
            path = DATA_DIR / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        print(f"{'wrote' if args.write else 'would write'} {rel} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
