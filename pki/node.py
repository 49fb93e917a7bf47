"""A node's own credentials: its keys, its certificates, and the trust store it verifies with.

Layout of a node directory::

    private/tls.key  private/signing.key  private/receiving.key   (0600, directory 0700)
    request.pem                                                      the enrollment request
    certs/tls.pem (leaf + issuing CA)  certs/signing.pem  certs/receiving.pem
    trust/roots.pem  trust/intermediates.pem  trust/crl.pem

Keys never leave ``private/``. Import refuses a certificate bundle whose certificates do not
match this node's keys or name, or whose root is not the one the admin was told to expect.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pki.enrollment import CertificateBundle, EnrollmentRequest, IPAddress
from pki.keyfile import load_key, save_key, write_public
from pki.names import NodeName, Purpose
from pki.trust import TrustStore, VerificationError, fingerprint, verify_node

_KEY_FILES = {
    Purpose.TLS: "tls.key",
    Purpose.SIGNING: "signing.key",
    Purpose.RECEIVING: "receiving.key",
}


class NodeError(RuntimeError):
    """The node directory is not in the state the command needs; the message says why."""


def _raw(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NodeKeys:
    tls: ec.EllipticCurvePrivateKey
    signing: ed25519.Ed25519PrivateKey
    receiving: x25519.X25519PrivateKey

    @classmethod
    def generate(cls) -> NodeKeys:
        return cls(
            ec.generate_private_key(ec.SECP256R1()),
            ed25519.Ed25519PrivateKey.generate(),
            x25519.X25519PrivateKey.generate(),
        )

    @classmethod
    def load(cls, directory: Path) -> NodeKeys:
        keys = [load_key(directory / "private" / _KEY_FILES[p]) for p in Purpose]
        tls, signing, receiving = keys
        if not (
            isinstance(tls, ec.EllipticCurvePrivateKey)
            and isinstance(signing, ed25519.Ed25519PrivateKey)
            and isinstance(receiving, x25519.X25519PrivateKey)
        ):
            raise NodeError(f"{directory}/private: a key file holds the wrong type of key")
        return cls(tls, signing, receiving)

    def save(self, directory: Path) -> None:
        private = directory / "private"
        save_key(private / _KEY_FILES[Purpose.TLS], self.tls)
        save_key(private / _KEY_FILES[Purpose.SIGNING], self.signing)
        save_key(private / _KEY_FILES[Purpose.RECEIVING], self.receiving)

    def matches(self, purpose: Purpose, cert: x509.Certificate) -> bool:
        public = cert.public_key()
        if purpose is Purpose.TLS:
            mine = self.tls.public_key().public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo
            )
            return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == mine
        key = self.signing if purpose is Purpose.SIGNING else self.receiving
        if not isinstance(public, ed25519.Ed25519PublicKey | x25519.X25519PublicKey):
            return False
        return hmac.compare_digest(_raw(public), _raw(key.public_key()))


def create_request(
    directory: Path,
    name: NodeName,
    *,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[IPAddress, ...] = (),
) -> EnrollmentRequest:
    """Generate the node's keys and write ``request.pem``. Refuses to replace existing keys."""
    if (directory / "private").exists():
        raise NodeError(
            f"{directory} already holds node keys; use a new directory, or remove "
            f"{directory / 'private'} deliberately to re-key"
        )
    keys = NodeKeys.generate()
    keys.save(directory)
    request = EnrollmentRequest.build(
        name, keys.tls, keys.signing, keys.receiving, dns_names, ip_addresses
    )
    write_public(directory / "request.pem", bytes(request))
    return request


def import_bundle(
    directory: Path,
    bundle: CertificateBundle,
    *,
    now: dt.datetime,
    root_fingerprint: str | None = None,
) -> NodeCredentials:
    """Check a certificate bundle from the CA against this node and install it.

    The root must equal the one already trusted here, or, on first import, have the
    SHA-256 fingerprint the admin was given with the CA (``root_fingerprint``).
    """
    request_path = directory / "request.pem"
    if not request_path.exists():
        raise NodeError(f"{directory} has no request.pem: run 'zastava pki request' here first")
    request = EnrollmentRequest.parse(request_path.read_bytes())
    keys = NodeKeys.load(directory)
    trust_dir = directory / "trust"
    root_fp = fingerprint(bundle.root)
    if (trust_dir / "roots.pem").exists():
        known = TrustStore.load(trust_dir)
        if all(fingerprint(r) != root_fp for r in known.roots):
            raise VerificationError(
                "the bundle's root CA is not the one this node already trusts; refusing it"
            )
    elif root_fingerprint is None:
        raise NodeError(
            "first import: give the root CA fingerprint you received with the CA "
            f"(--root-fingerprint); this bundle's root is {root_fp}"
        )
    elif _normal_fp(root_fingerprint) != root_fp:
        raise VerificationError(
            f"the bundle's root CA fingerprint is {root_fp}, not the expected "
            f"{_normal_fp(root_fingerprint)}; refusing it"
        )
    trust = TrustStore((bundle.root,), (bundle.issuing,), ()).with_crls([bundle.crl])
    for purpose in Purpose:
        cert = bundle.certificate(purpose)
        if not keys.matches(purpose, cert):
            raise VerificationError(
                f"the {purpose.value} certificate in the bundle is not for this node's key"
            )
        verify_node(
            cert,
            trust=trust,
            role=request.name.role,
            site=request.name.site,
            purpose=purpose,
            now=now,
        )
    write_public(directory / "certs" / "tls.pem", _pem(bundle.tls, bundle.issuing))
    write_public(directory / "certs" / "signing.pem", _pem(bundle.signing))
    write_public(directory / "certs" / "receiving.pem", _pem(bundle.receiving))
    for fname, data in trust.pem_files().items():
        write_public(trust_dir / fname, data)
    return NodeCredentials.load(directory)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def _normal_fp(text: str) -> str:
    return "".join(text.split()).replace(":", "").lower()


@dataclass(frozen=True)
class NodeCredentials:
    """Everything a running node needs to prove who it is and to check others."""

    name: NodeName
    keys: NodeKeys
    tls_chain: tuple[x509.Certificate, ...]
    signing_certificate: x509.Certificate
    receiving_certificate: x509.Certificate
    trust: TrustStore
    directory: Path

    @classmethod
    def load(cls, directory: Path) -> NodeCredentials:
        certs = directory / "certs"
        if not (certs / "tls.pem").exists():
            raise NodeError(
                f"{directory} has no certificates yet: import the CA's bundle with "
                "'zastava pki import'"
            )
        tls_chain = tuple(x509.load_pem_x509_certificates((certs / "tls.pem").read_bytes()))
        signing = x509.load_pem_x509_certificate((certs / "signing.pem").read_bytes())
        receiving = x509.load_pem_x509_certificate((certs / "receiving.pem").read_bytes())
        request = EnrollmentRequest.parse((directory / "request.pem").read_bytes())
        return cls(
            request.name,
            NodeKeys.load(directory),
            tls_chain,
            signing,
            receiving,
            TrustStore.load(directory / "trust"),
            directory,
        )

    @property
    def tls_cert_file(self) -> Path:
        return self.directory / "certs" / "tls.pem"

    @property
    def tls_key_file(self) -> Path:
        return self.directory / "private" / _KEY_FILES[Purpose.TLS]

    def install_crls(self, crls: list[x509.CertificateRevocationList]) -> TrustStore:
        """Adopt newer CRLs (e.g. from a core bundle); returns the updated trust store."""
        trust = self.trust.with_crls(crls)
        for fname, data in trust.pem_files().items():
            write_public(self.directory / "trust" / fname, data)
        return trust
