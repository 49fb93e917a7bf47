"""The relay's guard, without the network: THREATS B1-B8, B10, B11, B13, B15 at the relay."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from pki.names import Role
from sync.bundle.codec import Item
from sync.relay.audit import AuditEvent, AuditLog
from sync.relay.auditstore import SqliteAuditStore
from sync.relay.config import Limits, Policy
from sync.relay.guard import Guard, RelayPaths, new_quarantine_name
from tests.bundles import Federation, seal_simple
from tests.conftest import NOW

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return Federation.build(tmp_path_factory.mktemp("fed"))


ROLES = {"plant-a": Role.EDGE, "plant-b": Role.EDGE, "hq": Role.CORE, "dmz": Role.RELAY}


class Relay:
    """A guard over a real data directory and a real audit log, as the server builds it."""

    def __init__(
        self,
        fed: Federation,
        data: Path,
        *,
        policy: Policy | None = None,
        limits: Limits | None = None,
        failpoint=lambda name: None,
    ) -> None:  # type: ignore[no-untyped-def]
        self.paths = RelayPaths(data)
        data.mkdir(parents=True, exist_ok=True)
        self.store = SqliteAuditStore.open(data / "audit.db")
        self.log = AuditLog.for_node(self.store, fed.relay)
        self.guard = Guard(
            self.paths,
            trust=lambda: fed.relay.trust,
            roles=ROLES.get,
            policy=policy or Policy(),
            limits=limits or Limits(),
            audit=self.log.append_batch,
            audit_tail=lambda n: [
                self.store.entry_data(i) for i in range(max(0, self.log.size - n), self.log.size)
            ],
            failpoint=failpoint,
        )

    def upload(self, site: str, data: bytes, name: str = "b", now: dt.datetime = NOW):  # type: ignore[no-untyped-def]
        self.paths.make_site(site)
        qname = new_quarantine_name(name)
        (self.paths.quarantine(site) / qname).write_bytes(data)
        verdict = self.guard.uploaded(site, qname, now)
        self.guard.flush(now)
        return verdict

    def inbox(self, site: str) -> list[str]:
        d = self.paths.inbox(site)
        return sorted(os.listdir(d)) if d.exists() else []

    def events(self) -> list[tuple[AuditEvent, str]]:
        return [(self.log.entry(i).event, self.log.entry(i).reason) for i in range(self.log.size)]

    def close(self) -> None:
        self.guard.close()
        self.store.close()


@pytest.fixture
def relay(fed: Federation, tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Relay(fed, tmp_path / "relay")
    yield r
    r.close()


def rejected_because(r: Relay, verdict, text: str) -> None:  # type: ignore[no-untyped-def]
    assert not verdict.released
    assert text in verdict.reason
    notes = [p.read_text() for p in r.paths.rejected("plant-a").glob("*.txt")]
    assert any(text in n for n in notes), notes
    assert r.events()[-1] == (AuditEvent.REJECTED, verdict.reason)
    assert not any(r.paths.quarantine("plant-a").iterdir())


def test_release_moves_the_exact_bytes_and_audits(fed: Federation, relay: Relay) -> None:
    data = seal_simple(fed.a, fed.hq)
    v = relay.upload("plant-a", data)
    assert v.released and v.inbox_name == "plant-a.events.1.bundle"
    assert (relay.paths.inbox("hq") / v.inbox_name).read_bytes() == data
    assert [e for e, _ in relay.events()] == [
        AuditEvent.UPLOADED,
        AuditEvent.VERIFIED,
        AuditEvent.RELEASED,
    ]
    relay.guard.fetched("hq", v.inbox_name, NOW)
    relay.guard.deleted("hq", v.inbox_name, NOW)
    relay.guard.flush(NOW)
    e = relay.log.entry(relay.log.size - 1)
    assert (e.event, e.origin, e.recipient, e.seq) == (AuditEvent.DELETED, "plant-a", "hq", 1)


def test_b1_unknown_signer(fed: Federation, relay: Relay) -> None:
    rejected_because(
        relay,
        relay.upload("plant-a", seal_simple(fed.foreign, fed.hq)),
        "signer certificate: certificate chain refused",
    )


def test_b2_flipped_byte(fed: Federation, relay: Relay) -> None:
    data = bytearray(seal_simple(fed.a, fed.hq))
    data[-3] ^= 0x40
    rejected_because(relay, relay.upload("plant-a", bytes(data)), "ciphertext hash")


def test_origin_must_be_the_uploader(fed: Federation, relay: Relay) -> None:
    data = seal_simple(fed.b, fed.hq)
    v = relay.upload("plant-a", data)
    rejected_because(relay, v, "comes from 'plant-b' but was uploaded by 'plant-a'")


def test_b11_policy(fed: Federation, relay: Relay, tmp_path: Path) -> None:
    rejected_because(
        relay,
        relay.upload("plant-a", seal_simple(fed.a, fed.b)),
        "policy: plant-a may not send to plant-b",
    )
    open_relay = Relay(fed, tmp_path / "open", policy=Policy((("plant-a", "plant-b"),)))
    assert open_relay.upload("plant-a", seal_simple(fed.a, fed.b)).released
    open_relay.close()


def test_b3_b4_replay_and_rollback(fed: Federation, relay: Relay) -> None:
    b1 = seal_simple(fed.a, fed.hq, seq=1)
    from sync.bundle.codec import read_header

    b2 = seal_simple(fed.a, fed.hq, seq=2, prev=read_header(b1).header_hash)
    assert relay.upload("plant-a", b1).released
    assert relay.upload("plant-a", b2).released
    rejected_because(relay, relay.upload("plant-a", b2), "seq 2 is not after seq 2")
    rejected_because(relay, relay.upload("plant-a", b1), "seq 1 is not after seq 2")
    assert relay.inbox("hq") == ["plant-a.events.1.bundle", "plant-a.events.2.bundle"]


def test_b5_expired(fed: Federation, relay: Relay) -> None:
    data = seal_simple(fed.a, fed.hq, ttl=dt.timedelta(minutes=5))
    v = relay.upload("plant-a", data, now=NOW + dt.timedelta(minutes=6))
    rejected_because(relay, v, "expiry: bundle expired")


def test_b8_oversized(fed: Federation, tmp_path: Path) -> None:
    r = Relay(fed, tmp_path / "small", limits=Limits(max_bundle_bytes=10_000))
    v = r.upload("plant-a", seal_simple(fed.a, fed.hq, [Item("blob", bytes(20_000))]))
    rejected_because(r, v, "size cap")
    r.close()


def test_rate_limit(fed: Federation, tmp_path: Path) -> None:
    r = Relay(fed, tmp_path / "rate", limits=Limits(bundles_per_minute=2))
    prev = bytes(32)
    from sync.bundle.codec import read_header

    verdicts = []
    for seq in (1, 2, 3):
        data = seal_simple(fed.a, fed.hq, seq=seq, prev=prev)
        prev = read_header(data).header_hash
        verdicts.append(r.upload("plant-a", data))
    assert [v.released for v in verdicts] == [True, True, False]
    assert "rate: more than 2 bundles per minute" in verdicts[2].reason
    # A minute later the origin may send again (the sender re-sends seq 3).
    assert r.upload("plant-a", data, now=NOW + dt.timedelta(minutes=1)).released
    r.close()


def test_b10_readdressed(fed: Federation, relay: Relay) -> None:
    from sync.bundle.codec import read_header

    data = seal_simple(fed.a, fed.hq)
    h = read_header(data)
    forged = bytes(replace(h, recipient="plant-b")) + data[len(bytes(h)) :]
    rejected_because(relay, relay.upload("plant-a", forged), "outer signature")


def test_garbage_upload(relay: Relay) -> None:
    rejected_because(relay, relay.upload("plant-a", b"\x00" * 100), "not a Zastava bundle")


def test_b15_relay_never_holds_plaintext(fed: Federation, relay: Relay) -> None:
    marker = b"MARKER-7f3e9c-secret-payroll"
    names = "Ivanov Ivan Petrovich"
    items = [Item("chat.message", marker + b" for " + names.encode()), Item("file", marker * 50)]
    v = relay.upload("plant-a", seal_simple(fed.a, fed.hq, items))
    assert v.released
    relay.upload("plant-a", seal_simple(fed.foreign, fed.hq, items))  # rejected, also audited
    relay.guard.fetched("hq", "plant-a.events.1.bundle", NOW)
    relay.guard.flush(NOW)
    relay.store.close()
    relay.guard.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for path in relay.paths.data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert marker not in content, path
            assert names.encode() not in content, path
    relay.store = SqliteAuditStore.open(relay.paths.data_dir / "audit.db")


CRASH = textwrap.dedent("""
    import os, pickle, sys
    sys.path.insert(0, {root!r})
    from tests.test_guard import Relay, NOW
    fed = pickle.load(open({fed!r}, "rb"))
    def die(name):
        if name == {point!r}:
            os._exit(137)
    r = Relay(fed, __import__("pathlib").Path({data!r}), failpoint=die)
    r.upload("plant-a", open({bundle!r}, "rb").read())
    print("finished without reaching the failpoint", flush=True)
""")


def killed_and_recovered(fed: Federation, tmp_path: Path, point: str, bundle: bytes) -> Relay:
    """Upload ``bundle`` in a child process that dies (as by kill -9) at ``point``, then
    start a guard on the same data and let it recover."""
    from tests.test_bundle_stream import _picklable

    (tmp_path / "fed.pkl").write_bytes(pickle.dumps(_picklable(fed)))
    (tmp_path / "b.bundle").write_bytes(bundle)
    data = tmp_path / "relay"
    script = CRASH.format(
        root=str(ROOT),
        fed=str(tmp_path / "fed.pkl"),
        point=point,
        data=str(data),
        bundle=str(tmp_path / "b.bundle"),
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert out.returncode == 137, out.stderr.decode()[-2000:]
    r = Relay(fed, data)
    r.guard.recover(NOW)
    return r


@pytest.mark.parametrize(
    "point", ["registered", "release-committed", "moved", "released", "audit-appended"]
)
def test_b13_killed_at_each_step_loses_and_duplicates_nothing(
    fed: Federation, tmp_path: Path, point: str
) -> None:
    bundle = seal_simple(fed.a, fed.hq)
    r = killed_and_recovered(fed, tmp_path, point, bundle)
    assert r.inbox("hq") == ["plant-a.events.1.bundle"]
    assert (r.paths.inbox("hq") / "plant-a.events.1.bundle").read_bytes() == bundle
    assert not any(r.paths.quarantine("plant-a").iterdir())
    assert [e for e, _ in r.events()] == [
        AuditEvent.UPLOADED,
        AuditEvent.VERIFIED,
        AuditEvent.RELEASED,
    ]
    # Restarting again changes nothing; re-uploading the same bundle is refused.
    r.guard.recover(NOW)
    assert len(r.events()) == 3
    again = r.upload("plant-a", bundle)
    assert not again.released and "sequence" in again.reason
    r.close()


@pytest.mark.parametrize("point", ["reject-noted", "reject-committed"])
def test_b13_killed_while_rejecting(fed: Federation, tmp_path: Path, point: str) -> None:
    r = killed_and_recovered(fed, tmp_path, point, seal_simple(fed.foreign, fed.hq))
    assert r.inbox("hq") == []
    assert not any(r.paths.quarantine("plant-a").iterdir())
    assert [e for e, _ in r.events()] == [AuditEvent.UPLOADED, AuditEvent.REJECTED]
    r.close()
