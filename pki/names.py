"""Names that bind a key to a node or a person: roles, purposes, site ids, and their OIDs.

A node certificate names its holder with one URI in subjectAltName,
``urn:zastava:node:<role>:<site>``; a device certificate with
``urn:zastava:device:<site>:<login>``. The key's purpose is an extended key usage:
TLS keys carry the standard serverAuth/clientAuth, the Ed25519 bundle-signing and the X25519
bundle-receiving keys carry Zastava's own OIDs (under a UUID arc, ITU-T X.667, so no
registration is needed and no collision is possible).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

# 2.25.<UUID as integer>: Zastava's private OID arc (UUID 6a1d4c3e-4f0b-4e1b-9a57-2b7f3c0d9e11).
ZASTAVA_ARC = "2.25.141050290561837528754043264377033694737"
OID_EKU_BUNDLE_SIGNING = ObjectIdentifier(ZASTAVA_ARC + ".1.1")
OID_EKU_BUNDLE_RECEIVING = ObjectIdentifier(ZASTAVA_ARC + ".1.2")
# Inside the Ed25519 signing request: the node's X25519 public key, so that the request's
# signature covers it (an X25519 key cannot sign a request of its own).
OID_REQ_X25519_KEY = ObjectIdentifier(ZASTAVA_ARC + ".2.1")

_SITE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_LOGIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


class Role(enum.Enum):
    """What a node is allowed to be. Bound into every node certificate."""

    EDGE = "edge"
    RELAY = "relay"
    CORE = "core"


class Purpose(enum.Enum):
    """What a certified key is for. One key, one purpose."""

    TLS = "tls"
    SIGNING = "signing"
    RECEIVING = "receiving"

    @property
    def eku(self) -> tuple[ObjectIdentifier, ...]:
        return _PURPOSE_EKU[self]


_PURPOSE_EKU: dict[Purpose, tuple[ObjectIdentifier, ...]] = {
    Purpose.TLS: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    Purpose.SIGNING: (OID_EKU_BUNDLE_SIGNING,),
    Purpose.RECEIVING: (OID_EKU_BUNDLE_RECEIVING,),
}


def check_site(site: str) -> str:
    """Return ``site`` if it is a valid site id (a DNS label: a-z, 0-9, '-'), else raise."""
    if not _SITE_RE.fullmatch(site):
        raise ValueError(
            f"invalid site id {site!r}: use 1-63 lowercase letters, digits and '-', "
            "not starting or ending with '-' (for example 'plant-a')"
        )
    return site


def check_login(login: str) -> str:
    """Return ``login`` if it is a valid user login, else raise."""
    if not _LOGIN_RE.fullmatch(login):
        raise ValueError(
            f"invalid login {login!r}: use 1-64 lowercase letters, digits, '.', '_' and '-'"
        )
    return login


@dataclass(frozen=True)
class NodeName:
    """``urn:zastava:node:<role>:<site>``."""

    role: Role
    site: str

    def __post_init__(self) -> None:
        check_site(self.site)

    @property
    def uri(self) -> str:
        return f"urn:zastava:node:{self.role.value}:{self.site}"

    @classmethod
    def parse(cls, uri: str) -> NodeName:
        parts = uri.split(":")
        if len(parts) != 5 or parts[:3] != ["urn", "zastava", "node"]:
            raise ValueError(f"not a Zastava node name: {uri!r}")
        try:
            role = Role(parts[3])
        except ValueError:
            raise ValueError(f"unknown role {parts[3]!r} in {uri!r}") from None
        return cls(role, check_site(parts[4]))


@dataclass(frozen=True)
class DeviceName:
    """``urn:zastava:device:<site>:<login>``: a user's managed device, homed at a site."""

    site: str
    login: str

    def __post_init__(self) -> None:
        check_site(self.site)
        check_login(self.login)

    @property
    def uri(self) -> str:
        return f"urn:zastava:device:{self.site}:{self.login}"

    @classmethod
    def parse(cls, uri: str) -> DeviceName:
        parts = uri.split(":")
        if len(parts) != 5 or parts[:3] != ["urn", "zastava", "device"]:
            raise ValueError(f"not a Zastava device name: {uri!r}")
        return cls(check_site(parts[3]), check_login(parts[4]))


def zastava_uris(names: x509.SubjectAlternativeName | list[x509.GeneralName]) -> list[str]:
    """The ``urn:zastava:`` URIs among subjectAltName entries."""
    return [
        n.value
        for n in names
        if isinstance(n, x509.UniformResourceIdentifier) and n.value.startswith("urn:zastava:")
    ]
