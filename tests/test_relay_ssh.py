"""The relay over real SSH, attacked: B1, B8, B11, B12, B15, W5, and the signalling channel."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pki.names import NodeName, Role
from pki.node import NodeCredentials
from sync.bundle.codec import Item, read_header
from sync.relay.audit import (
    AuditEntry,
    AuditEvent,
    CheckpointWitness,
    log_key_from_certificate,
)
from sync.relay.auditstore import SqliteAuditStore
from sync.relay.config import Limits
from sync.signal import FrameType
from sync.signal_client import SignalClient
from sync.sshkeys import paramiko_key
from tests.bundles import seal_simple
from tests.conftest import enroll_node, make_ca
from tests.relayfixture import RelayPKI, RunningRelay, eventually, running_relay, utcnow


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RelayPKI:
    p = RelayPKI.create(tmp_path_factory.mktemp("pki"))
    p.enroll(Role.EDGE, "stranger")  # enrolled by the CA, never given to the relay
    return p


@pytest.fixture
def relay(pki: RelayPKI, tmp_path: Path) -> Iterator[RunningRelay]:
    with running_relay(pki, tmp_path, allowed=("plant-a", "plant-b", "hq")) as r:
        yield r


class Raw:
    """A bare paramiko session as a node: for attacks the real client would never make."""

    def __init__(self, relay: RunningRelay, site: str, key: paramiko.PKey | None = None) -> None:
        self.transport = paramiko.Transport((relay.host, relay.port))
        self.transport.start_client(timeout=10)
        creds = relay.pki.nodes[site]
        self.transport.auth_publickey(site, key or paramiko_key(creds.keys.tls))
        self.sftp = paramiko.SFTPClient.from_transport(self.transport)

    def close(self) -> None:
        self.sftp.close()
        self.transport.close()


@pytest.fixture
def raw(relay: RunningRelay) -> Iterator[Raw]:
    r = Raw(relay, "plant-a")
    yield r
    r.close()


def audit_events(relay: RunningRelay) -> list[AuditEvent]:
    """The relay's audit log as an officer reads it: a read-only look at its database."""
    done = threading.Event()

    def flush(now: dt.datetime) -> None:
        relay.server.guard.flush(now)
        done.set()

    relay.server.call(flush)
    assert done.wait(10)
    with SqliteAuditStore.open(relay.config.data_dir / "audit.db", readonly=True) as store:
        return [AuditEntry.parse(data).event for _, data in store.iter_entries()]


def _refused_auth(relay: RunningRelay, site: str, key: paramiko.PKey) -> None:
    t = paramiko.Transport((relay.host, relay.port))
    try:
        t.start_client(timeout=10)
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_publickey(site, key)
    finally:
        t.close()


def test_b1_keys_without_a_valid_certificate_are_refused(relay: RunningRelay) -> None:
    pki = relay.pki
    # Enrolled by our CA, but its certificate is not in the relay's nodes_dir.
    _refused_auth(relay, "stranger", paramiko_key(pki.nodes["stranger"].keys.tls))
    # plant-a's own key presented under another site's name.
    _refused_auth(relay, "hq", paramiko_key(pki.nodes["plant-a"].keys.tls))
    # A key nobody certified.
    _refused_auth(relay, "plant-a", paramiko.ECDSAKey.generate())
    # Passwords are not an option at all.
    t = paramiko.Transport((relay.host, relay.port))
    try:
        t.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType):
            t.auth_password("plant-a", "anything")
    finally:
        t.close()


def test_b1_a_revoked_node_is_refused_once_the_relay_has_the_crl(
    pki: RelayPKI, tmp_path: Path
) -> None:
    """A new crl.pem in the relay's trust directory takes effect without a restart."""
    c = pki.enroll(Role.EDGE, "plant-c")
    with running_relay(pki, tmp_path, allowed=("plant-c",)) as relay:
        Raw(relay, "plant-c").close()  # accepted while valid
        pki.ca.revoke(now=utcnow(), node=NodeName(Role.EDGE, "plant-c"))
        crl = x509.load_pem_x509_crl(pki.ca.paths.crl.read_bytes())
        os.utime(pki.ca.paths.crl)
        trust_dir = relay.identity.directory / "trust"
        (trust_dir / "crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
        _refused_auth(relay, "plant-c", paramiko_key(c.keys.tls))


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("open", ("/../hq/inbox/x", "rb")),
        ("open", ("/inbox/../../sites/hq/inbox/x", "rb")),
        ("open", ("/etc/passwd", "rb")),
        ("open", ("/upload/../../../../etc/cron.d/x.partial", "wb")),
        ("open", ("/upload/evil.bundle", "wb")),  # uploads must be .partial first
        ("open", ("/inbox/new.partial", "wb")),  # the inbox is not writable
        ("open", ("/upload/UPPER.partial", "wb")),
        ("listdir", ("/..",)),
        ("listdir", ("/upload/../..",)),
        ("mkdir", ("/upload/sub",)),
        ("symlink", ("/etc/passwd", "/upload/link.partial")),
        ("rename", ("/upload/x.partial", "/inbox/x.bundle")),
        ("remove", ("/../hq/inbox/hq.events.1.bundle",)),
        ("chmod", ("/upload", 0o777)),
    ],
)
def test_b12_no_path_leaves_the_jail(raw: Raw, relay: RunningRelay, op: str, args: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(OSError):
        getattr(raw.sftp, op)(*args)
    # Nothing was created anywhere outside the jail, nor odd files inside it.
    site = relay.paths.site("plant-a")
    assert sorted(os.listdir(site)) == ["inbox", "rejected", "upload"]
    assert os.listdir(relay.paths.upload("plant-a")) == []


def test_b12_a_site_sees_only_its_own_jail(relay: RunningRelay, pki: RelayPKI) -> None:
    a, b = Raw(relay, "plant-a"), Raw(relay, "plant-b")
    try:
        with a.sftp.open("/upload/secret.partial", "wb") as f:
            f.write(b"plant-a's half-uploaded file")
        assert b.sftp.listdir("/upload") == []
        assert sorted(a.sftp.listdir("/")) == ["inbox", "rejected", "upload"]
        with pytest.raises(OSError):
            b.sftp.open("/upload/secret.partial", "rb")
    finally:
        a.close()
        b.close()


def test_b8_writes_past_the_cap_are_refused_and_not_stored(pki: RelayPKI, tmp_path: Path) -> None:
    limits = Limits(max_bundle_bytes=50_000, quota_files=3, bundles_per_minute=1000)
    with running_relay(pki, tmp_path, limits=limits) as relay:
        r = Raw(relay, "plant-a")
        try:
            f = r.sftp.open("/upload/big.partial", "wb")
            f.write(b"x" * 40_000)
            f.flush()
            with pytest.raises(OSError):
                f.write(b"x" * 20_000)
                f.flush()
            f.close()
            assert (relay.paths.upload("plant-a") / "big.partial").stat().st_size <= 50_000
            for i in range(2):  # with big.partial, three files: the quota
                with r.sftp.open(f"/upload/q{i}.partial", "wb") as g:
                    g.write(b"y")
            with pytest.raises(OSError):
                r.sftp.open("/upload/q9.partial", "wb")
            assert sorted(os.listdir(relay.paths.upload("plant-a"))) == [
                "big.partial",
                "q0.partial",
                "q1.partial",
            ]
        finally:
            r.close()


def test_b11_and_b15_through_ssh(
    relay: RunningRelay, pki: RelayPKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = b"MARKER-5b1c-payroll-of-Ivanov"
    with relay.client("plant-a") as a, relay.client("hq") as hq, relay.client("plant-b") as b:
        a.upload("ok", pki.seal("plant-a", "hq", seq=1, payload=marker))
        a.upload("cross", pki.seal("plant-a", "plant-b", seq=1, payload=marker))
        [f] = relay.wait_for_inbox(hq)
        assert marker not in hq.download(f.name)  # ciphertext on the wire and at rest
        # the guard takes uploads one after the other: "cross" may be judged after "ok" landed
        deadline = time.monotonic() + 10
        rejected = {r.name: r.reason for r in a.rejections()}
        while "cross" not in rejected and time.monotonic() < deadline:
            time.sleep(0.05)
            rejected = {r.name: r.reason for r in a.rejections()}
        assert "policy: plant-a may not send to plant-b" in rejected["cross"]
        assert b.inbox() == []
    audit_events(relay)  # everything flushed to disk before we look
    for path in Path(relay.config.data_dir).rglob("*"):
        if path.is_file():
            assert marker not in path.read_bytes(), path
    assert marker.decode() not in caplog.text


def test_signalling_envelopes_doorbells_and_checkpoints(relay: RunningRelay, pki: RelayPKI) -> None:
    a_raw, hq_raw, b_raw = Raw(relay, "plant-a"), Raw(relay, "hq"), Raw(relay, "plant-b")
    a, hq, b = (SignalClient(r.transport) for r in (a_raw, hq_raw, b_raw))
    try:
        # hq -> plant-a: passed on unchanged.
        env = seal_simple(
            pki.nodes["hq"],
            pki.nodes["plant-a"],
            [Item("call.offer", b"sdp")],
            stream="signal",
            now=utcnow(),
        )
        hq.send_envelope(env)
        got = a.wait_for(FrameType.ENVELOPE, 10)
        assert got.payload == env
        # plant-a -> plant-b: not allowed by the default policy.
        bad = seal_simple(
            pki.nodes["plant-a"],
            pki.nodes["plant-b"],
            [Item("x", b"")],
            stream="signal",
            now=utcnow(),
        )
        a.send_envelope(bad)
        err = a.wait_for(FrameType.ERROR, 10)
        assert b"policy: plant-a may not signal plant-b" in err.payload
        # A doorbell when a bundle lands in the inbox.
        with relay.client("hq") as up:
            up.upload("b1", pki.seal("hq", "plant-a", seq=1))
        bell = a.wait_for(FrameType.DOORBELL, 10)
        assert bell.payload == b"hq.events.1.bundle"
        # The relay's audit log: checkpoint, then a consistent later one.
        key = log_key_from_certificate(relay.identity.signing_certificate)
        witness = CheckpointWitness(key)
        first = a.check_relay_log(witness)
        with relay.client("hq") as up:
            up.upload(
                "b2",
                pki.seal(
                    "hq",
                    "plant-a",
                    seq=2,
                    prev=read_header(pki.seal("hq", "plant-a", seq=1)).header_hash,
                ),
            )
        relay.wait_for_inbox(relay.client("plant-a"), 1)
        audit_events(relay)  # the guard flushes its entries to the signed log
        second = a.check_relay_log(witness)
        assert second.size > first.size  # and it is consistent with the first (witness)
        # W5: garbage on plant-b's channel closes that channel only.
        b.channel.sendall(b"\x09garbage")
        with pytest.raises(EOFError):
            while True:
                if b.recv(5) is None:
                    break
        hq.send_envelope(env)
        assert a.wait_for(FrameType.ENVELOPE, 10).payload == env
        assert AuditEvent.SIGNAL_RELAYED in audit_events(relay)
    finally:
        for c in (a, hq, b):
            c.close()
        for r in (a_raw, hq_raw, b_raw):
            r.close()


def test_b8_byte_quota_per_site(pki: RelayPKI, tmp_path: Path) -> None:
    """A site's files on the relay (uploads, inbox, quarantine) may not exceed its quota."""
    limits = Limits(max_bundle_bytes=50_000, quota_bytes=60_000, bundles_per_minute=1000)
    with running_relay(pki, tmp_path, limits=limits) as relay:
        r = Raw(relay, "plant-a")
        try:
            with r.sftp.open("/upload/one.partial", "wb") as f:
                f.write(b"x" * 40_000)
            g = r.sftp.open("/upload/two.partial", "wb")
            g.write(b"y" * 15_000)
            g.flush()
            with pytest.raises(OSError):
                g.write(b"y" * 10_000)  # 65,000 bytes in all: over the quota
                g.flush()
            g.close()
            used = sum(p.stat().st_size for p in relay.paths.upload("plant-a").iterdir())
            assert used <= 60_000
        finally:
            r.close()


def _hostile(pki: RelayPKI, foreign: NodeCredentials) -> dict[str, tuple[bytes, str]]:
    """Bundles each attack of THREATS.md would upload, and the reason the guard must give."""
    import dataclasses

    from sync.bundle.codec import SIG_LEN

    good1, good2 = pki.seal_stream("plant-a", "hq", [b"one", b"two"], stream="attacks")
    flipped = bytearray(pki.seal("plant-a", "hq", seq=1, stream="other"))
    flipped[-10] ^= 1
    h1, h2 = read_header(good1), read_header(good2)
    mixed = good1[: len(bytes(h1)) + SIG_LEN] + good2[len(bytes(h2)) + SIG_LEN :]
    readdressed = bytes(dataclasses.replace(h1, recipient="plant-b")) + good1[len(bytes(h1)) :]
    expired = seal_simple(
        pki.nodes["plant-a"],
        pki.nodes["hq"],
        [Item("x", b"")],
        stream="late",
        now=utcnow(),
        ttl=dt.timedelta(milliseconds=100),
    )
    time.sleep(0.2)  # it expires before it is uploaded
    return {
        "b1-foreign-ca": (
            seal_simple(foreign, pki.nodes["hq"], stream="x", now=utcnow()),
            "signer certificate",
        ),
        "origin-spoofed": (pki.seal("stranger", "hq", seq=1), "origin"),
        "b2-flipped": (bytes(flipped), "ciphertext hash"),
        "b3-replay": (good2, "sequence"),
        "b4-rollback": (good1, "sequence"),
        "b5-expired": (expired, "expiry"),
        "b6-mixed": (mixed, "ciphertext hash"),
        "b7-truncated": (good2[:-50], "ciphertext hash"),
        "b10-readdressed": (readdressed, "outer signature"),
        "b11-policy": (pki.seal("plant-a", "plant-b", seq=1), "policy"),
    }


def test_every_hostile_upload_is_rejected_readably_and_audited(
    relay: RunningRelay, pki: RelayPKI, tmp_path: Path
) -> None:
    """B1-B7, B10, B11 through real SSH: refused with a reason plant-a can read, the refusal
    in the audit log, nothing in any inbox."""
    foreign_ca = make_ca(tmp_path / "foreign-ca", utcnow())
    foreign = enroll_node(foreign_ca, tmp_path / "foreign", Role.EDGE, "plant-a", now=utcnow())
    attacks = _hostile(pki, foreign)
    with relay.client("plant-a") as a, relay.client("hq") as hq:
        a.upload("good", attacks["b4-rollback"][0])
        a.upload("good2", attacks["b3-replay"][0])
        relay.wait_for_inbox(hq, 2)
        for name, (data, _) in attacks.items():
            a.upload(name, data)

        def all_noted() -> dict[str, str] | None:
            notes = {x.name: x.reason for x in a.rejections()}
            return notes if len(notes) >= len(attacks) else None

        notes = eventually(all_noted)
        for name, (_, why) in attacks.items():
            assert why in notes[name], (name, notes[name])
        assert sorted(f.name for f in hq.inbox()) == [
            "plant-a.attacks.1.bundle",
            "plant-a.attacks.2.bundle",
        ]
    events = audit_events(relay)
    assert events.count(AuditEvent.REJECTED) == len(attacks)
