"""Client-certificate login of managed devices (A6), with real certificates from pki/."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509

from edge.auth.results import PUBLIC_FAILURE, LoginOutcome, LoginResult, Reason
from edge.auth.sessions import AuthMethod
from pki.ca import IssuingCA
from pki.names import DeviceName, Role
from pki.trust import TrustStore
from tests.conftest import NOW, enroll_node, make_ca
from tests.test_auth_service import ADDRESS, Harness, fail


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    (tmp_path / "auth").mkdir()
    harness = Harness(tmp_path / "auth")
    harness.enroll("ivanov")
    yield harness
    harness.store.close()


@pytest.fixture
def pki(tmp_path: Path) -> tuple[IssuingCA, TrustStore]:
    ca = make_ca(tmp_path / "ca")
    edge = enroll_node(ca, tmp_path / "edge", Role.EDGE, "plant-a")
    return ca, edge.trust


def device(ca: IssuingCA, login: str = "ivanov", site: str = "plant-a") -> list[x509.Certificate]:
    _, cert = ca.issue_device(DeviceName(site, login), now=NOW)
    return [cert, ca.certificate]


def test_a6_a_valid_device_certificate_logs_its_user_in(
    h: Harness, pki: tuple[IssuingCA, TrustStore]
) -> None:
    ca, trust = pki
    result = h.service.login_with_device_certificate(device(ca), trust, h.now, address=ADDRESS)
    assert result.ok and result.session is not None
    assert result.session.record.method is AuthMethod.CERTIFICATE
    valid = h.service.validate_session(result.session.token, h.now)
    assert valid is not None and valid.login == "ivanov"
    # The leaf alone is enough when the store knows the intermediate.
    assert h.service.login_with_device_certificate(device(ca)[0], trust, h.now).ok


def refused(
    h: Harness,
    chain: Sequence[x509.Certificate],
    trust: TrustStore,
    now: dt.datetime | None = None,
) -> LoginResult:
    result = h.service.login_with_device_certificate(chain, trust, now or h.now, address=ADDRESS)
    assert result.outcome is LoginOutcome.FAILED and result.session is None
    assert result.message == PUBLIC_FAILURE
    return result


def test_a6_certificate_from_another_ca_is_refused(
    h: Harness, pki: tuple[IssuingCA, TrustStore], tmp_path: Path
) -> None:
    _, trust = pki
    other = make_ca(tmp_path / "other-ca")
    result = refused(h, device(other), trust)
    assert result.reason is Reason.BAD_CERTIFICATE and "chain refused" in result.detail


def test_a6_expired_certificate_is_refused(h: Harness, pki: tuple[IssuingCA, TrustStore]) -> None:
    ca, trust = pki
    chain = device(ca)
    later = chain[0].not_valid_after_utc + dt.timedelta(seconds=1)
    result = refused(h, chain, trust, later)
    assert result.reason is Reason.BAD_CERTIFICATE and "expired" in result.detail


def test_a6_revoked_certificate_is_refused(h: Harness, pki: tuple[IssuingCA, TrustStore]) -> None:
    ca, trust = pki
    chain = device(ca)
    assert h.service.login_with_device_certificate(chain, trust, h.now).ok
    ca.revoke(now=NOW, device=DeviceName("plant-a", "ivanov"))
    fresh = trust.with_crls([x509.load_pem_x509_crl(ca.paths.crl.read_bytes())])
    result = refused(h, chain, fresh)
    assert result.reason is Reason.BAD_CERTIFICATE and "revoked" in result.detail


def test_a6_another_sites_device_is_refused(h: Harness, pki: tuple[IssuingCA, TrustStore]) -> None:
    ca, trust = pki
    result = refused(h, device(ca, site="plant-b"), trust)
    assert result.reason is Reason.BAD_CERTIFICATE and "site mismatch" in result.detail


def test_a6_a_node_certificate_is_no_device_certificate(
    h: Harness, pki: tuple[IssuingCA, TrustStore], tmp_path: Path
) -> None:
    ca, trust = pki
    node = enroll_node(ca, tmp_path / "edge-b", Role.EDGE, "plant-a")
    assert refused(h, node.tls_chain, trust).reason is Reason.BAD_CERTIFICATE


def test_a6_disabled_or_unknown_user_is_refused(
    h: Harness, pki: tuple[IssuingCA, TrustStore]
) -> None:
    ca, trust = pki
    assert refused(h, device(ca, login="nobody"), trust).reason is Reason.UNKNOWN_LOGIN
    session = h.service.login_with_device_certificate(device(ca), trust, h.now).session
    assert session is not None
    h.service.disable_user("ivanov", h.now)
    assert refused(h, device(ca), trust).reason is Reason.DISABLED
    assert h.service.validate_session(session.token, h.now) is None


def test_a6_a_device_still_works_for_a_user_locked_out_by_password_guessing(
    h: Harness, pki: tuple[IssuingCA, TrustStore]
) -> None:
    ca, trust = pki
    fail(h, "ivanov", 10, password="attacker guess", address="198.51.100.1")
    assert h.login("ivanov").reason is Reason.ACCOUNT_THROTTLED
    assert h.service.login_with_device_certificate(device(ca), trust, h.now, address=ADDRESS).ok
    assert h.login("ivanov").reason is Reason.ACCOUNT_THROTTLED  # the lock is not lifted


def test_a6_refused_certificates_count_against_the_address(
    h: Harness, pki: tuple[IssuingCA, TrustStore], tmp_path: Path
) -> None:
    ca, trust = pki
    bad = device(make_ca(tmp_path / "other-ca"))
    attempts = 0
    while attempts < 30:
        result = h.service.login_with_device_certificate(bad, trust, h.now, address=ADDRESS)
        if result.reason is Reason.ADDRESS_THROTTLED:
            assert result.retry_after is not None
            h.tick(result.retry_after)
            continue
        attempts += 1
    result = h.service.login_with_device_certificate(device(ca), trust, h.now, address=ADDRESS)
    assert result.reason is Reason.ADDRESS_THROTTLED
