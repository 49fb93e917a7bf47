"""PKI: enrollment round trip, path validation, revocation, roles and sites (THREATS A6, B1)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pki.ca import CaError, CaPaths, IssuingCA, init_ca
from pki.enrollment import CertificateBundle, EnrollmentRequest
from pki.names import DeviceName, NodeName, Purpose, Role
from pki.node import NodeCredentials, NodeError, NodeKeys, create_request, import_bundle
from pki.trust import (
    TrustStore,
    VerificationError,
    fingerprint,
    parse_certificate,
    verify_device,
    verify_node,
)
from tests.conftest import FAST_KDF, NOW, PASSPHRASE, EnrollFn, enroll_node, make_ca

ROLES = st.sampled_from(list(Role))
SITES_LIST = ["plant-a", "plant-b", "hq", "x1"]
SITES = st.sampled_from(SITES_LIST)
ONE_CERT_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_enrollment_round_trip(enroll: EnrollFn, ca: IssuingCA) -> None:
    creds = enroll(Role.EDGE, "plant-a", dns=("edge.plant-a.example",))
    assert creds.name == NodeName(Role.EDGE, "plant-a")
    for purpose, cert in (
        (Purpose.TLS, creds.tls_chain[0]),
        (Purpose.SIGNING, creds.signing_certificate),
        (Purpose.RECEIVING, creds.receiving_certificate),
    ):
        v = verify_node(
            cert, trust=creds.trust, role=Role.EDGE, site="plant-a", purpose=purpose, now=NOW
        )
        assert v.site == "plant-a" and v.role is Role.EDGE and v.purpose is purpose
        assert creds.keys.matches(purpose, cert)
    assert isinstance(creds.signing_certificate.public_key(), ed25519.Ed25519PublicKey)
    assert isinstance(creds.receiving_certificate.public_key(), x25519.X25519PublicKey)
    tls_key = creds.tls_chain[0].public_key()
    assert isinstance(tls_key, ec.EllipticCurvePublicKey) and tls_key.curve.name == "secp256r1"
    assert creds.tls_chain[1] == ca.certificate
    # The CA remembers what it issued.
    kinds = sorted(str(r["kind"]) for r in ca.issued())
    assert kinds == ["issuing", "node-receiving", "node-signing", "node-tls"]


def test_signed_with_the_node_signing_key_verifies(enroll: EnrollFn) -> None:
    creds = enroll(Role.RELAY, "dmz")
    v = verify_node(
        creds.signing_certificate,
        trust=creds.trust,
        role=Role.RELAY,
        purpose=Purpose.SIGNING,
        now=NOW,
    )
    key = v.public_key
    assert isinstance(key, ed25519.Ed25519PublicKey)
    key.verify(creds.keys.signing.sign(b"hello"), b"hello")


def test_foreign_ca_is_refused(enroll: EnrollFn, tmp_path: Path) -> None:
    """B1/A6: a chain from another CA, even with the same names, is refused."""
    ours = enroll(Role.EDGE, "plant-a")
    paths = CaPaths.of(tmp_path / "foreign")
    init_ca(
        paths,
        organization="Test Plant Co",
        root_passphrase=PASSPHRASE,
        issuing_passphrase=PASSPHRASE,
        now=NOW,
        cost=FAST_KDF,
    )
    foreign = IssuingCA.open(paths, PASSPHRASE)
    name = NodeName(Role.EDGE, "plant-a")
    request = create_request(tmp_path / "impostor", name)
    bundle = foreign.sign_request(request, expect=name, now=NOW)
    with pytest.raises(VerificationError, match="certificate chain refused"):
        verify_node(
            [bundle.signing, bundle.issuing],
            trust=ours.trust,
            role=Role.EDGE,
            purpose=Purpose.SIGNING,
            now=NOW,
        )
    # Importing the foreign bundle into our node is refused by the root check.
    with pytest.raises(VerificationError, match="root CA is not the one this node already trusts"):
        import_bundle(ours.directory, bundle, now=NOW)


def test_expired_and_not_yet_valid(enroll: EnrollFn) -> None:
    creds = enroll(Role.EDGE, "plant-a")
    cert = creds.signing_certificate
    later = cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(VerificationError, match="certificate expired at"):
        verify_node(cert, trust=creds.trust, role=Role.EDGE, purpose=Purpose.SIGNING, now=later)
    earlier = cert.not_valid_before_utc - dt.timedelta(seconds=1)
    with pytest.raises(VerificationError, match="not yet valid"):
        verify_node(cert, trust=creds.trust, role=Role.EDGE, purpose=Purpose.SIGNING, now=earlier)


def test_revoked_certificate_is_refused(enroll: EnrollFn, ca: IssuingCA) -> None:
    creds = enroll(Role.EDGE, "plant-b")
    other = enroll(Role.EDGE, "plant-a")
    revoked = ca.revoke(
        now=NOW + dt.timedelta(hours=1),
        node=NodeName(Role.EDGE, "plant-b"),
        reason=x509.ReasonFlags.key_compromise,
    )
    assert len(revoked) == 3
    crl = x509.load_pem_x509_crl(ca.paths.crl.read_bytes())
    trust = creds.trust.with_crls([crl])
    at = NOW + dt.timedelta(hours=2)
    with pytest.raises(VerificationError, match=r"was revoked at .*\(keyCompromise\)"):
        verify_node(
            creds.signing_certificate, trust=trust, role=Role.EDGE, purpose=Purpose.SIGNING, now=at
        )
    # Others are unaffected.
    verify_node(
        other.signing_certificate, trust=trust, role=Role.EDGE, purpose=Purpose.SIGNING, now=at
    )
    # The node that adopts the CRL (as from a core bundle) refuses too, from its files.
    creds.install_crls([crl])
    reloaded = TrustStore.load(creds.directory / "trust")
    with pytest.raises(VerificationError, match="was revoked"):
        verify_node(creds.tls_chain, trust=reloaded, role=Role.EDGE, purpose=Purpose.TLS, now=at)


def test_crl_must_be_present_and_fresh(enroll: EnrollFn) -> None:
    creds = enroll(Role.CORE, "hq")
    bare = TrustStore(creds.trust.roots, creds.trust.intermediates, ())
    with pytest.raises(VerificationError, match="no CRL from .* in the trust store"):
        verify_node(creds.tls_chain, trust=bare, role=Role.CORE, purpose=Purpose.TLS, now=NOW)
    stale = NOW + dt.timedelta(days=31)
    with pytest.raises(VerificationError, match="CRL from .* is stale"):
        verify_node(
            creds.tls_chain, trust=creds.trust, role=Role.CORE, purpose=Purpose.TLS, now=stale
        )


def test_newer_crl_wins_and_older_does_not_replace_it(enroll: EnrollFn, ca: IssuingCA) -> None:
    creds = enroll(Role.EDGE, "plant-a")
    old = ca.write_crl(NOW)
    ca.revoke(now=NOW, node=NodeName(Role.EDGE, "plant-a"))
    new = x509.load_pem_x509_crl(ca.paths.crl.read_bytes())
    trust = creds.trust.with_crls([new]).with_crls([old])
    assert trust.crls == (new,)


def test_crl_from_a_foreign_ca_is_refused(enroll: EnrollFn, tmp_path: Path) -> None:
    creds = enroll(Role.EDGE, "plant-a")
    paths = CaPaths.of(tmp_path / "foreign")
    init_ca(
        paths,
        organization="Test Plant Co",
        root_passphrase=PASSPHRASE,
        issuing_passphrase=PASSPHRASE,
        now=NOW,
        cost=FAST_KDF,
    )
    forged = x509.load_pem_x509_crl(paths.crl.read_bytes())
    # Same issuer name as ours (same organization), different key: must be refused.
    assert forged.issuer == creds.trust.intermediates[0].subject
    with pytest.raises(VerificationError, match="not signed by a CA in the trust store"):
        creds.trust.with_crls([forged])


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[Role, str], NodeCredentials]:
    """Every (role, site) of SITES enrolled once under one CA, for Hypothesis to draw from."""
    base = tmp_path_factory.mktemp("federation")
    ca = make_ca(base / "ca")
    return {
        (role, site): enroll_node(ca, base / f"{role.value}-{site}", role, site)
        for role in Role
        for site in SITES_LIST
    }


@given(cert_role=ROLES, want_role=ROLES, cert_site=SITES, want_site=SITES)
@ONE_CERT_SETTINGS
def test_role_and_site_must_match(
    federation: dict[tuple[Role, str], NodeCredentials],
    cert_role: Role,
    want_role: Role,
    cert_site: str,
    want_site: str,
) -> None:
    creds = federation[cert_role, cert_site]
    cert = creds.signing_certificate

    def check() -> str:
        v = verify_node(
            cert,
            trust=creds.trust,
            role=want_role,
            site=want_site,
            purpose=Purpose.SIGNING,
            now=NOW,
        )
        return v.site

    if cert_role != want_role:
        with pytest.raises(VerificationError, match="role mismatch"):
            check()
    elif cert_site != want_site:
        with pytest.raises(VerificationError, match="site mismatch"):
            check()
    else:
        assert check() == want_site


@given(asked=ROLES, requested=ROLES, site=SITES)
@ONE_CERT_SETTINGS
def test_a_request_yields_only_its_own_role(
    ca: IssuingCA,
    tmp_path_factory: pytest.TempPathFactory,
    asked: Role,
    requested: Role,
    site: str,
) -> None:
    """A request for role X never yields a certificate for another role, whatever is asked."""
    name = NodeName(requested, site)
    request = create_request(tmp_path_factory.mktemp("node"), name)
    if asked != requested:
        with pytest.raises(CaError, match="refusing to sign"):
            ca.sign_request(request, expect=NodeName(asked, site), now=NOW)
        return
    bundle = ca.sign_request(request, expect=name, now=NOW)
    trust = TrustStore((bundle.root,), (bundle.issuing,), (bundle.crl,))
    for purpose in Purpose:
        for role in Role:
            cert = bundle.certificate(purpose)
            if role == requested:
                verify_node(cert, trust=trust, role=role, purpose=purpose, now=NOW)
            else:
                with pytest.raises(VerificationError, match="role mismatch"):
                    verify_node(cert, trust=trust, role=role, purpose=purpose, now=NOW)


def test_request_whose_parts_name_different_nodes_is_refused(tmp_path: Path) -> None:
    keys = NodeKeys.generate()
    edge = EnrollmentRequest.build(
        NodeName(Role.EDGE, "plant-a"), keys.tls, keys.signing, keys.receiving
    )
    core = EnrollmentRequest.build(
        NodeName(Role.CORE, "plant-a"), keys.tls, keys.signing, keys.receiving
    )
    mixed = EnrollmentRequest(edge.name, edge.tls_csr, core.signing_csr)
    with pytest.raises(ValueError, match="its parts name different nodes"):
        EnrollmentRequest.parse(bytes(mixed))


def test_request_with_edited_role_fails_its_signature() -> None:
    keys = NodeKeys.generate()
    req = bytes(
        EnrollmentRequest.build(
            NodeName(Role.EDGE, "plant-a"), keys.tls, keys.signing, keys.receiving
        )
    )
    from pki.pem import split_pem, to_pem

    blocks = split_pem(req)
    der = blocks[1][1]
    assert der.count(b"node:edge:") == 1
    edited = der.replace(b"node:edge:", b"node:core:")
    forged = to_pem("CERTIFICATE REQUEST", blocks[0][1]) + to_pem("CERTIFICATE REQUEST", edited)
    with pytest.raises(ValueError, match="signing request's signature is invalid"):
        EnrollmentRequest.parse(forged)


@given(data=st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_hostile_request_bytes_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="enrollment request|PEM|invalid base64"):
        EnrollmentRequest.parse(data)


def test_tampered_request_is_refused_with_its_reason() -> None:
    keys = NodeKeys.generate()
    req = bytes(
        EnrollmentRequest.build(
            NodeName(Role.EDGE, "plant-a"), keys.tls, keys.signing, keys.receiving
        )
    )
    with pytest.raises(ValueError, match="exactly two CERTIFICATE REQUEST blocks"):
        EnrollmentRequest.parse(req[: len(req) // 2])


@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
@example(pos=12, bit=0)  # the X.509 version field: parses as an unknown version
@settings(max_examples=150, deadline=None)
def test_tampered_certificate_is_refused(
    federation: dict[tuple[Role, str], NodeCredentials], pos: int, bit: int
) -> None:
    """B2/A6: one flipped bit anywhere in a certificate: it does not load, or it is refused."""
    creds = federation[Role.EDGE, "plant-a"]
    der = bytearray(creds.signing_certificate.public_bytes(Encoding.DER))
    der[pos % len(der)] ^= 1 << bit
    try:
        cert = parse_certificate(bytes(der))
    except ValueError as e:
        assert str(e).startswith("malformed certificate")
        return
    with pytest.raises(VerificationError):
        verify_node(
            cert,
            trust=creds.trust,
            role=Role.EDGE,
            site="plant-a",
            purpose=Purpose.SIGNING,
            now=NOW,
        )


def test_key_for_one_purpose_is_refused_for_another(enroll: EnrollFn) -> None:
    creds = enroll(Role.EDGE, "plant-a")
    with pytest.raises(VerificationError, match="wrong key purpose: bundle signing is required"):
        verify_node(
            creds.tls_chain, trust=creds.trust, role=Role.EDGE, purpose=Purpose.SIGNING, now=NOW
        )
    with pytest.raises(VerificationError, match="wrong key purpose: TLS server is required"):
        verify_node(
            creds.receiving_certificate,
            trust=creds.trust,
            role=Role.EDGE,
            purpose=Purpose.TLS,
            now=NOW,
        )


def test_import_checks(ca: IssuingCA, tmp_path: Path) -> None:
    name = NodeName(Role.EDGE, "plant-a")
    node_a, node_b = tmp_path / "a", tmp_path / "b"
    bundle_a = ca.sign_request(create_request(node_a, name), expect=name, now=NOW)
    create_request(node_b, name)
    with pytest.raises(NodeError, match="give the root CA fingerprint"):
        import_bundle(node_a, bundle_a, now=NOW)
    with pytest.raises(VerificationError, match="root CA fingerprint is"):
        import_bundle(node_a, bundle_a, now=NOW, root_fingerprint="00" * 32)
    with pytest.raises(VerificationError, match="not for this node's key"):
        import_bundle(node_b, bundle_a, now=NOW, root_fingerprint=fingerprint(ca.root))
    with pytest.raises(NodeError, match="already holds node keys"):
        create_request(node_a, name)
    # Fingerprints may be typed with spaces and colons, in any case.
    fp = fingerprint(ca.root).upper()
    spaced = " ".join(fp[i : i + 4] for i in range(0, 64, 4))
    assert import_bundle(node_a, bundle_a, now=NOW, root_fingerprint=spaced).name == name
    assert not (node_a / "certs" / "tls.pem").read_bytes().count(b"PRIVATE")


def test_bundle_round_trip_and_malformed(ca: IssuingCA, tmp_path: Path) -> None:
    name = NodeName(Role.RELAY, "dmz")
    bundle = ca.sign_request(create_request(tmp_path / "n", name), expect=name, now=NOW)
    data = bytes(bundle)
    assert bytes(CertificateBundle.parse(data)) == data
    with pytest.raises(ValueError, match="five CERTIFICATE blocks then one X509 CRL"):
        CertificateBundle.parse(data.replace(b"X509 CRL", b"X509 CRX"))


def test_device_certificate_pkcs12(ca: IssuingCA, enroll: EnrollFn) -> None:
    edge = enroll(Role.EDGE, "plant-a")
    name = DeviceName("plant-a", "ivanov")
    key, cert = ca.issue_device(name, now=NOW)
    blob = pkcs12.serialize_key_and_certificates(
        b"ivanov",
        key,
        cert,
        [ca.certificate, ca.root],
        pkcs12.serialization.BestAvailableEncryption(b"device password"),  # type: ignore[attr-defined]
    )
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(blob, b"wrong password")
    k2, c2, extra = pkcs12.load_key_and_certificates(blob, b"device password")
    assert c2 == cert and len(extra) == 2
    v = verify_device([cert, ca.certificate], trust=edge.trust, now=NOW, site="plant-a")
    assert v.name == name
    with pytest.raises(VerificationError, match="site mismatch"):
        verify_device(cert, trust=edge.trust, now=NOW, site="plant-b")
    # A device certificate is no node certificate, and a node TLS cert is no device.
    with pytest.raises(VerificationError):
        verify_node(cert, trust=edge.trust, role=Role.EDGE, purpose=Purpose.TLS, now=NOW)
    with pytest.raises(VerificationError, match="not a Zastava device certificate"):
        verify_device(edge.tls_chain, trust=edge.trust, now=NOW)
    ca.revoke(now=NOW, device=name)
    trust = edge.trust.with_crls([x509.load_pem_x509_crl(ca.paths.crl.read_bytes())])
    with pytest.raises(VerificationError, match="was revoked"):
        verify_device(cert, trust=trust, now=NOW)


def test_real_tls_handshake_with_the_node_certificate(tmp_path: Path) -> None:
    """The TLS chain works for a real TLS 1.3 client that trusts only our root (real clock)."""
    wall = dt.datetime.now(dt.UTC)
    ca = make_ca(tmp_path / "ca", wall)
    creds = enroll_node(
        ca, tmp_path / "edge", Role.EDGE, "plant-a", dns=("edge.plant-a.example",), now=wall
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(creds.tls_cert_file, creds.tls_key_file)
    client_ctx = ssl.create_default_context(cadata=ca.root.public_bytes(Encoding.PEM).decode())
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen.append(str(tls.version()))
            tls.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_ctx.wrap_socket(raw, server_hostname="edge.plant-a.example") as tls,
    ):
        assert tls.recv(2) == b"ok"
    t.join(5)
    listener.close()
    assert seen == ["TLSv1.3"]
    # A name the certificate does not carry fails hostname verification.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    t = threading.Thread(target=lambda: _accept_and_drop(listener, server_ctx))
    t.start()
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        client_ctx.wrap_socket(raw, server_hostname="edge.plant-b.example").close()
    t.join(5)
    listener.close()


def _accept_and_drop(listener: socket.socket, ctx: ssl.SSLContext) -> None:
    conn, _ = listener.accept()
    with conn:
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass


def test_openssl_agrees_with_our_chain(enroll: EnrollFn, ca: IssuingCA, tmp_path: Path) -> None:
    """An independent implementation (OpenSSL) validates the TLS chain, CRL checks included."""
    creds = enroll(Role.EDGE, "plant-a", dns=("edge.plant-a.example",))
    root = tmp_path / "root.pem"
    root.write_bytes(ca.root.public_bytes(Encoding.PEM))
    cmd = [
        "openssl",
        "verify",
        "-CAfile",
        str(root),
        "-untrusted",
        str(creds.tls_cert_file),
        "-crl_check",
        "-CRLfile",
        str(ca.paths.crl),
        "-purpose",
        "sslserver",
        "-attime",
        str(int(NOW.timestamp())),
        str(creds.tls_cert_file),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    ca.revoke(now=NOW, node=creds.name)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "revoked" in out.stdout + out.stderr


def test_ip_addresses_in_tls_certificate(ca: IssuingCA, tmp_path: Path) -> None:
    name = NodeName(Role.EDGE, "plant-a")
    ip = ipaddress.ip_address("10.20.0.5")
    req = create_request(tmp_path / "n", name, ip_addresses=(ip,))
    bundle = ca.sign_request(req, expect=name, now=NOW)
    san = bundle.tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ip]
    assert bundle.tls.signature_hash_algorithm is not None
    assert isinstance(bundle.tls.signature_hash_algorithm, hashes.SHA256)
