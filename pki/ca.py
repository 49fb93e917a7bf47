"""The certificate authorities: an offline root and the issuing CA under it.

Layout of a CA directory (the root part can live on removable media of its own)::

    root/root.pem          root certificate (ECDSA P-384), the trust anchor
    root/root.key.sealed   its key, sealed with the root passphrase (see pki.keyfile)
    issuing/issuing.pem    issuing CA certificate (ECDSA P-256, path length 0)
    issuing/issuing.key.sealed
    issued.db              every certificate issued, and its revocation (SQLite)
    crl.pem                the current CRL of the issuing CA

The issuing CA signs exactly what an enrollment request names: the role and site are taken
from the request and checked against what the operator says they expect; there is no way to
issue a role other than the one requested. Node certificates carry one key each, with the
purpose as an extended key usage (see pki.names).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki.enrollment import CertificateBundle, EnrollmentRequest
from pki.keyfile import KdfCost, load_sealed, save_sealed, write_public
from pki.names import DeviceName, NodeName, Purpose
from pki.trust import crl_pem, fingerprint

ROOT_DAYS = 20 * 365
ISSUING_DAYS = 5 * 365
NODE_DAYS = 365
DEVICE_DAYS = 365
CRL_DAYS = 30
# Certificates start a little in the past: a node whose clock is a few minutes behind the
# CA's must not refuse a certificate issued a moment ago.
BACKDATE = dt.timedelta(minutes=10)


class CaError(RuntimeError):
    """The CA cannot do what was asked; the message says what to do instead."""


@dataclass(frozen=True)
class CaPaths:
    ca_dir: Path
    root_dir: Path

    @classmethod
    def of(cls, ca_dir: Path, root_dir: Path | None = None) -> CaPaths:
        return cls(ca_dir, root_dir or ca_dir / "root")

    @property
    def root_cert(self) -> Path:
        return self.root_dir / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.root_dir / "root.key.sealed"

    @property
    def issuing_cert(self) -> Path:
        return self.ca_dir / "issuing" / "issuing.pem"

    @property
    def issuing_key(self) -> Path:
        return self.ca_dir / "issuing" / "issuing.key.sealed"

    @property
    def registry(self) -> Path:
        return self.ca_dir / "issued.db"

    @property
    def crl(self) -> Path:
        return self.ca_dir / "crl.pem"


def _name(org: str, cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, cn),
        ]
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ee_usage(purpose: Purpose) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=purpose is not Purpose.RECEIVING,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=purpose is Purpose.RECEIVING,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def init_ca(
    paths: CaPaths,
    *,
    organization: str,
    root_passphrase: bytes,
    issuing_passphrase: bytes,
    now: dt.datetime,
    cost: KdfCost | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[x509.Certificate, x509.Certificate]:
    """Create the root and the issuing CA, their sealed keys, and an empty CRL."""
    if paths.root_cert.exists() or paths.issuing_cert.exists():
        raise CaError(f"a CA already exists in {paths.ca_dir}; refusing to overwrite it")
    progress("generating the root key (ECDSA P-384)")
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_name = _name(organization, f"{organization} Zastava Root CA")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=ROOT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA384())
    )
    progress("generating the issuing CA key (ECDSA P-256)")
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    issuing = (
        x509.CertificateBuilder()
        .subject_name(_name(organization, f"{organization} Zastava Issuing CA"))
        .issuer_name(root_name)
        .public_key(issuing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=ISSUING_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA384())
    )
    progress("sealing the root key with its passphrase (Argon2id)")
    save_sealed(paths.root_key, root_key, root_passphrase, cost)
    write_public(paths.root_cert, root.public_bytes(Encoding.PEM))
    progress("sealing the issuing CA key with its passphrase (Argon2id)")
    save_sealed(paths.issuing_key, issuing_key, issuing_passphrase, cost)
    write_public(paths.issuing_cert, issuing.public_bytes(Encoding.PEM))
    ca = IssuingCA(paths, issuing_key, issuing, root)
    ca.record(issuing, kind="issuing", now=now)
    ca.write_crl(now)
    return root, issuing


class IssuingCA:
    """The online-when-needed CA that signs node and device certificates and the CRL."""

    def __init__(
        self,
        paths: CaPaths,
        key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        root: x509.Certificate,
    ) -> None:
        self.paths = paths
        self.key = key
        self.certificate = certificate
        self.root = root
        self.db = sqlite_utils.Database(paths.registry)
        self.db.table("issued").create(
            {
                "serial": str,
                "kind": str,
                "subject": str,
                "not_after": str,
                "fingerprint": str,
                "issued_at": str,
                "revoked_at": str,
                "reason": str,
            },
            pk="serial",
            not_null={"kind", "subject", "not_after", "fingerprint", "issued_at"},
            if_not_exists=True,
        )
        self.db.table("crl_number").create({"id": int, "n": int}, pk="id", if_not_exists=True)

    @classmethod
    def open(cls, paths: CaPaths, passphrase: bytes) -> IssuingCA:
        if not paths.issuing_key.exists():
            raise CaError(
                f"no issuing CA in {paths.ca_dir} (run 'zastava pki init --ca-dir {paths.ca_dir}')"
            )
        key = load_sealed(paths.issuing_key, passphrase)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"{paths.issuing_key}: not an ECDSA key")
        cert = x509.load_pem_x509_certificate(paths.issuing_cert.read_bytes())
        root = x509.load_pem_x509_certificate(paths.root_cert.read_bytes())
        return cls(paths, key, cert, root)

    def _builder(
        self, subject_cn: str, public_key: CertificatePublicKeyTypes, now: dt.datetime, days: int
    ) -> x509.CertificateBuilder:
        not_after = min(now + dt.timedelta(days=days), self.certificate.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(_name(self._org(), subject_cn))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
        )

    def _org(self) -> str:
        attrs = self.certificate.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        return str(attrs[0].value) if attrs else "Zastava"

    def sign_request(
        self,
        request: EnrollmentRequest,
        *,
        expect: NodeName,
        now: dt.datetime,
        days: int = NODE_DAYS,
    ) -> CertificateBundle:
        """Certify the three keys of ``request`` for exactly the node it names.

        ``expect`` is what the operator means to sign; a request for anything else is refused.
        """
        if request.name != expect:
            raise CaError(
                f"the request is for {request.name.uri}, not {expect.uri}; refusing to sign"
            )
        uri = x509.UniformResourceIdentifier(request.name.uri)
        certs: dict[Purpose, x509.Certificate] = {}
        keys: dict[Purpose, CertificatePublicKeyTypes] = {
            Purpose.TLS: request.tls_csr.public_key(),
            Purpose.SIGNING: request.signing_csr.public_key(),
            Purpose.RECEIVING: request.receiving_key,
        }
        for purpose, public_key in keys.items():
            names: list[x509.GeneralName] = [uri]
            if purpose is Purpose.TLS:
                names += [x509.DNSName(d) for d in request.dns_names]
                names += [x509.IPAddress(i) for i in request.ip_addresses]
            cn = f"{request.name.site} {request.name.role.value} {purpose.value}"
            cert = (
                self._builder(cn, public_key, now, days)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(_ee_usage(purpose), critical=True)
                .add_extension(x509.ExtendedKeyUsage(list(purpose.eku)), critical=False)
                .sign(self.key, hashes.SHA256())
            )
            self.record(cert, kind=f"node-{purpose.value}", now=now)
            certs[purpose] = cert
        return CertificateBundle(
            tls=certs[Purpose.TLS],
            signing=certs[Purpose.SIGNING],
            receiving=certs[Purpose.RECEIVING],
            issuing=self.certificate,
            root=self.root,
            crl=self.current_crl(now),
        )

    def issue_device(
        self, name: DeviceName, *, now: dt.datetime, days: int = DEVICE_DAYS
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A key and client certificate for a user's managed phone or laptop."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            self._builder(f"{name.login} device", key.public_key(), now, days)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(name.uri)]), False
            )
            .add_extension(_ee_usage(Purpose.TLS), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.record(cert, kind="device", now=now)
        return key, cert

    def record(self, cert: x509.Certificate, *, kind: str, now: dt.datetime) -> None:
        san_uris = []
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            san_uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            pass
        self.db.table("issued").insert(
            {
                "serial": f"{cert.serial_number:x}",
                "kind": kind,
                "subject": san_uris[0] if san_uris else cert.subject.rfc4514_string(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "fingerprint": fingerprint(cert),
                "issued_at": now.isoformat(),
                "revoked_at": None,
                "reason": None,
            }
        )

    def issued(self) -> list[dict[str, str | None]]:
        return list(self.db.table("issued").rows_where(order_by="issued_at"))

    def revoke(
        self,
        *,
        now: dt.datetime,
        serial: str | None = None,
        node: NodeName | None = None,
        device: DeviceName | None = None,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
    ) -> list[str]:
        """Mark certificates revoked and write a new CRL; returns the serials revoked.

        Select by ``serial`` (hex), by ``node`` (all three of its keys) or by ``device``.
        """
        if sum(x is not None for x in (serial, node, device)) != 1:
            raise CaError("name exactly one of: a serial, a node, a device")
        if serial is not None:
            where, args = "serial = ?", [serial.lower().removeprefix("0x")]
        else:
            uri = node.uri if node is not None else device.uri  # type: ignore[union-attr]
            where, args = "subject = ?", [uri]
        rows = list(
            self.db.table("issued").rows_where(
                f"{where} and revoked_at is null and kind != 'issuing'", args
            )
        )
        if not rows:
            raise CaError("no unrevoked certificate matches; see 'zastava pki list'")
        with self.db.conn:
            for row in rows:
                self.db.table("issued").update(
                    row["serial"], {"revoked_at": now.isoformat(), "reason": reason.value}
                )
        self.write_crl(now)
        return [str(r["serial"]) for r in rows]

    def _next_crl_number(self) -> int:
        with self.db.conn:
            rows = list(self.db.table("crl_number").rows)
            n = int(rows[0]["n"]) + 1 if rows else 1
            self.db.table("crl_number").upsert({"id": 1, "n": n}, pk="id")
        return n

    def current_crl(self, now: dt.datetime) -> x509.CertificateRevocationList:
        """The CRL on disk if it is still fresh for a while, else a new one."""
        if self.paths.crl.exists():
            crl = x509.load_pem_x509_crl(self.paths.crl.read_bytes())
            next_update = crl.next_update_utc
            if next_update is not None and next_update - now > dt.timedelta(days=CRL_DAYS / 2):
                return crl
        return self.write_crl(now)

    def write_crl(self, now: dt.datetime, days: int = CRL_DAYS) -> x509.CertificateRevocationList:
        """Sign a CRL listing every revoked certificate and store it as ``crl.pem``."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - BACKDATE)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(self._next_crl_number()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        for row in self.db.table("issued").rows_where("revoked_at is not null"):
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(str(row["serial"]), 16))
                .revocation_date(dt.datetime.fromisoformat(str(row["revoked_at"])))
            )
            if row["reason"] and row["reason"] != "unspecified":
                entry = entry.add_extension(
                    x509.CRLReason(x509.ReasonFlags(row["reason"])), critical=False
                )
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self.key, hashes.SHA256())
        write_public(self.paths.crl, crl_pem(crl))
        return crl
