"""Shared fixtures: a fixed clock and a CA made fresh for each test (keys never committed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from pki.ca import CaPaths, IssuingCA, init_ca
from pki.keyfile import KdfCost
from pki.names import NodeName, Role
from pki.node import NodeCredentials, create_request, import_bundle
from pki.trust import fingerprint

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
# Cheap Argon2id for tests only: the sealing format is the same, the cost is not.
FAST_KDF = KdfCost(time_cost=1, memory_kib=8 * 1024)
PASSPHRASE = b"test passphrase, not a secret"


@pytest.fixture
def now() -> dt.datetime:
    return NOW


def make_ca(directory: Path, now: dt.datetime = NOW) -> IssuingCA:
    paths = CaPaths.of(directory)
    init_ca(
        paths,
        organization="Test Plant Co",
        root_passphrase=PASSPHRASE,
        issuing_passphrase=PASSPHRASE,
        now=now,
        cost=FAST_KDF,
    )
    return IssuingCA.open(paths, PASSPHRASE)


def enroll_node(
    ca: IssuingCA,
    node_dir: Path,
    role: Role,
    site: str,
    *,
    dns: tuple[str, ...] = (),
    now: dt.datetime = NOW,
) -> NodeCredentials:
    """Enroll a node by the file round trip; returns its loaded credentials."""
    name = NodeName(role, site)
    request = create_request(node_dir, name, dns_names=dns)
    bundle = ca.sign_request(request, expect=name, now=now)
    return import_bundle(node_dir, bundle, now=now, root_fingerprint=fingerprint(ca.root))


@pytest.fixture
def ca(tmp_path: Path) -> IssuingCA:
    return make_ca(tmp_path / "ca")


EnrollFn = Callable[..., NodeCredentials]


@pytest.fixture
def enroll(ca: IssuingCA, tmp_path: Path) -> EnrollFn:
    def _enroll(role: Role, site: str, *, dns: tuple[str, ...] = ()) -> NodeCredentials:
        return enroll_node(ca, tmp_path / f"{role.value}-{site}", role, site, dns=dns)

    return _enroll
