"""The one verification API: is this certificate a valid <role> for <site> at <now>?

Every package that must trust a key (the relay accepting an SSH key, a receiver checking a
bundle's signer, the edge accepting a client certificate) asks this module, never parses
certificates itself. It trusts only the roots in a :class:`TrustStore`; it refuses:

- a chain that does not lead to a trusted root (path validation by
  ``cryptography.x509.verification``, the Web PKI profile, at most one intermediate);
- a certificate outside its validity at the injected ``now`` (hard expiry);
- a certificate listed on its issuer's CRL, or any node or device certificate whose
  issuer has no current CRL in the store (fail closed: a disconnected plant keeps working
  only while the CRL it last received is fresh);
- a name that is not the expected role or site, and a key used for another purpose.

The clock is always an argument: nothing here reads the system time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki.names import (
    OID_EKU_BUNDLE_RECEIVING,
    OID_EKU_BUNDLE_SIGNING,
    DeviceName,
    NodeName,
    Purpose,
    Role,
    zastava_uris,
)
from pki.pem import split_pem, to_pem

ROOTS_FILE = "roots.pem"
INTERMEDIATES_FILE = "intermediates.pem"
CRL_FILE = "crl.pem"


class VerificationError(ValueError):
    """A certificate was refused. The message says which check failed."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class TrustStore:
    """Trust anchors, known intermediates, and the CRLs that apply to them."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    def __post_init__(self) -> None:
        if not self.roots:
            raise ValueError("a trust store needs at least one root certificate")

    @classmethod
    def from_pem(cls, roots: bytes, intermediates: bytes = b"", crls: bytes = b"") -> TrustStore:
        return cls(
            tuple(_load_certs(roots, "roots")),
            tuple(_load_certs(intermediates, "intermediates")) if intermediates.strip() else (),
            tuple(load_crls(crls)),
        )

    @classmethod
    def load(cls, directory: Path) -> TrustStore:
        """Load ``roots.pem``, ``intermediates.pem`` and ``crl.pem`` from ``directory``."""
        roots = directory / ROOTS_FILE
        if not roots.exists():
            raise FileNotFoundError(
                f"no trust store at {directory}: {ROOTS_FILE} is missing "
                "(import a certificate bundle with 'zastava pki import')"
            )

        def read(name: str) -> bytes:
            p = directory / name
            return p.read_bytes() if p.exists() else b""

        return cls.from_pem(read(ROOTS_FILE), read(INTERMEDIATES_FILE), read(CRL_FILE))

    def pem_files(self) -> dict[str, bytes]:
        """The file contents :meth:`load` reads, for writing a store to disk."""
        return {
            ROOTS_FILE: b"".join(c.public_bytes(Encoding.PEM) for c in self.roots),
            INTERMEDIATES_FILE: b"".join(c.public_bytes(Encoding.PEM) for c in self.intermediates),
            CRL_FILE: b"".join(c.public_bytes(Encoding.PEM) for c in self.crls),
        }

    def with_crls(self, crls: Iterable[x509.CertificateRevocationList]) -> TrustStore:
        """A store whose CRLs are replaced by ``crls`` where those are newer (same issuer).

        Each CRL must be signed by a root or intermediate in this store, else it is refused:
        a CRL from a bundle cannot be forged by whoever carried the bundle.
        """
        merged = {crl.issuer.public_bytes(): crl for crl in self.crls}
        for crl in crls:
            issuer = self._ca_for(crl.issuer)
            if issuer is None or not _crl_signed_by(crl, issuer):
                raise VerificationError(
                    f"CRL from {crl.issuer.rfc4514_string()} is not signed by a CA in the "
                    "trust store"
                )
            key = crl.issuer.public_bytes()
            old = merged.get(key)
            if old is None or _crl_number(crl) > _crl_number(old):
                merged[key] = crl
        return TrustStore(self.roots, self.intermediates, tuple(merged.values()))

    def _ca_for(self, name: x509.Name) -> x509.Certificate | None:
        for c in (*self.roots, *self.intermediates):
            if c.subject == name:
                return c
        return None


@dataclass(frozen=True)
class VerifiedNode:
    """A node key that passed every check, with what its certificate says."""

    name: NodeName
    purpose: Purpose
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def role(self) -> Role:
        return self.name.role

    @property
    def site(self) -> str:
        return self.name.site

    @property
    def public_key(self) -> CertificatePublicKeyTypes:
        return self.certificate.public_key()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)


@dataclass(frozen=True)
class VerifiedDevice:
    """A user's managed device certificate that passed every check."""

    name: DeviceName
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)


def verify_node(
    chain: x509.Certificate | Sequence[x509.Certificate],
    *,
    trust: TrustStore,
    role: Role | Iterable[Role],
    purpose: Purpose,
    now: dt.datetime,
    site: str | None = None,
) -> VerifiedNode:
    """Check that ``chain`` (leaf first, intermediates optional) certifies a node key.

    ``role`` is the role (or roles) accepted, ``site`` the site id required (``None`` accepts
    any site: the caller then decides from the returned name). Raises
    :class:`VerificationError` naming the failed check.
    """
    roles = {role} if isinstance(role, Role) else set(role)
    with _malformed_is_refused(error=VerificationError):
        leaf, path = _validate(chain, trust, purpose.eku, now)
    names = [NodeName.parse(u) for u in _zastava_uris(leaf, "urn:zastava:node:")]
    if len(names) != 1:
        raise VerificationError(
            f"certificate names {len(names)} Zastava nodes; exactly one is required"
        )
    name = names[0]
    if name.role not in roles:
        expected = ", ".join(sorted(r.value for r in roles))
        raise VerificationError(
            f"role mismatch: certificate is for role {name.role.value}, expected {expected}"
        )
    if site is not None and name.site != site:
        raise VerificationError(
            f"site mismatch: certificate is for site {name.site!r}, expected {site!r}"
        )
    _check_key_type(leaf, purpose)
    _check_revocation(path, trust, now)
    return VerifiedNode(name, purpose, leaf, path)


def verify_device(
    chain: x509.Certificate | Sequence[x509.Certificate],
    *,
    trust: TrustStore,
    now: dt.datetime,
    site: str | None = None,
) -> VerifiedDevice:
    """Check a client certificate of a user's managed device (TLS client authentication)."""
    with _malformed_is_refused(error=VerificationError):
        leaf, path = _validate(chain, trust, (ExtendedKeyUsageOID.CLIENT_AUTH,), now)
    names = [DeviceName.parse(u) for u in _zastava_uris(leaf, "urn:zastava:device:")]
    if len(names) != 1:
        raise VerificationError("certificate is not a Zastava device certificate")
    if site is not None and names[0].site != site:
        raise VerificationError(
            f"site mismatch: device belongs to site {names[0].site!r}, expected {site!r}"
        )
    _check_revocation(path, trust, now)
    return VerifiedDevice(names[0], leaf, path)


_MALFORMED = (
    ValueError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    CryptographyDeprecationWarning,
)


@contextlib.contextmanager
def _malformed_is_refused(
    prefix: str = "malformed certificate", error: type[ValueError] = ValueError
) -> Iterator[None]:
    """Certificates are parsed lazily, and a malformed part surfaces as one of several
    exceptions (or only a deprecation warning) wherever it is first touched: turn each into
    ``error``. An untrusted certificate gets no benefit of the doubt."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            yield
        except VerificationError:
            raise
        except _MALFORMED as e:
            raise error(f"{prefix}: {e}") from None


def parse_certificate(der: bytes) -> x509.Certificate:
    """Parse a DER certificate from an untrusted source; any malformation is a ValueError.

    What ``cryptography`` still accepts with a deprecation warning (a negative serial, say)
    is refused here too: an untrusted certificate gets no benefit of the doubt.
    """
    with _malformed_is_refused("malformed certificate"):
        cert = x509.load_der_x509_certificate(der)
        # Parsing is lazy: touch every part now, so that a malformation surfaces here.
        _ = (cert.serial_number, cert.subject, cert.issuer, cert.public_key())
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, list(cert.extensions))
        return cert


def load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    crls = []
    for label, der in split_pem(data):
        if label != "X509 CRL":
            raise ValueError(f"expected only X509 CRL blocks, found {label!r}")
        crls.append(x509.load_der_x509_crl(der))
    return crls


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return to_pem("X509 CRL", crl.public_bytes(Encoding.DER))


def _load_certs(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as e:
        raise ValueError(f"{what}: not PEM certificates ({e})") from None


def _zastava_uris(leaf: x509.Certificate, prefix: str) -> list[str]:
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [u for u in zastava_uris(san) if u.startswith(prefix)]


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return t.astimezone(dt.UTC)


def _validate(
    chain: x509.Certificate | Sequence[x509.Certificate],
    trust: TrustStore,
    ekus: tuple[x509.ObjectIdentifier, ...],
    now: dt.datetime,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """Path validation; returns the leaf and the validated path (leaf first, root last)."""
    now = _utc(now)
    certs = [chain] if isinstance(chain, x509.Certificate) else list(chain)
    if not certs:
        raise VerificationError("no certificate given")
    leaf = certs[0]
    if now < leaf.not_valid_before_utc:
        raise VerificationError(
            f"certificate not yet valid: valid from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"UTC (check the clock)"
        )
    if now >= leaf.not_valid_after_utc:
        raise VerificationError(
            f"certificate expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )

    def eku_validator(policy: Any, cert: x509.Certificate, ext: Any) -> None:
        usages = set(ext) if ext is not None else set()
        missing = [o for o in ekus if o not in usages]
        if missing:
            raise ValueError(f"key usage does not permit {missing[0].dotted_string}")

    _check_eku(leaf, ekus)
    ee_policy = xv.ExtensionPolicy.webpki_defaults_ee().require_present(
        x509.ExtendedKeyUsage, xv.Criticality.NON_CRITICAL, eku_validator
    )
    verifier = (
        xv.PolicyBuilder()
        .store(xv.Store(list(trust.roots)))
        .time(now.replace(tzinfo=None))
        .max_chain_depth(1)
        .extension_policies(ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, [*certs[1:], *trust.intermediates])
    except xv.VerificationError as e:
        raise VerificationError(f"certificate chain refused: {e}") from None
    return leaf, tuple(verified.chain)


_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "TLS server",
    ExtendedKeyUsageOID.CLIENT_AUTH: "TLS client",
    OID_EKU_BUNDLE_SIGNING: "bundle signing",
    OID_EKU_BUNDLE_RECEIVING: "bundle receiving",
}


def _check_eku(leaf: x509.Certificate, ekus: tuple[x509.ObjectIdentifier, ...]) -> None:
    """Refuse a key certified for another purpose, naming both (clearer than the validator)."""
    try:
        have = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        have = []
    missing = [o for o in ekus if o not in have]
    if missing:
        names = ", ".join(_EKU_NAMES.get(o, o.dotted_string) for o in have) or "none"
        raise VerificationError(
            f"wrong key purpose: {_EKU_NAMES.get(missing[0], missing[0].dotted_string)} is "
            f"required, the certificate allows {names}"
        )


_KEY_TYPES: dict[Purpose, tuple[type, ...]] = {
    Purpose.TLS: (ec.EllipticCurvePublicKey,),
    Purpose.SIGNING: (ed25519.Ed25519PublicKey,),
    Purpose.RECEIVING: (x25519.X25519PublicKey,),
}


def _check_key_type(leaf: x509.Certificate, purpose: Purpose) -> None:
    key = leaf.public_key()
    if not isinstance(key, _KEY_TYPES[purpose]):
        raise VerificationError(
            f"a {purpose.value} certificate must hold a {_KEY_TYPES[purpose][0].__name__}, "
            f"not a {type(key).__name__}"
        )


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        return crl.is_signature_valid(key)
    except InvalidSignature:
        return False


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return -1


def _check_revocation(
    path: Sequence[x509.Certificate], trust: TrustStore, now: dt.datetime
) -> None:
    """Each certificate below the root is checked against its issuer's newest valid CRL.

    The leaf's issuer must have a current CRL (fail closed). An intermediate is checked
    against its root's CRL when the store holds one.
    """
    now = _utc(now)
    for depth, (cert, issuer) in enumerate(zip(path, path[1:], strict=False)):
        crls = [c for c in trust.crls if c.issuer == issuer.subject and _crl_signed_by(c, issuer)]
        if not crls:
            if depth == 0:
                raise VerificationError(
                    f"no CRL from {issuer.subject.rfc4514_string()} in the trust store; "
                    "import the current CRL ('zastava pki crl')"
                )
            continue
        crl = max(crls, key=_crl_number)
        next_update = crl.next_update_utc
        if next_update is None or now >= next_update:
            raise VerificationError(
                f"the CRL from {issuer.subject.rfc4514_string()} is stale (next update was due "
                f"{next_update:%Y-%m-%d %H:%M} UTC); import a current CRL"
                if next_update
                else "CRL has no next-update time"
            )
        revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is not None:
            reason = ""
            try:
                flag = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
                reason = f" ({flag.value})"
            except x509.ExtensionNotFound:
                pass
            raise VerificationError(
                f"certificate {cert.serial_number:x} was revoked at "
                f"{revoked.revocation_date_utc:%Y-%m-%d %H:%M} UTC{reason}"
            )
