"""Call legs at the relay (issue 8, the relay's half of the call bridge): the leg table
(sans-IO), then a real relay over real SSH with the edges' real signalling link
(``sync.doorbell.Doorbell``), and the credentials it grants used on the real coturn.

THREATS.md C3 (a leg without the relay's authorisation: TURN refuses, nothing flows), W5
(a malformed leg frame closes only that channel), B15 (no credential in the relay's files).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from pki.names import Role
from sync import turn
from sync.bundle.codec import Item
from sync.doorbell import Doorbell, LinkDownError
from sync.relay.audit import AuditEntry, AuditEvent, Verdict
from sync.relay.auditstore import SqliteAuditStore
from sync.relay.config import CallPolicy, RelayConfig
from sync.relay.legs import Closed, Granted, GrantKind, LegTable, Refused, audit_entry
from sync.relay.server import RelayServer
from sync.relay.signalling import NO_TURN, TurnGrants
from sync.signal import (
    Frame,
    FrameType,
    LegClose,
    LegClosed,
    LegGrant,
    LegRefused,
    LegRequest,
)
from sync.signal_client import SignalClient
from sync.sshkeys import paramiko_key
from sync.turn import TurnConfig
from tests.bundles import seal_simple
from tests.relayfixture import TEST_LIMITS, RelayPKI, RunningRelay, eventually, utcnow
from tests.test_turn import TurnClient, TurnError, relay_range, start_turnserver, udp_port

CALL = "c0ffee" * 8
T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
POLICY = CallPolicy(allow=(("plant-a", "plant-b"), ("plant-b", "plant-c")))


# --- the leg table, sans-IO --------------------------------------------------------------------


def _req(
    table: LegTable,
    site: str,
    leg: str,
    peer: str,
    *,
    call: str = CALL,
    join: bool = False,
    roles: dict[str, Role] | None = None,
    connected: bool = True,
    now: dt.datetime = T0,
) -> Granted | Refused:
    roles = roles or {"plant-a": Role.EDGE, "plant-b": Role.EDGE, "plant-c": Role.EDGE}
    return table.request(
        site,
        LegRequest(leg, peer, call, join),
        site_role=roles.get(site),
        peer_role=roles.get(peer),
        peer_connected=connected,
        now=now,
    )


def test_call_policy_is_symmetric_edges_only_and_fails_closed() -> None:
    a, b, c = (Role.EDGE, "plant-a"), (Role.EDGE, "plant-b"), (Role.EDGE, "plant-c")
    assert POLICY.allows(a, b) and POLICY.allows(b, a) and POLICY.allows(c, b)
    assert not POLICY.allows(a, c) and not POLICY.allows(a, a)
    assert not CallPolicy().allows(a, b)  # nothing allowed by default
    every = CallPolicy(allow=(("edge", "edge"),))
    assert every.allows(a, c) and not every.allows(a, (Role.CORE, "hq"))
    assert not CallPolicy(allow=(("plant-a", "core"),)).allows(a, (Role.CORE, "hq"))


def test_open_join_renew_and_every_refusal_has_its_reason() -> None:
    t = LegTable(POLICY)
    g = _req(t, "plant-b", "L1", "plant-a", join=True)
    assert isinstance(g, Refused) and g.reason == (
        "no leg L1 between plant-a and plant-b to join (not opened yet, or closed)"
    )
    g = _req(t, "plant-a", "L1", "plant-b")
    assert isinstance(g, Granted) and g.kind is GrantKind.OPENED
    assert t.legs["L1"].a == "plant-a" and t.legs["L1"].b == "plant-b"
    refusals = {
        ("plant-b", "plant-c", CALL, False): "leg L1 is not a leg between plant-b and plant-c",
        ("plant-c", "plant-a", CALL, False): "leg L1 is not a leg between plant-c and plant-a",
        ("plant-c", "plant-b", CALL, True): "leg L1 is not a leg between plant-c and plant-b",
        ("plant-b", "plant-a", "ff", True): "leg L1 belongs to another call",
        ("plant-a", "plant-b", CALL, True): "leg L1 was opened by plant-a, which cannot join it",
    }
    for (site, peer, call, join), why in refusals.items():
        r = _req(t, site, "L1", peer, call=call, join=join)
        assert isinstance(r, Refused) and r.reason == why, (site, peer)
    g = _req(t, "plant-b", "L1", "plant-a", join=True)
    assert isinstance(g, Granted) and g.kind is GrantKind.JOINED
    for site, peer in (("plant-a", "plant-b"), ("plant-b", "plant-a")):
        g = _req(t, site, "L1", peer)
        assert isinstance(g, Granted) and g.kind is GrantKind.RENEWED
    # Both sides asking first, without join, at the same time: the second one joins.
    assert _req(t, "plant-b", "L2", "plant-a").kind is GrantKind.OPENED  # type: ignore[union-attr]
    assert _req(t, "plant-a", "L2", "plant-b").kind is GrantKind.JOINED  # type: ignore[union-attr]
    # A renewal is checked again: a site whose certificate went away gets none.
    r = _req(t, "plant-a", "L1", "plant-b", roles={"plant-a": Role.EDGE})
    assert isinstance(r, Refused) and r.reason == "plant-b is not a certified site of this relay"


@pytest.mark.parametrize(
    ("site", "peer", "roles", "connected", "why"),
    [
        ("plant-a", "plant-c", None, True, "policy: plant-a and plant-c may not call each other"),
        ("plant-a", "plant-a", None, True, "a leg joins two different sites, not plant-a with"),
        ("plant-a", "plant-b", None, False, "plant-b is not connected to the relay"),
        ("plant-a", "plant-x", None, True, "plant-x is not a certified site of this relay"),
        (
            "hq",
            "plant-a",
            {"hq": Role.CORE, "plant-a": Role.EDGE},
            True,
            "only edges take part in call legs; hq has a core",
        ),
        (
            "plant-a",
            "hq",
            {"hq": Role.CORE, "plant-a": Role.EDGE},
            True,
            "only edges take part in call legs; hq is a core",
        ),
    ],
)
def test_a_new_leg_is_refused(
    site: str, peer: str, roles: dict[str, Role] | None, connected: bool, why: str
) -> None:
    t = LegTable(POLICY)
    r = _req(t, site, "L1", peer, roles=roles, connected=connected)
    assert isinstance(r, Refused) and r.reason.startswith(why) and not t.legs
    e = audit_entry(r)
    assert e.event is AuditEvent.LEG_REFUSED and e.verdict is Verdict.REJECTED
    assert (e.origin, e.recipient, e.leg, e.call) == (site, peer, "L1", CALL)


def test_limits_rates_and_abuse() -> None:
    t = LegTable(dataclasses.replace(POLICY, max_legs_per_site=2, requests_per_minute=4))
    assert isinstance(_req(t, "plant-a", "L1", "plant-b"), Granted)
    assert isinstance(_req(t, "plant-b", "L2", "plant-c"), Granted)
    r = _req(t, "plant-c", "L3", "plant-b")
    assert isinstance(r, Refused) and r.reason == "limit: plant-b takes part in 2 legs already"
    assert isinstance(_req(t, "plant-a", "L4", "plant-b"), Refused)  # plant-b is full
    for _ in range(2):
        assert isinstance(_req(t, "plant-a", "L1", "plant-b"), Granted)  # 4th in the minute
    r = _req(t, "plant-a", "L1", "plant-b")
    assert isinstance(r, Refused) and not r.abusive
    assert r.reason == "rate: more than 4 leg requests a minute from plant-a; retry later"
    for _ in range(3):  # the 6th to 8th: refused, no more
        r = _req(t, "plant-a", "L1", "plant-b")
    assert isinstance(r, Refused) and not r.abusive
    r = _req(t, "plant-a", "L1", "plant-b")
    assert isinstance(r, Refused) and r.abusive  # the 9th: more than twice the rate
    later = T0 + dt.timedelta(minutes=1)
    assert isinstance(_req(t, "plant-a", "L1", "plant-b", now=later), Granted)


def test_close_and_the_grace_period() -> None:
    t = LegTable(POLICY)
    _req(t, "plant-a", "L1", "plant-b")
    _req(t, "plant-b", "L2", "plant-c")
    r = t.close("plant-c", LegClose("L1", "bye"), T0)
    assert isinstance(r, Refused) and r.reason == "no leg L1 of plant-c to close"
    c = t.close("plant-b", LegClose("L1", "hung up"), T0 + dt.timedelta(seconds=90))
    assert isinstance(c, Closed) and c.other == "plant-a" and "L1" not in t.legs
    e = audit_entry(c)
    assert (e.event, e.origin, e.recipient, e.duration_ms) == (
        AuditEvent.LEG_CLOSED,
        "plant-b",
        "plant-a",
        90_000,
    )
    # plant-c drops; back within the grace period: nothing closes.
    t.disconnected("plant-c", T0)
    assert t.expire(T0 + dt.timedelta(seconds=59)) == []
    t.reconnected("plant-c")
    assert t.expire(T0 + dt.timedelta(seconds=600)) == []
    # Away for the whole grace period: its legs close, by it, "site disconnected".
    t.disconnected("plant-c", T0 + dt.timedelta(seconds=600))
    [gone] = t.expire(T0 + dt.timedelta(seconds=660))
    assert (gone.leg.leg, gone.by, gone.other, gone.reason) == (
        "L2",
        "plant-c",
        "plant-b",
        "site disconnected",
    )
    assert t.legs == {}


def test_turn_urls_point_at_the_address_the_site_reached(tmp_path: Path) -> None:
    c = TurnConfig("dmz.zastava", ("10.1.0.1", "10.2.0.1", "fd00::1"), *_files(tmp_path))
    g = TurnGrants(c)
    assert g.urls("10.2.0.1") == (
        "turn:10.2.0.1:3478?transport=udp",
        "turn:10.2.0.1:3478?transport=tcp",
    )
    assert g.urls("fd00:0::1") == (
        "turn:[fd00::1]:3478?transport=udp",
        "turn:[fd00::1]:3478?transport=tcp",
    )
    assert len(g.urls("127.0.0.1")) == 6 and len(g.urls(None)) == 6  # not a TURN address
    turn.write_secret(c.secret_file, "s" * 43)
    grant = g.grant(Granted("plant-a", "plant-b", "L1", CALL, GrantKind.OPENED, T0), "10.1.0.1")
    expiry = int((T0 + c.ttl).timestamp())
    assert grant.username == f"{expiry}:L1.plant-a" and grant.expires == expiry
    assert turn.check("s" * 43, grant.username, grant.credential, now=T0) == "L1.plant-a"
    # A new secret (zastava turn config --new-secret) is used without a restart.
    turn.write_secret(c.secret_file, "t" * 43)
    again = g.grant(Granted("plant-a", "plant-b", "L1", CALL, GrantKind.OPENED, T0), "10.1.0.1")
    assert turn.check("t" * 43, again.username, again.credential, now=T0) == "L1.plant-a"


def _files(base: Path) -> tuple[Path, Path, Path]:
    return base / "turn-secret", base / "turnserver.conf", base / "turn"


def test_relay_toml_calls_and_turn_sections(tmp_path: Path) -> None:
    base = {"data_dir": "d", "node_dir": "n", "nodes_dir": "x"}
    c = RelayConfig.from_dict(
        {
            **base,
            "turn": {"config": "turn.toml"},
            "calls": {"allow": [["plant-a", "plant-b"]], "grace_seconds": 30},
        },
        base=tmp_path,
        source="relay.toml",
    )
    assert c.turn_config == tmp_path / "turn.toml"
    assert c.calls == CallPolicy(allow=(("plant-a", "plant-b"),), grace_seconds=30)
    plain = RelayConfig.from_dict(base, base=tmp_path, source="relay.toml")
    assert plain.turn_config is None and plain.calls.allow == ()  # fail closed
    bad = {
        "calls": ({"allow": [["plant-a"]]}, "calls.allow must be a list of [site, site] pairs"),
        "turn": ({"conf": "x"}, "unknown setting(s) in [turn]: ['conf']"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            RelayConfig.from_dict({**base, key: value}, base=tmp_path, source="relay.toml")
    for value, message in [
        ({"max_legs_per_site": 0}, "calls.max_legs_per_site must be a positive integer"),
        ({"grace": 1}, "unknown setting(s) in [calls]: ['grace']"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            RelayConfig.from_dict({**base, "calls": value}, base=tmp_path, source="relay.toml")


# --- a real relay over SSH -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RelayPKI:
    p = RelayPKI.create(tmp_path_factory.mktemp("pki"))
    p.enroll(Role.EDGE, "plant-c")
    return p


class MovableClock:
    """The real clock plus an offset a test moves forward (grace periods, durations)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


@dataclasses.dataclass
class LegRelay:
    relay: RunningRelay
    turn: TurnConfig
    clock: MovableClock

    @property
    def secret(self) -> str:
        return turn.load_secret(self.turn.secret_file)

    def entries(self) -> list[AuditEntry]:
        """Every leg entry in the audit log, once the guard flushed what is queued."""
        done = threading.Event()

        def flush(now: dt.datetime) -> None:
            self.relay.server.guard.flush(now)
            done.set()

        self.relay.server.call(flush)
        assert done.wait(20)
        path = self.relay.config.data_dir / "audit.db"
        with SqliteAuditStore.open(path, readonly=True) as store:
            found = [AuditEntry.parse(data) for _, data in store.iter_entries()]
        return [e for e in found if e.event.is_leg]


def turn_config(base: Path) -> TurnConfig:
    base.mkdir(parents=True, exist_ok=True)
    c = TurnConfig(
        "dmz.zastava", ("127.0.0.1",), *_files(base), port=udp_port(), relay_ports=relay_range()
    )
    (base / "turn.toml").write_text(c.toml())
    turn.write_secret(c.secret_file, turn.new_secret())
    c.state_dir.mkdir(mode=0o700, exist_ok=True)
    return c


@contextmanager
def leg_relay(
    pki: RelayPKI, tmp_path: Path, *, calls: CallPolicy = POLICY, with_turn: bool = True
) -> Iterator[LegRelay]:
    tc = turn_config(tmp_path / "turn")
    config = RelayConfig(
        data_dir=tmp_path / "data",
        node_dir=pki.relay.directory,
        nodes_dir=pki.nodes_dir(tmp_path / "nodes"),
        host="127.0.0.1",
        port=0,
        limits=TEST_LIMITS,
        calls=calls,
        turn_config=tmp_path / "turn" / "turn.toml" if with_turn else None,
    )
    clock = MovableClock()
    server = RelayServer(config, clock=clock)
    server.start()
    running = RunningRelay(server, config, pki, pki.relay)
    try:
        yield LegRelay(running, tc, clock)
    finally:
        running.stop()


class Link:
    """An edge's standing signalling link (the real ``Doorbell``), frames into a queue."""

    def __init__(self, lr: LegRelay, site: str) -> None:
        self.site = site
        self.hub = lr.relay.server.hub
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.bell = Doorbell(
            lr.relay.host,
            lr.relay.port,
            lr.relay.pki.nodes[site],
            lr.relay.certificate,
            lambda: None,
            clock=utcnow,
            on_frame=self.frames.put,
        )
        self.bell.start()
        assert self.bell.connected.wait(30), f"{site}: the link did not come up"
        eventually(lambda: self.hub.connected(site), timeout=20)

    def expect(self, *types: FrameType, timeout: float = 20) -> Frame:
        frame = self.frames.get(timeout=timeout)
        assert frame.type in types, (frame.type, frame.payload[:300])
        return frame

    def request(
        self, leg: str, peer: str, *, call: str = CALL, join: bool = False
    ) -> LegGrant | LegRefused:
        self.bell.send(LegRequest(leg, peer, call, join).frame())
        frame = self.expect(FrameType.LEG_GRANT, FrameType.LEG_REFUSED)
        if frame.type is FrameType.LEG_GRANT:
            return LegGrant.parse(frame)
        return LegRefused.parse(frame)

    def grant(self, leg: str, peer: str, **kw: bool) -> LegGrant:
        answer = self.request(leg, peer, **kw)  # type: ignore[arg-type]
        assert isinstance(answer, LegGrant), answer
        return answer

    def refused(self, leg: str, peer: str, **kw: str | bool) -> str:
        answer = self.request(leg, peer, **kw)  # type: ignore[arg-type]
        assert isinstance(answer, LegRefused), answer
        return answer.reason

    def close(self) -> None:
        self.bell.stop()
        eventually(lambda: not self.bell.connected.is_set(), timeout=20)


@contextmanager
def links(lr: LegRelay, *sites: str) -> Iterator[list[Link]]:
    made: list[Link] = []
    try:
        for s in sites:
            made.append(Link(lr, s))
        yield made
    finally:
        for link in made:
            link.bell.stop()


def test_a_leg_granted_both_ways_renewed_and_audited(pki: RelayPKI, tmp_path: Path) -> None:
    with leg_relay(pki, tmp_path) as lr, links(lr, "plant-a", "plant-b") as (a, b):
        ga = a.grant("leg-1", "plant-b")
        assert ga.peer == "plant-b" and ga.urls == (
            f"turn:127.0.0.1:{lr.turn.port}?transport=udp",
            f"turn:127.0.0.1:{lr.turn.port}?transport=tcp",
        )
        expiry, _, name = ga.username.partition(":")
        assert name == "leg-1.plant-a" and int(expiry) == ga.expires
        lifetime = ga.expires - utcnow().timestamp()
        assert lr.turn.ttl.total_seconds() - 120 < lifetime <= lr.turn.ttl.total_seconds() + 1
        assert turn.check(lr.secret, ga.username, ga.credential, now=utcnow()) == name
        gb = b.grant("leg-1", "plant-a", join=True)
        assert gb.username.endswith(":leg-1.plant-b") and gb.peer == "plant-a"
        assert turn.check(lr.secret, gb.username, gb.credential, now=utcnow()) == "leg-1.plant-b"
        lr.clock.offset = dt.timedelta(seconds=5)  # a renewal later: a fresh credential
        again = a.grant("leg-1", "plant-b")
        assert again.expires > ga.expires and again.credential != ga.credential
        entries = lr.entries()
    assert [(e.event, e.origin, e.recipient, e.verdict, e.reason) for e in entries] == [
        (AuditEvent.LEG_GRANTED, "plant-a", "plant-b", Verdict.ACCEPTED, "opened"),
        (AuditEvent.LEG_GRANTED, "plant-b", "plant-a", Verdict.ACCEPTED, "joined"),
        (AuditEvent.LEG_GRANTED, "plant-a", "plant-b", Verdict.ACCEPTED, "renewed"),
    ]
    assert {(e.leg, e.call) for e in entries} == {("leg-1", CALL)}
    # Metadata only: no credential (nor the secret) in any file the relay wrote.
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (ga.credential, gb.credential, again.credential, lr.secret):
                assert secret.encode() not in data, path


def test_legs_the_policy_does_not_allow_are_refused_and_audited(
    pki: RelayPKI, tmp_path: Path
) -> None:
    with leg_relay(pki, tmp_path) as lr, links(lr, "plant-a", "plant-c", "hq") as (a, c, hq):
        assert (
            a.refused("leg-2", "plant-c") == "policy: plant-a and plant-c may not call each other"
        )
        assert (
            c.refused("leg-3", "plant-a") == "policy: plant-c and plant-a may not call each other"
        )
        assert a.refused("leg-4", "hq") == "only edges take part in call legs; hq is a core"
        assert hq.refused("leg-5", "plant-a") == "only edges take part in call legs; hq has a core"
        assert a.refused("leg-6", "plant-b") == "plant-b is not connected to the relay"
        assert a.refused("leg-7", "stranger") == "stranger is not a certified site of this relay"
        entries = lr.entries()
    assert [(e.origin, e.recipient, e.leg) for e in entries] == [
        ("plant-a", "plant-c", "leg-2"),
        ("plant-c", "plant-a", "leg-3"),
        ("plant-a", "hq", "leg-4"),
        ("hq", "plant-a", "leg-5"),
        ("plant-a", "plant-b", "leg-6"),
        ("plant-a", "stranger", "leg-7"),
    ]
    assert all(e.event is AuditEvent.LEG_REFUSED and e.verdict is Verdict.REJECTED for e in entries)
    assert entries[0].reason == "policy: plant-a and plant-c may not call each other"


def test_a_relay_without_turn_grants_nothing(pki: RelayPKI, tmp_path: Path) -> None:
    with leg_relay(pki, tmp_path, with_turn=False) as lr, links(lr, "plant-a", "plant-b") as (a, _):
        assert a.refused("leg-1", "plant-b") == NO_TURN
        [e] = lr.entries()
    assert e.event is AuditEvent.LEG_REFUSED and e.reason == NO_TURN


def test_the_second_side_gets_only_the_leg_it_is_in(pki: RelayPKI, tmp_path: Path) -> None:
    with leg_relay(pki, tmp_path) as lr, links(lr, "plant-a", "plant-b", "plant-c") as (a, b, c):
        assert b.refused("leg-9", "plant-a", join=True) == (
            "no leg leg-9 between plant-a and plant-b to join (not opened yet, or closed)"
        )
        a.grant("leg-9", "plant-b")
        assert b.refused("leg-9", "plant-c", join=True) == (
            "leg leg-9 is not a leg between plant-b and plant-c"
        )
        assert c.refused("leg-9", "plant-a") == "leg leg-9 is not a leg between plant-c and plant-a"
        assert c.refused("leg-9", "plant-b", join=True) == (
            "leg leg-9 is not a leg between plant-c and plant-b"
        )
        assert b.refused("leg-9", "plant-a", call="ab", join=True) == (
            "leg leg-9 belongs to another call"
        )
        b.grant("leg-9", "plant-a", join=True)
        entries = lr.entries()
    refused = [e for e in entries if e.event is AuditEvent.LEG_REFUSED]
    assert [(e.origin, e.recipient) for e in refused] == [
        ("plant-b", "plant-a"),
        ("plant-b", "plant-c"),
        ("plant-c", "plant-a"),
        ("plant-c", "plant-b"),
        ("plant-b", "plant-a"),
    ]
    assert refused[4].call == "ab" and all(e.verdict is Verdict.REJECTED for e in refused)
    granted = [(e.origin, e.reason) for e in entries if e.event is AuditEvent.LEG_GRANTED]
    assert granted == [("plant-a", "opened"), ("plant-b", "joined")]


def test_leg_close_reaches_the_other_site_and_is_audited_with_its_duration(
    pki: RelayPKI, tmp_path: Path
) -> None:
    with leg_relay(pki, tmp_path) as lr, links(lr, "plant-a", "plant-b") as (a, b):
        a.grant("leg-1", "plant-b")
        b.grant("leg-1", "plant-a", join=True)
        lr.clock.offset = dt.timedelta(seconds=90)
        b.bell.send(LegClose("leg-1", "hung up").frame())
        closed = LegClosed.parse(a.expect(FrameType.LEG_CLOSED))
        assert closed == LegClosed("leg-1", "plant-b", "hung up")
        assert b.frames.empty()  # the closing side is not told
        assert b.refused("leg-1", "plant-a", join=True).startswith("no leg leg-1 between")
        b.bell.send(LegClose("leg-1", "again").frame())
        assert LegRefused.parse(b.expect(FrameType.LEG_REFUSED)) == LegRefused(
            "leg-1", "no leg leg-1 of plant-b to close"
        )
        entries = lr.entries()
    [close] = [e for e in entries if e.event is AuditEvent.LEG_CLOSED]
    assert (close.origin, close.recipient, close.leg, close.call, close.reason) == (
        "plant-b",
        "plant-a",
        "leg-1",
        CALL,
        "hung up",
    )
    assert 90_000 <= close.duration_ms < 90_000 + 60_000
    assert close.details().startswith("leg=leg-1 call=" + CALL + " duration=9")


def test_legs_survive_a_reconnect_and_close_after_the_grace_period(
    pki: RelayPKI, tmp_path: Path
) -> None:
    with leg_relay(pki, tmp_path) as lr, links(lr, "plant-a") as (a,):
        b = Link(lr, "plant-b")
        a.grant("leg-1", "plant-b")
        b.grant("leg-1", "plant-a", join=True)
        b.close()
        eventually(lambda: not lr.relay.server.hub.connected("plant-b"), timeout=20)
        with pytest.raises(LinkDownError, match="link to the relay 127.0.0.1:.* is down"):
            b.bell.send(LegRequest("leg-1", "plant-a", CALL).frame())
        lr.clock.offset = dt.timedelta(seconds=30)  # back within the 60 s of grace
        b = Link(lr, "plant-b")
        lr.clock.offset = dt.timedelta(seconds=120)
        assert b.grant("leg-1", "plant-a").username.endswith(":leg-1.plant-b")  # still there
        b.close()
        eventually(lambda: not lr.relay.server.hub.connected("plant-b"), timeout=20)
        lr.clock.offset = dt.timedelta(seconds=181)  # away for the whole grace period
        closed = LegClosed.parse(a.expect(FrameType.LEG_CLOSED, timeout=30))
        assert closed == LegClosed("leg-1", "plant-b", "site disconnected")
        entries = lr.entries()
    [close] = [e for e in entries if e.event is AuditEvent.LEG_CLOSED]
    assert (close.origin, close.recipient, close.reason) == (
        "plant-b",
        "plant-a",
        "site disconnected",
    )
    assert close.duration_ms >= 181_000


def test_malformed_leg_frames_close_only_that_channel(pki: RelayPKI, tmp_path: Path) -> None:
    """W5: the relay answers ERROR and closes the sender's channel; the others go on, and the
    refusal is in the audit log."""
    with leg_relay(pki, tmp_path) as lr, links(lr, "plant-b", "plant-c") as (b, c):
        attacks = {
            b'{"call":"00","leg":"x","peer":"plant-b","extra":1}': "unknown key 'extra'",
            b'{"call":"00","leg":"a:b","peer":"plant-b"}': "is not a leg id",
            b'{"call":"00","leg":"x","peer":"plant-b","join":false}': "'join' must be true",
            b"\xff": "not UTF-8",
        }
        for payload, why in attacks.items():
            transport = paramiko.Transport((lr.relay.host, lr.relay.port))
            try:
                transport.start_client(timeout=10)
                transport.auth_publickey("plant-a", paramiko_key(pki.nodes["plant-a"].keys.tls))
                raw = SignalClient(transport)
                raw.send(Frame(FrameType.LEG_REQUEST, payload))
                error = raw.wait_for(FrameType.ERROR, 20)
                assert b"malformed frame: LEG_REQUEST: " in error.payload
                assert why.encode() in error.payload
                with pytest.raises(EOFError):
                    while raw.recv(5) is not None:
                        pass
                raw.close()
            finally:
                transport.close()
        # A node may not send the relay's own frames either: its channel is closed, and the
        # edge's link comes back by itself and works again.
        reconnected = threading.Event()
        c.bell.on_connect = reconnected.set
        c.bell.send(LegGrant.parse(_grant_frame()).frame())
        assert b"a node may not send LEG_GRANT frames" in c.expect(FrameType.ERROR).payload
        assert reconnected.wait(30), "the link did not reconnect"
        eventually(lambda: lr.relay.server.hub.connected("plant-c"), timeout=20)
        assert c.grant("leg-5", "plant-b").username.endswith(":leg-5.plant-c")
        # plant-b's channel is untouched.
        assert b.refused("leg-1", "plant-a") == "plant-a is not connected to the relay"
        assert b.frames.empty()
        entries = lr.entries()
    malformed = [e for e in entries if e.reason.startswith("malformed: ")]
    assert len(malformed) == len(attacks)
    assert all(e.origin == "plant-a" and e.leg == "" for e in malformed)
    assert "unknown key 'extra'" in malformed[0].reason


def _grant_frame() -> Frame:
    return LegGrant(
        "leg-1",
        "plant-b",
        ("turn:127.0.0.1:3478?transport=udp",),
        "1800000000:leg-1.plant-c",
        "A" * 27 + "=",
        1800000000,
    ).frame()


def test_request_floods_are_refused_then_cut(pki: RelayPKI, tmp_path: Path) -> None:
    calls = dataclasses.replace(POLICY, requests_per_minute=3, max_legs_per_site=2)
    with leg_relay(pki, tmp_path, calls=calls) as lr, links(lr, "plant-a", "plant-b") as (a, b):
        a.grant("leg-1", "plant-b")
        a.grant("leg-2", "plant-b")
        assert a.refused("leg-3", "plant-b") == "limit: plant-a takes part in 2 legs already"
        assert a.refused("leg-3", "plant-b").startswith("rate: more than 3 leg requests a minute")
        for _ in range(2):
            a.refused("leg-3", "plant-b")
        # The 7th request this minute is more than twice the rate: refused, channel closed.
        a.bell.send(LegRequest("leg-3", "plant-b", CALL).frame())
        a.expect(FrameType.LEG_REFUSED)
        assert b"far too many leg frames from plant-a" in a.expect(FrameType.ERROR).payload
        # plant-b still has its own rate.
        b.grant("leg-1", "plant-a", join=True)


def test_plants_that_may_call_each_other_may_signal_each_other(
    pki: RelayPKI, tmp_path: Path
) -> None:
    """[calls] lets the two plants' call set-up envelopes pass edge to edge (E2E encrypted,
    checked, never stored); it opens no bundle upload between them ([policy])."""
    with leg_relay(pki, tmp_path) as lr, links(lr, "plant-a", "plant-b", "plant-c") as (a, b, c):

        def envelope(origin: str, recipient: str) -> bytes:
            return seal_simple(
                pki.nodes[origin],
                pki.nodes[recipient],
                [Item("bridge.offer", b"v=0 sdp")],
                stream="signal",
                now=utcnow(),
            )

        offer = envelope("plant-a", "plant-b")
        a.bell.send(Frame(FrameType.ENVELOPE, offer))
        assert b.expect(FrameType.ENVELOPE).payload == offer
        a.bell.send(Frame(FrameType.ENVELOPE, envelope("plant-a", "plant-c")))
        assert a.expect(FrameType.ERROR).payload == b"policy: plant-a may not signal plant-c"
        assert c.frames.empty()
        with lr.relay.client("plant-a") as up:
            up.upload("x", pki.seal("plant-a", "plant-b", seq=1))

            def noted() -> str | None:
                notes = {r.name: r.reason for r in up.rejections()}
                return notes.get("x")

            assert "policy: plant-a may not send to plant-b" in eventually(noted, timeout=20)


# --- the granted credential on the real coturn (C3) ------------------------------------------


def _server(url: str) -> tuple[str, int]:
    m = re.fullmatch(r"turn:([0-9.]+):([0-9]+)\?transport=udp", url)
    assert m, url
    return m.group(1), int(m.group(2))


@pytest.mark.slow
def test_granted_legs_relay_on_real_coturn_and_nothing_else_does(
    pki: RelayPKI, tmp_path: Path
) -> None:
    """C3: the credentials the relay granted for a leg allocate on coturn and carry data
    relay-to-relay both ways; the same username signed with another secret, or an expired
    one, gets 401; a peer no certificate names gets 403."""
    with leg_relay(pki, tmp_path) as lr, links(lr, "plant-a", "plant-b") as (a, b):
        text = turn.render(
            lr.turn, secret=lr.secret, peers=[turn.EdgePeer("plant-a", ("127.0.0.2",))]
        )
        lr.turn.conf_file.write_text(text + "allow-loopback-peers\n")
        lr.turn.conf_file.chmod(0o600)
        ts = start_turnserver(lr.turn)
        try:
            ga = a.grant("leg-1", "plant-b")
            gb = b.grant("leg-1", "plant-a", join=True)
            ca = TurnClient(_server(ga.urls[0]), ga.username, ga.credential)
            cb = TurnClient(_server(gb.urls[0]), gb.username, gb.credential)
            try:
                relayed_a, relayed_b = ca.allocate(), cb.allocate()
                ca.permit(relayed_b[0])
                cb.permit(relayed_a[0])
                ca.send(relayed_b, b"srtp a->b")
                assert cb.data() == (relayed_a, b"srtp a->b")
                cb.send(relayed_a, b"srtp b->a")
                assert ca.data() == (relayed_b, b"srtp b->a")
                with pytest.raises(TurnError) as denied:
                    ca.permit("127.0.0.3")
                assert denied.value.code == 403
            finally:
                ca.close()
                cb.close()
            forged = turn.issue(turn.new_secret(), "leg-1.plant-a", now=utcnow())
            expired = turn.issue(
                lr.secret,
                "leg-1.plant-a",
                now=utcnow() - dt.timedelta(hours=2),
                ttl=dt.timedelta(hours=1),
            )
            for cred in (forged, expired):
                client = TurnClient(_server(ga.urls[0]), cred.username, cred.password)
                try:
                    with pytest.raises(TurnError) as refused:
                        client.allocate()
                    assert refused.value.code == 401
                finally:
                    client.close()
        finally:
            ts.stop()
        assert ga.credential not in ts.log() and lr.secret not in ts.log()
