"""Opening an SSH/SFTP session with a relay: its identity first, then ours (paramiko adapter).

Theory of operation. Before any byte is sent, the relay certificate the node was configured
with must pass ``pki.trust.verify_node`` (role relay, TLS purpose) against the node's trust
store at ``now``. The SSH handshake is then limited to that certificate's key type, and the
host key the relay presents must be exactly that key; otherwise the session is closed before
authentication, so a wrong relay or a man in the middle learns nothing and gets no signature.
The node authenticates as its site id with the ECDSA key of its TLS certificate, and opens
the SFTP subsystem. The whole set-up runs under the watchdog with a deadline.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import paramiko
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pki.names import Purpose, Role
from pki.node import NodeCredentials
from pki.trust import TrustStore, VerificationError, verify_node
from sync.sshkeys import paramiko_key, ssh_key_blob
from sync.transport.errors import (
    AuthenticationRefusedError,
    RelayIdentityError,
    RelayUnreachableError,
    TransportError,
)
from sync.transport.options import TransportOptions
from sync.transport.watchdog import Watchdog

log = logging.getLogger("zastava.transport")


@dataclass
class Connection:
    transport: paramiko.Transport
    sftp: paramiko.SFTPClient
    watchdog: Watchdog

    @property
    def active(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        self.watchdog.stop()
        try:
            self.sftp.close()
        except Exception:  # already broken: closing the transport is what matters
            pass
        self.transport.close()


def ssh_host_key(cert: x509.Certificate) -> tuple[str, bytes]:
    """The SSH key type and wire blob of a certificate's ECDSA key (the relay's host key)."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise RelayIdentityError("the relay certificate's key is not an ECDSA key")
    return ssh_key_blob(key)


def relay_host_key(
    relay_certificate: x509.Certificate, *, trust: TrustStore, now: dt.datetime
) -> tuple[str, bytes]:
    """The host key to expect, once the certificate is verified; else RelayIdentityError."""
    try:
        verify_node(relay_certificate, trust=trust, role=Role.RELAY, purpose=Purpose.TLS, now=now)
    except VerificationError as e:
        raise RelayIdentityError(
            f"relay certificate refused ({e}): check the relay certificate configured for this "
            "node; it must be the relay's TLS certificate, from this node's CA, valid and not "
            "revoked"
        ) from None
    return ssh_host_key(relay_certificate)


def describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def open_connection(
    host: str,
    port: int,
    creds: NodeCredentials,
    relay_certificate: x509.Certificate,
    *,
    trust: TrustStore,
    now: dt.datetime,
    options: TransportOptions,
    monotonic: Callable[[], float],
) -> Connection:
    """A verified, authenticated SFTP session with the relay, or a TransportError."""
    address = f"{host}:{port}"
    key_type, key_blob = relay_host_key(relay_certificate, trust=trust, now=now)
    try:
        sock = socket.create_connection((host, port), timeout=options.connect_timeout)
    except OSError as e:
        raise RelayUnreachableError(f"relay {address} unreachable: {describe(e)}") from e
    try:
        transport = paramiko.Transport(sock)
    except BaseException:
        sock.close()
        raise
    watchdog = Watchdog(
        transport.close,
        window=options.rate_window,
        min_rate=options.min_rate,
        monotonic=monotonic,
    )
    watchdog.begin("connection", deadline=options.connect_timeout)
    try:
        sftp = _handshake(transport, address, creds, key_type, key_blob, options)
    except BaseException as e:
        watchdog.stop()
        transport.close()
        if isinstance(e, TransportError) or not isinstance(e, Exception):
            raise
        if watchdog.fired:
            raise RelayUnreachableError(
                f"relay {address} unreachable: no SSH session within {options.connect_timeout:g} s"
            ) from e
        if isinstance(e, OSError | EOFError | paramiko.SSHException):
            raise RelayUnreachableError(
                f"relay {address} unreachable: SSH failed: {describe(e)}"
            ) from e
        raise
    watchdog.end()
    log.info("connected to relay %s as %s", address, creds.name.site)
    return Connection(transport, sftp, watchdog)


def _handshake(
    transport: paramiko.Transport,
    address: str,
    creds: NodeCredentials,
    key_type: str,
    key_blob: bytes,
    options: TransportOptions,
) -> paramiko.SFTPClient:
    security = transport.get_security_options()
    security.key_types = (key_type,)
    known = security.ciphers
    security.ciphers = tuple(c for c in options.ciphers if c in known) or known
    transport.banner_timeout = transport.handshake_timeout = options.connect_timeout
    transport.auth_timeout = options.connect_timeout
    transport.start_client(timeout=options.connect_timeout)
    host_key = transport.get_remote_server_key()  # raises if the handshake did not finish
    if host_key.get_name() != key_type or host_key.asbytes() != key_blob:
        raise RelayIdentityError(
            f"relay {address} presented a host key that is not the key of the relay "
            "certificate configured for this node: another relay, or a man in the middle; "
            "not authenticating. Check the relay address and the relay certificate."
        )
    tls = creds.keys.tls
    site = creds.name.site
    try:
        transport.auth_publickey(site, paramiko_key(tls))
    except paramiko.AuthenticationException as e:
        raise AuthenticationRefusedError(
            "relay refused our key: is this node's certificate in the relay's nodes_dir, "
            f"valid and not revoked? (relay {address}, site {site!r}; {describe(e)})"
        ) from e
    if not transport.is_authenticated():
        raise AuthenticationRefusedError(
            f"relay {address} asks for more than our key: is it a Zastava relay?"
        )
    chan = transport.open_session(
        window_size=options.window_size,
        max_packet_size=options.max_packet_size,
        timeout=options.connect_timeout,
    )
    chan.invoke_subsystem("sftp")
    return paramiko.SFTPClient(chan)
