"""Enrollment files: the node's request and the CA's certificate bundle.

An air-gapped node cannot talk to its CA, so enrollment travels as two files:

- the **request** (written on the node): two PKCS#10 requests, one for the node's TLS key
  (ECDSA P-256) and one for its Ed25519 bundle-signing key, which also carries the node's
  X25519 bundle-receiving public key in an extension so that its signature covers it. Both
  name the node as ``urn:zastava:node:<role>:<site>``; they must agree. Its fingerprint
  (SHA-256 over both DER requests) is read aloud or compared on paper between node and CA.
- the **certificate bundle** (written by the CA): the three node certificates, the issuing
  CA, the root and the current CRL.

Both parse strictly: a request whose parts disagree or whose signatures fail is refused
with the reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pki.names import OID_REQ_X25519_KEY, NodeName, Purpose, zastava_uris
from pki.pem import split_pem, to_pem
from pki.trust import crl_pem, parse_certificate

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def grouped(hex_digest: str) -> str:
    """``ab12cd34...`` as ``AB12 CD34 ...``: easier to compare by eye or read aloud."""
    h = hex_digest.upper()
    return " ".join(h[i : i + 4] for i in range(0, len(h), 4))


@dataclass(frozen=True)
class EnrollmentRequest:
    """A node's request for its three certificates."""

    name: NodeName
    tls_csr: x509.CertificateSigningRequest
    signing_csr: x509.CertificateSigningRequest

    @property
    def receiving_key(self) -> x25519.X25519PublicKey:
        ext = self.signing_csr.extensions.get_extension_for_oid(OID_REQ_X25519_KEY)
        assert isinstance(ext.value, x509.UnrecognizedExtension)
        return x25519.X25519PublicKey.from_public_bytes(ext.value.value)

    @property
    def dns_names(self) -> list[str]:
        return _san(self.tls_csr).get_values_for_type(x509.DNSName)

    @property
    def ip_addresses(self) -> list[IPAddress]:
        return _san(self.tls_csr).get_values_for_type(x509.IPAddress)  # type: ignore[return-value]

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.tls_csr.public_bytes(Encoding.DER))
        h.update(self.signing_csr.public_bytes(Encoding.DER))
        return h.hexdigest()

    @classmethod
    def build(
        cls,
        name: NodeName,
        tls_key: ec.EllipticCurvePrivateKey,
        signing_key: ed25519.Ed25519PrivateKey,
        receiving_key: x25519.X25519PrivateKey,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[IPAddress, ...] = (),
    ) -> EnrollmentRequest:
        from cryptography.hazmat.primitives import hashes

        subject = x509.Name(
            [x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{name.site} {name.role.value}")]
        )
        uri = x509.UniformResourceIdentifier(name.uri)
        tls_san = x509.SubjectAlternativeName(
            [uri] + [x509.DNSName(d) for d in dns_names] + [x509.IPAddress(i) for i in ip_addresses]
        )
        tls_csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(tls_san, critical=False)
            .sign(tls_key, hashes.SHA256())
        )
        raw = receiving_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        signing_csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(x509.SubjectAlternativeName([uri]), critical=False)
            .add_extension(x509.UnrecognizedExtension(OID_REQ_X25519_KEY, raw), critical=False)
            .sign(signing_key, None)
        )
        return cls(name, tls_csr, signing_csr)

    def __bytes__(self) -> bytes:
        head = (
            "# Zastava enrollment request. Carry this file to the CA; it holds no secret.\n"
            f"# node: {self.name.uri}\n"
            f"# fingerprint: {grouped(self.fingerprint)}\n"
        ).encode()
        return (
            head
            + to_pem("CERTIFICATE REQUEST", self.tls_csr.public_bytes(Encoding.DER))
            + to_pem("CERTIFICATE REQUEST", self.signing_csr.public_bytes(Encoding.DER))
        )

    @classmethod
    def parse(cls, data: bytes) -> EnrollmentRequest:
        blocks = split_pem(data)
        if len(blocks) != 2 or any(label != "CERTIFICATE REQUEST" for label, _ in blocks):
            raise ValueError(
                "an enrollment request holds exactly two CERTIFICATE REQUEST blocks, "
                f"found {[label for label, _ in blocks]}"
            )
        try:
            tls_csr, signing_csr = (x509.load_der_x509_csr(der) for _, der in blocks)
        except ValueError as e:
            raise ValueError(f"enrollment request: unreadable PKCS#10 request ({e})") from None
        if not isinstance(tls_csr.public_key(), ec.EllipticCurvePublicKey) or not isinstance(
            tls_csr.public_key().curve,  # type: ignore[union-attr]
            ec.SECP256R1,
        ):
            raise ValueError("enrollment request: the first request must be for an ECDSA P-256 key")
        if not isinstance(signing_csr.public_key(), ed25519.Ed25519PublicKey):
            raise ValueError("enrollment request: the second request must be for an Ed25519 key")
        for what, csr in (("TLS", tls_csr), ("signing", signing_csr)):
            if not csr.is_signature_valid:
                raise ValueError(f"enrollment request: the {what} request's signature is invalid")
        names = []
        for csr in (tls_csr, signing_csr):
            uris = zastava_uris(_san(csr))
            if len(uris) != 1:
                raise ValueError("enrollment request: each request must name exactly one node")
            names.append(NodeName.parse(uris[0]))
        if names[0] != names[1]:
            raise ValueError(
                f"enrollment request: its parts name different nodes ({names[0].uri} and "
                f"{names[1].uri})"
            )
        other = [n for n in _san(signing_csr) if not isinstance(n, x509.UniformResourceIdentifier)]
        if other:
            raise ValueError("enrollment request: the signing request may only name the node")
        for n in _san(tls_csr):
            if not isinstance(n, x509.UniformResourceIdentifier | x509.DNSName | x509.IPAddress):
                raise ValueError(f"enrollment request: unsupported name {n!r} in the TLS request")
        req = cls(names[0], tls_csr, signing_csr)
        try:
            req.receiving_key  # noqa: B018 - parse check
        except (x509.ExtensionNotFound, ValueError):
            raise ValueError(
                "enrollment request: the signing request does not carry a valid X25519 key"
            ) from None
        return req


def _san(csr: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName:
    try:
        return csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("enrollment request: a request has no subjectAltName") from None


@dataclass(frozen=True)
class CertificateBundle:
    """What the CA hands back: node certificates, CA chain, current CRL."""

    tls: x509.Certificate
    signing: x509.Certificate
    receiving: x509.Certificate
    issuing: x509.Certificate
    root: x509.Certificate
    crl: x509.CertificateRevocationList

    def certificate(self, purpose: Purpose) -> x509.Certificate:
        return {
            Purpose.TLS: self.tls,
            Purpose.SIGNING: self.signing,
            Purpose.RECEIVING: self.receiving,
        }[purpose]

    def __bytes__(self) -> bytes:
        certs = (self.tls, self.signing, self.receiving, self.issuing, self.root)
        head = b"# Zastava certificate bundle: tls, signing, receiving, issuing CA, root, CRL\n"
        return head + b"".join(c.public_bytes(Encoding.PEM) for c in certs) + crl_pem(self.crl)

    @classmethod
    def parse(cls, data: bytes) -> CertificateBundle:
        blocks = split_pem(data)
        labels = [label for label, _ in blocks]
        if labels != ["CERTIFICATE"] * 5 + ["X509 CRL"]:
            raise ValueError(
                "a certificate bundle holds five CERTIFICATE blocks then one X509 CRL, "
                f"found {labels}"
            )
        try:
            certs = [parse_certificate(der) for _, der in blocks[:5]]
            crl = x509.load_der_x509_crl(blocks[5][1])
        except ValueError as e:
            raise ValueError(f"certificate bundle: unreadable certificate or CRL ({e})") from None
        tls, signing, receiving, issuing, root = certs
        return cls(tls, signing, receiving, issuing, root, crl)
