"""Secrets stay secret: never logged, never in a repr, TOTP secrets sealed at rest; migrations."""

from __future__ import annotations

import base64
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.auth import recovery, sessions, totp
from edge.auth.passwords import TEST_PARAMETERS, PasswordHasher
from edge.auth.schema import MIGRATIONS, SchemaError
from edge.auth.sealing import SealingError, SecretSealer
from edge.auth.store import AuthStore
from tests.test_auth_service import ADDRESS, PASSWORD, Harness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


def test_no_secret_is_ever_logged_or_in_a_repr(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    s = h.service
    objects: list[object] = [s, h.store, s.hasher, h.store._sealer]
    secrets: list[str] = [PASSWORD]

    done = h.enroll("ivanov")
    objects += [done, done.session, done.session.record, done.recovery_codes]
    secrets += [done.session.token, done.session.csrf_token, h.phones["ivanov"]]
    secrets += list(done.recovery_codes.codes)
    enrollment = totp.Enrollment("ivanov", "Plant", h.phones["ivanov"])
    objects.append(enrollment)

    code = h.code("ivanov")
    ok = h.login("ivanov", code=code)
    assert ok.session is not None
    objects += [ok, ok.session]
    secrets += [ok.session.token, ok.session.csrf_token]
    valid = s.validate_session(ok.session.token, h.now)
    objects.append(valid)

    # Failures that carry secrets in every field, including a password typed as the login.
    h.tick()
    objects.append(h.login("ivanov", password="wrong-but-secret-1"))
    objects.append(h.login("wrong-but-secret-2 typed in the login field", password=PASSWORD))
    objects.append(
        s.use_recovery_code("ivanov", PASSWORD, done.recovery_codes.codes[0], ADDRESS, h.now)
    )
    secrets += ["wrong-but-secret-1", "wrong-but-secret-2"]
    new_password = "the brand new secret password"
    assert s.change_password(ok.session.token, PASSWORD, new_password, ADDRESS, h.now)
    secrets.append(new_password)
    account = h.store.account("ivanov")
    objects.append(account)
    assert account is not None and account.password_hash is not None
    secrets.append(account.password_hash)
    s.logout(ok.session.token)

    for secret in secrets:
        assert secret not in caplog.text, "a secret was logged"
        for obj in objects:
            assert secret not in repr(obj), f"a secret is in repr({type(obj).__name__})"
            assert secret not in str(obj)
    assert "login=<malformed>" in caplog.text
    assert "reason=bad-password" in caplog.text  # the audit reasons are there


def test_totp_secrets_are_sealed_at_rest(h: Harness, tmp_path: Path) -> None:
    h.enroll("ivanov")
    secret = h.phones["ivanov"]
    h.store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("auth.db*"))
    assert secret.encode() not in raw and base64.b32decode(secret) not in raw
    key = tmp_path / "auth.key"
    assert key.stat().st_mode & 0o777 == 0o600
    # Another key does not open it.
    wrong = SecretSealer(b"\x00" * 32, h.rand)
    with AuthStore.open(tmp_path / "auth.db", wrong) as store, pytest.raises(SealingError):
        store.account("ivanov")
    h.open()


def test_a_sealed_secret_moved_to_another_account_does_not_open(h: Harness) -> None:
    h.enroll("ivanov")
    h.enroll("petrov")
    conn = h.store._conn
    conn.execute(
        "UPDATE auth_accounts SET totp_secret = "
        "(SELECT totp_secret FROM auth_accounts WHERE login = 'ivanov') WHERE login = 'petrov'"
    )
    with pytest.raises(SealingError, match="does not open"):
        h.store.account("petrov")


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "auth.key"
    SecretSealer.load_or_create(key, lambda n: b"\x07" * n)
    key.chmod(0o644)
    with pytest.raises(SealingError, match="readable by others"):
        SecretSealer.load_or_create(key, lambda n: b"\x07" * n)
    with pytest.raises(ValueError, match="32 bytes"):
        SecretSealer(b"short", lambda n: b"\x07" * n)


def test_migrations_are_versioned_idempotent_and_refuse_a_newer_schema(
    h: Harness, tmp_path: Path
) -> None:
    h.enroll("ivanov")
    h.restart()  # reopening migrates nothing and loses nothing
    assert h.store.account("ivanov") is not None
    h.store.close()
    with sqlite3.connect(tmp_path / "auth.db") as conn:
        assert conn.execute(
            "SELECT version FROM schema_versions WHERE component = 'auth'"
        ).fetchone() == (len(MIGRATIONS),)
        conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'auth'")
    conn.close()
    sealer = SecretSealer.load_or_create(tmp_path / "auth.key", h.rand)
    with pytest.raises(SchemaError, match="schema version 99"):
        AuthStore.open(tmp_path / "auth.db", sealer)
    with sqlite3.connect(tmp_path / "auth.db") as conn:
        conn.execute("UPDATE schema_versions SET version = 1 WHERE component = 'auth'")
    conn.close()
    h.open()


def test_recovery_codes_format_and_hashing() -> None:
    codes = recovery.generate("ivanov", lambda n: bytes(range(n)), count=1)
    assert codes.codes == ("000G-40R4-0M30-E209",)
    assert repr(codes) == "RecoveryCodes(<1 codes>)"
    assert recovery.normalize("000g 40r4 0m3o e2o9") == "000G40R40M30E209"  # o read as 0
    assert recovery.code_hash("ivanov", codes.codes[0]) == codes.hashes[0]
    assert recovery.code_hash("petrov", codes.codes[0]) != codes.hashes[0]
    for bad in ["", "000G-40R4-0M30-E20", "000G-40R4-0M30-E20U", "x" * 100]:
        assert recovery.normalize(bad) is None
    with pytest.raises(ValueError, match="duplicate"):
        recovery.generate("ivanov", lambda n: b"\x00" * n, count=2)


def test_session_token_and_hasher_reprs() -> None:
    issued = sessions.new_token(lambda n: b"\x05" * n)
    assert len(issued) == 43
    hasher = PasswordHasher(TEST_PARAMETERS, lambda n: b"\x00" * n)
    assert repr(hasher) == "PasswordHasher(argon2id m=64 KiB (0.0625 MiB), t=1, p=1)"
    stored = hasher.hash_new(PASSWORD)
    assert hasher.verify(stored, PASSWORD) and not hasher.verify(stored, PASSWORD + "x")
    assert not hasher.verify("not a hash", PASSWORD) and hasher.needs_rehash("not a hash")
