"""TURN for call legs (sync/turn.py): shared-secret credentials and the coturn configuration,
checked against the real coturn (Debian's ``turnserver``) on loopback (THREATS.md C3).

The TURN client here is a small RFC 5766 client over UDP whose messages are encoded and
parsed by aioice (aiortc's ICE library, which the SFU's TURN client uses): allocate with the
long-term credential mechanism, create permissions, send and receive data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aioice import stun
from aioice.turn import UDP_TRANSPORT

from pki.ca import IssuingCA
from pki.names import NodeName, Role
from pki.node import create_request, import_bundle
from pki.trust import TrustStore, fingerprint
from sync import turn
from sync.turn import CredentialError, EdgePeer, TurnConfig
from tests.conftest import NOW, make_ca

SECRET = "k" * 43


def require_coturn() -> str:
    path = shutil.which("turnserver")
    assert path, (
        "coturn is not installed: apt-get install coturn (scripts/bootstrap.sh installs it, "
        "from scripts/debian-packages.txt)"
    )
    return path


# --- credentials ---------------------------------------------------------------------------


def test_issued_credential_checks_and_matches_openssl() -> None:
    """The password is base64(HMAC-SHA1(secret, username)), as openssl computes it."""
    cred = turn.issue(SECRET, "leg-7.plant-a", now=NOW, ttl=dt.timedelta(hours=1))
    expiry = int(NOW.timestamp()) + 3600
    assert cred.username == f"{expiry}:leg-7.plant-a"
    assert cred.expires == NOW + dt.timedelta(hours=1) and cred.leg == "leg-7.plant-a"
    assert shutil.which("openssl"), "openssl is missing: scripts/bootstrap.sh installs it"
    mac = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", SECRET, "-binary"],
        input=cred.username.encode(),
        capture_output=True,
        check=True,
    ).stdout
    b64 = subprocess.run(["base64"], input=mac, capture_output=True, check=True).stdout
    assert cred.password == b64.decode().strip()
    assert turn.check(SECRET, cred.username, cred.password, now=NOW) == "leg-7.plant-a"
    # Valid through its expiry second, refused after it (as coturn does).
    at_expiry = NOW + dt.timedelta(hours=1)
    assert turn.check(SECRET, cred.username, cred.password, now=at_expiry) == "leg-7.plant-a"


def test_expired_wrong_and_malformed_credentials_are_refused() -> None:
    cred = turn.issue(SECRET, "leg-1", now=NOW, ttl=dt.timedelta(minutes=5))
    later = NOW + dt.timedelta(minutes=5, seconds=1)
    with pytest.raises(CredentialError, match="the credential of leg leg-1 expired at 2026-11"):
        turn.check(SECRET, cred.username, cred.password, now=later)
    other = turn.issue("o" * 43, "leg-1", now=NOW, ttl=dt.timedelta(minutes=5))
    with pytest.raises(CredentialError, match="wrong password for leg leg-1"):
        turn.check(SECRET, cred.username, other.password, now=NOW)
    # The expiry is part of what is signed: moving it forward breaks the password.
    expiry, _, leg = cred.username.partition(":")
    with pytest.raises(CredentialError, match="wrong password"):
        turn.check(SECRET, f"{int(expiry) + 3600}:{leg}", cred.password, now=NOW)
    for bad in ("leg-1", ":leg-1", "soon:leg-1", "1799999999:", "1799999999:a:b"):
        with pytest.raises(CredentialError, match="is not '<expiry>:<leg id>'"):
            turn.check(SECRET, bad, cred.password, now=NOW)


def test_issue_refuses_bad_legs_lifetimes_and_secrets() -> None:
    with pytest.raises(ValueError, match="no ':'"):
        turn.issue(SECRET, "a:b", now=NOW)
    with pytest.raises(ValueError, match="from 1 s to 1 day"):
        turn.issue(SECRET, "leg", now=NOW, ttl=dt.timedelta(days=2))
    with pytest.raises(ValueError, match="the TURN secret must be 32 to 256"):
        turn.issue("short", "leg", now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        turn.issue(SECRET, "leg", now=NOW.replace(tzinfo=None))


def test_new_secret_and_its_file(tmp_path: Path) -> None:
    s = turn.new_secret(lambda n: bytes(range(n)))
    assert s == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8" and turn.check_secret(s) == s
    assert turn.new_secret() != turn.new_secret()
    path = tmp_path / "etc" / "turn-secret"
    turn.write_secret(path, s)
    assert path.stat().st_mode & 0o777 == 0o600 and turn.load_secret(path) == s
    path.chmod(0o640)
    with pytest.raises(ValueError, match=r"readable by others \(mode 640\); run chmod 600"):
        turn.load_secret(path)
    path.chmod(0o600)
    path.write_text("not a secret\n")
    with pytest.raises(ValueError, match="not a TURN secret"):
        turn.load_secret(path)


# --- configuration -------------------------------------------------------------------------


def config(tmp_path: Path, **changes: object) -> TurnConfig:
    values: dict[str, object] = {
        "realm": "dmz.zastava",
        "listen": ("127.0.0.1",),
        "secret_file": tmp_path / "turn-secret",
        "conf_file": tmp_path / "turnserver.conf",
        "state_dir": tmp_path / "turn",
    }
    values.update(changes)
    return TurnConfig(**values)  # type: ignore[arg-type]


def test_turn_toml_round_trip_and_refusals(tmp_path: Path) -> None:
    c = config(tmp_path, listen=("10.1.0.1", "fd00::1"), relay_ports=(40000, 40099))
    (tmp_path / "turn.toml").write_text(c.toml())
    assert TurnConfig.from_toml(tmp_path / "turn.toml") == c
    bad = {
        'realm = "a b"\n': "realm 'a b': letters, digits",
        "typo = 1\n": "unknown setting(s): ['typo']",
        'listen = ["0.0.0.0"]\n': "0.0.0.0 is not a unicast address of this host",
        'listen = ["relay.example"]\n': "'relay.example' is not an IP address",
        "relay_ports = [3000, 3500]\nport = 3478\n": "port 3478 lies inside relay_ports",
        "relay_ports = [80, 90]\n": "must lie within 1024-65535",
        "credential_hours = 48\n": "credential_hours must be at most 24",
        "user_quota = 0\n": "user_quota must be a positive integer",
    }
    for line, message in bad.items():
        key = line.split("=")[0].strip()
        kept = [x for x in c.toml().splitlines(keepends=True) if not x.startswith(key + " ")]
        if key == "relay_ports":
            kept = [x for x in kept if not x.startswith("port ")]
        (tmp_path / "bad.toml").write_text("".join(kept) + line)
        with pytest.raises(ValueError, match=re.escape(message)):
            TurnConfig.from_toml(tmp_path / "bad.toml")


def test_rendered_conf_denies_every_peer_but_edges_and_the_relay(tmp_path: Path) -> None:
    c = config(tmp_path, listen=("10.1.0.1", "10.2.0.1"))
    text = turn.render(
        c,
        secret=SECRET,
        peers=[EdgePeer("plant-b", ("10.2.0.7",)), EdgePeer("plant-a", ("10.1.0.5", "fd00::5"))],
    )
    lines = [x for x in text.splitlines() if x and not x.startswith("#")]
    options = {x.partition("=")[0] for x in lines}
    assert {
        "use-auth-secret", "fingerprint", "secure-stun", "no-cli", "no-tls", "no-dtls",
        "no-tcp-relay", "no-multicast-peers", "no-rfc5780", "no-stun-backward-compatibility",
        "no-software-attribute", "stale-nonce", "simple-log", "no-stdout-log",
    } <= options  # fmt: skip
    assert "allow-loopback-peers" not in options and "lt-cred-mech" not in options
    assert [x for x in lines if x.startswith("listening-ip")] == [
        "listening-ip=10.1.0.1",
        "listening-ip=10.2.0.1",
    ]
    assert text.count(SECRET) == 1 and f"static-auth-secret={SECRET}" in lines
    peers = [x for x in lines if "peer-ip" in x]
    assert peers == [
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "allowed-peer-ip=10.1.0.1",
        "allowed-peer-ip=10.2.0.1",
        "allowed-peer-ip=10.1.0.5",
        "allowed-peer-ip=fd00::5",
        "allowed-peer-ip=10.2.0.7",
    ]
    assert "min-port=61000" in lines and "max-port=61999" in lines
    assert f"log-file={tmp_path / 'turn' / 'turnserver.log'}" in lines
    with pytest.raises(ValueError, match="edge plant-a: 'x' is not an IP address"):
        turn.render(c, secret=SECRET, peers=[EdgePeer("plant-a", ("x",))])
    with pytest.raises(ValueError, match="the TURN secret must be"):
        turn.render(c, secret="a\nno-auth", peers=[])


def _node_cert(ca: IssuingCA, d: Path, role: Role, site: str, ips: tuple[str, ...]) -> Path:
    import ipaddress

    name = NodeName(role, site)
    request = create_request(d, name, ip_addresses=tuple(map(ipaddress.ip_address, ips)))
    bundle = ca.sign_request(request, expect=name, now=NOW)
    import_bundle(d, bundle, now=NOW, root_fingerprint=fingerprint(ca.root))
    return d / "certs" / "tls.pem"


def test_edge_peers_are_the_certified_edges_ip_addresses(tmp_path: Path, ca: IssuingCA) -> None:
    from cryptography import x509

    def load(p: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificates(p.read_bytes())[0]

    certs = [
        ("a.pem", load(_node_cert(ca, tmp_path / "a", Role.EDGE, "plant-a", ("10.1.0.5",)))),
        ("core.pem", load(_node_cert(ca, tmp_path / "c", Role.CORE, "hq", ("10.9.0.1",)))),
        ("b.pem", load(_node_cert(ca, tmp_path / "b", Role.EDGE, "plant-b", ()))),
    ]
    other = make_ca(tmp_path / "other-ca")
    certs.append(("x.pem", load(_node_cert(other, tmp_path / "x", Role.EDGE, "x", ("10.6.6.6",)))))
    trust = TrustStore.load(tmp_path / "a" / "trust")  # the relay's is the same
    peers, refused = turn.edge_peers(certs, trust=trust, now=NOW)
    assert peers == [EdgePeer("plant-a", ("10.1.0.5",))]
    reasons = {r.source: r.reason for r in refused}
    assert "role mismatch" in reasons["core.pem"]
    assert "names no usable IP address (enroll it with --ip" in reasons["b.pem"]
    assert set(reasons) == {"core.pem", "b.pem", "x.pem"}
    # Once the edge's certificate has expired, it is no peer any more.
    later = NOW + dt.timedelta(days=3 * 366)
    peers, refused = turn.edge_peers(certs[:1], trust=trust, now=later)
    assert peers == [] and len(refused) == 1


# --- a TURN client (RFC 5766 over UDP) -----------------------------------------------------


class TurnError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code


@dataclass
class TurnClient:
    server: tuple[str, int]
    username: str
    password: str
    sock: socket.socket = field(init=False)
    key: bytes | None = None
    realm: str | None = None
    nonce: bytes | None = None
    indications: list[stun.Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)

    def close(self) -> None:
        self.sock.close()

    def _receive(self, transaction_id: bytes | None) -> stun.Message:
        while True:
            msg = stun.parse_message(self.sock.recv(65536))
            if transaction_id is not None and msg.transaction_id == transaction_id:
                return msg
            if msg.message_class is stun.Class.INDICATION:
                if transaction_id is None:
                    return msg
                self.indications.append(msg)

    def request(self, method: stun.Method, **attributes: object) -> stun.Message:
        """One request with the long-term credential mechanism (401 → realm and nonce)."""
        for first in (True, False):
            msg = stun.Message(method, stun.Class.REQUEST)
            msg.attributes.update({k.replace("_", "-"): v for k, v in attributes.items()})
            if self.key is not None:
                assert self.realm is not None and self.nonce is not None
                msg.attributes.update(
                    {"USERNAME": self.username, "REALM": self.realm, "NONCE": self.nonce}
                )
                msg.add_message_integrity(self.key)
            else:
                msg.add_fingerprint()
            self.sock.sendto(bytes(msg), self.server)
            response = self._receive(msg.transaction_id)
            if response.message_class is stun.Class.RESPONSE:
                assert self.key is not None and response.check_message_integrity(self.key)
                return response
            code, reason = response.attributes["ERROR-CODE"]
            if first and (code == 438 or (code == 401 and self.key is None)):
                self.realm = response.attributes["REALM"]
                self.nonce = response.attributes["NONCE"]
                secret = f"{self.username}:{self.realm}:{self.password}".encode()
                self.key = hashlib.md5(secret).digest()
                continue
            raise TurnError(code, reason)
        raise AssertionError("unreachable")

    def allocate(self) -> tuple[str, int]:
        r = self.request(stun.Method.ALLOCATE, REQUESTED_TRANSPORT=UDP_TRANSPORT, LIFETIME=600)
        host, port = r.attributes["XOR-RELAYED-ADDRESS"]
        return str(host), int(port)

    def permit(self, peer_ip: str) -> None:
        self.request(stun.Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=(peer_ip, 0))

    def send(self, peer: tuple[str, int], data: bytes) -> None:
        msg = stun.Message(
            stun.Method.SEND,
            stun.Class.INDICATION,
            attributes={"XOR-PEER-ADDRESS": peer, "DATA": data},
        )
        self.sock.sendto(bytes(msg), self.server)

    def data(self) -> tuple[tuple[str, int], bytes]:
        msg = self.indications.pop(0) if self.indications else self._receive(None)
        assert msg.message_method is stun.Method.DATA
        host, port = msg.attributes["XOR-PEER-ADDRESS"]
        return (str(host), int(port)), bytes(msg.attributes["DATA"])


def udp_port(host: str = "127.0.0.1") -> int:
    """A port for turnserver's listener, free for UDP and TCP (coturn binds both), below
    Linux's ephemeral range and the relay ranges: an ephemeral port the kernel gave for UDP
    was once taken on TCP by another test's connection, and coturn retried its bind forever."""
    for _ in range(200):
        port = random.randrange(15000, 20000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free for UDP and TCP on {host} in 15000-19999")


def relay_range() -> tuple[int, int]:
    """40 relay ports below Linux's ephemeral range (32768+), different for every run."""
    base = random.randrange(20000, 32000 - 40, 40)
    return base, base + 39


@dataclass
class Turnserver:
    config: TurnConfig
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> tuple[str, int]:
        return self.config.listen[0], self.config.port

    def log(self) -> str:
        try:
            return self.config.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_turnserver(config: TurnConfig, *, user: str | None = None) -> Turnserver:
    """coturn with ``config.conf_file``, as ``user`` if given (as its unit runs it); returns
    once it answers on its port (an unauthenticated Binding gets 401: secure-stun)."""
    exe = require_coturn()
    argv = [exe, "-c", str(config.conf_file)]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    ts = Turnserver(config, proc)
    try:
        _wait_ready(ts)
    except BaseException:
        ts.stop()  # whatever went wrong, no server outlives its test
        raise
    return ts


def _wait_ready(ts: Turnserver) -> None:
    proc = ts.process
    deadline = time.monotonic() + 15
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while True:
            assert proc.poll() is None, f"turnserver exited ({proc.returncode}):\n{ts.log()}"
            assert time.monotonic() < deadline, f"turnserver does not answer:\n{ts.log()}"
            probe = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
            s.sendto(bytes(probe), ts.address)
            try:
                answer = stun.parse_message(s.recv(2048))
            except TimeoutError:
                continue
            assert answer.message_class is stun.Class.ERROR
            assert answer.attributes["ERROR-CODE"][0] == 401, answer
            break
    assert "Bad configuration format" not in ts.log() and "CONFIG ERROR" not in ts.log()


@pytest.fixture
def turnserver(tmp_path: Path) -> Iterator[Turnserver]:
    """The rendered configuration on loopback: the relay is 127.0.0.1, the one certified edge
    127.0.0.2; 127.0.0.3 is a host no certificate names."""
    c = config(tmp_path, port=udp_port(), relay_ports=relay_range())
    turn.write_secret(c.secret_file, turn.new_secret())
    c.state_dir.mkdir(mode=0o700)
    text = turn.render(
        c,
        secret=turn.load_secret(c.secret_file),
        peers=[EdgePeer("plant-a", ("127.0.0.2",))],
        allow_loopback_peers=True,
    )
    c.conf_file.write_text(text)
    c.conf_file.chmod(0o600)
    ts = start_turnserver(c)
    try:
        yield ts
    finally:
        ts.stop()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _secret(ts: Turnserver) -> str:
    return turn.load_secret(ts.config.secret_file)


def _client(ts: Turnserver, cred: turn.Credential) -> TurnClient:
    return TurnClient(ts.address, cred.username, cred.password)


def _peer(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(3)
    return s


@pytest.mark.slow
def test_a_fresh_credential_allocates_and_reaches_a_certified_edge(turnserver: Turnserver) -> None:
    cred = turn.issue(_secret(turnserver), "leg-1.plant-a", now=_now(), ttl=dt.timedelta(minutes=5))
    client, edge = _client(turnserver, cred), _peer("127.0.0.2")
    try:
        host, port = client.allocate()
        lo, hi = turnserver.config.relay_ports
        assert host == "127.0.0.1" and lo <= port <= hi
        client.permit("127.0.0.2")
        edge_addr = edge.getsockname()
        client.send(edge_addr, b"srtp from plant b")
        data, source = edge.recvfrom(2048)
        assert (data, source) == (b"srtp from plant b", (host, port))
        edge.sendto(b"srtp from plant a", source)
        assert client.data() == (edge_addr, b"srtp from plant a")
    finally:
        client.close()
        edge.close()
    assert _secret(turnserver) not in turnserver.log()


@pytest.mark.slow
def test_expired_wrong_and_missing_credentials_are_refused(turnserver: Turnserver) -> None:
    """C3: no allocation without a live credential minted from the relay's secret."""
    secret = _secret(turnserver)
    expired = turn.issue(
        secret, "leg-2", now=_now() - dt.timedelta(hours=2), ttl=dt.timedelta(hours=1)
    )
    live = turn.issue(secret, "leg-2", now=_now(), ttl=dt.timedelta(hours=1))
    forged = turn.issue(turn.new_secret(), "leg-2", now=_now(), ttl=dt.timedelta(hours=1))
    assert forged.username == live.username
    for cred in (expired, forged):
        client = _client(turnserver, cred)
        try:
            with pytest.raises(TurnError) as refused:
                client.allocate()
            assert refused.value.code == 401
        finally:
            client.close()
    # Without any credential: the unauthenticated request is answered 401, nothing else.
    client = _client(turnserver, live)
    try:
        msg = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
        msg.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
        client.sock.sendto(bytes(msg), turnserver.address)
        answer = client._receive(msg.transaction_id)
        assert answer.message_class is stun.Class.ERROR
        assert (
            answer.attributes["ERROR-CODE"][0] == 401
            and "XOR-RELAYED-ADDRESS" not in answer.attributes
        )
        # ... and the live credential, on the same socket, is accepted.
        assert client.allocate()[0] == "127.0.0.1"
    finally:
        client.close()


@pytest.mark.slow
def test_a_peer_no_certificate_names_is_refused_and_nothing_flows(turnserver: Turnserver) -> None:
    """C3: an allocation can reach the certified edge, never another address."""
    cred = turn.issue(_secret(turnserver), "leg-3", now=_now(), ttl=dt.timedelta(minutes=5))
    client, edge, outsider = _client(turnserver, cred), _peer("127.0.0.2"), _peer("127.0.0.3")
    outsider.settimeout(1.0)
    try:
        client.allocate()
        with pytest.raises(TurnError) as refused:
            client.permit("127.0.0.3")
        assert refused.value.code == 403
        client.permit("127.0.0.2")
        client.send(outsider.getsockname(), b"to anyone")
        client.send(edge.getsockname(), b"to the edge")
        assert edge.recvfrom(2048)[0] == b"to the edge"  # sent after, arrived: the path works
        with pytest.raises(TimeoutError):
            outsider.recvfrom(2048)
    finally:
        for s in (client, edge, outsider):
            s.close()
    assert "A peer IP 127.0.0.3 denied" in turnserver.log()


@pytest.mark.slow
def test_both_ends_of_a_leg_relay_through_the_relay(turnserver: Turnserver) -> None:
    """A bridge leg is relay-only at both ends: each end's peer is the other's relayed
    address on the relay itself, which the configuration allows."""
    secret = _secret(turnserver)
    a = _client(turnserver, turn.issue(secret, "leg-4.plant-a", now=_now()))
    b = _client(turnserver, turn.issue(secret, "leg-4.plant-b", now=_now()))
    try:
        relayed_a, relayed_b = a.allocate(), b.allocate()
        a.permit(relayed_b[0])
        b.permit(relayed_a[0])
        a.send(relayed_b, b"rtp a->b")
        assert b.data() == (relayed_a, b"rtp a->b")
        b.send(relayed_a, b"rtp b->a")
        assert a.data() == (relayed_b, b"rtp b->a")
    finally:
        a.close()
        b.close()


# --- what the installer writes (installer/turn.py) -------------------------------------------


def test_installed_turn_addresses_follow_the_install_options(tmp_path: Path) -> None:
    from installer.roleconfig import NodeSettings
    from installer.turn import listen_addresses

    def settings(listen: str) -> NodeSettings:
        return NodeSettings(Role.RELAY, "dmz", tmp_path / "etc", tmp_path / "var", listen, None)

    wild = settings("0.0.0.0:2222")
    assert listen_addresses(wild, ["10.1.0.1", "10.2.0.1"], ["10.9.0.1"]) == (
        ("10.1.0.1", "10.2.0.1"),
        "--turn-listen",
    )
    assert listen_addresses(wild, [], ["10.9.0.1"]) == (("10.9.0.1",), "the relay's --ip addresses")
    assert listen_addresses(settings("10.3.0.1:2222"), [], []) == (
        ("10.3.0.1",),
        "the SSH listen address 10.3.0.1",
    )
    assert listen_addresses(wild, [], []) == (("127.0.0.1",), "no address given")
    assert listen_addresses(settings("[::]:2222"), [], []) == (("127.0.0.1",), "no address given")


def test_turn_commands_refuse_a_host_that_is_not_a_relay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from installer import cli
    from installer.layout import Installation, Paths

    paths = Paths(tmp_path / "opt")
    paths.prefix.mkdir()
    Installation(
        Role.EDGE, "plant-a", tmp_path / "edge.toml", tmp_path, tmp_path, "zastava", "py", False
    ).save(paths)
    for command in (["config"], ["credential", "--leg", "x"]):
        assert cli.main(["turn", *command, "--prefix", str(paths.prefix)]) == 1
        err = capsys.readouterr().err
        assert err == (
            "zastava: error: this host runs the edge role; TURN runs on the relay host only\n"
        )
