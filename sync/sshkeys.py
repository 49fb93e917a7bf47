"""SSH views of the node keys: the relay's host key and the nodes' client keys are their TLS
ECDSA P-256 keys, so both ends need the same two conversions."""

from __future__ import annotations

import base64

import paramiko
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def ssh_key_blob(key: ec.EllipticCurvePublicKey) -> tuple[str, bytes]:
    """The SSH key type and wire blob (what ``PKey.asbytes()`` returns) of an ECDSA key."""
    kind, b64 = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split()[:2]
    return kind.decode("ascii"), base64.b64decode(b64)


def paramiko_key(key: ec.EllipticCurvePrivateKey) -> paramiko.ECDSAKey:
    return paramiko.ECDSAKey(vals=(key, key.public_key()))
