"""Benchmark: chat messages accepted by one edge while it fans them out to WebSocket clients.

    .venv/bin/python bench/chat_fanout.py [--clients 500] [--group-size 10]
        [--rate 2000 | --rate 200,400,2000] [--seconds 10] [--warmup 3] [--connections 32]
        [--log-level info] [--durable] [--only edge|bare] [--dir DIR]

Target (the issue): at least 2,000 chat messages per second accepted on one edge while it
fans out to 500 connected WebSocket clients, p99 delivery latency under 200 ms.

Scenario. ``--clients`` users of plant-a, each with one open WebSocket (``/api/ws`` over TLS,
a live session cookie, this edge's Origin), are split into groups (``POST /api/chat/groups``
conversations) of ``--group-size``: every user is in exactly one group, so with 500 clients
and groups of 10 there are 50 groups. The load generator posts ``--rate`` messages per second
in total (open loop: message *n* is due at ``n / rate``), each to a group chosen round-robin,
by a random member of it, through ``POST /api/chat/conversations/{id}/messages`` over HTTPS
keep-alive connections (``--connections`` of them, each sending its next due message when
its previous answer arrived). Every member's WebSocket — the author's too — receives the
``message`` frame: ``rate × group-size`` deliveries per second (20,000/s at the defaults).
Latency is per delivery: from just before the POST's bytes are written to the moment its
frame is parsed at the recipient, on one clock (the generator's). "Accepted" counts the
POSTs sent inside the measured window and answered 200 inside it; a generator that falls
behind its schedule (the server saturated) does not send the backlog, so the accepted rate
is what the server sustained. Several rates (``--rate 250,500,2000``) are measured one after
the other on the same server and WebSockets. Before the first, the generator waits for the
presence frames of the connection storm to drain (every connection is a ``presence`` frame
to every open page: n²/2 frames).

Processes. The edge is the real thing, ``zastava edge serve`` (Hypercorn, TLS with the node's
certificate, the whole app: session gate, CSRF, ``ChatService`` on SQLite, the hub), pinned
to CPU 0. The load generator is another process pinned to CPU 1 (asyncio; HTTP/1.1 written
by hand over ``ssl``; WebSockets with wsproto). Accounts, sessions, the directory and the
groups are made beforehand through the domain services (no Argon2 in the measurement).

Anchor. The same load against a bare Quart app on the same Hypercorn and TLS setup (``--only
bare``): ``POST /post/<group>`` publishes the JSON message to the group's members' in-memory
queues, ``/ws`` sends them; no session, no database, no JSON schema. It shows what the
framework itself costs at this fan-out, so the edge's figures can be read against it.

Prints, for each server: messages accepted per second, deliveries per second, delivery
latency percentiles, POST latency, how late the generator was against its schedule, and both
processes' CPU use over the window (the server at ~100% of its core means it was saturated),
and the server's CPU time per accepted message — the figure least disturbed by other load on
the machine. uvloop on the bare app changed nothing measurable (46% against 49% of a core at
the same load): the cost is Python in the framework, not the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
SITE = "plant-a"
PASSWORD = "bench password, not a secret"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(*cpus: int) -> None:
    have = os.cpu_count() or 1
    if hasattr(os, "sched_setaffinity") and all(c < have for c in cpus):
        os.sched_setaffinity(0, set(cpus))


SERVER_CPUS: tuple[int, ...] = (0,)  # --server-cpus


# Setup (the main process): node, accounts with live sessions, directory, groups


@dataclass
class Spec:
    """What the load generator needs (written as JSON for its process)."""

    mode: str  # "edge" or "bare"
    port: int
    server_pid: int
    ca_pem: str
    users: list[dict[str, str]]  # login, token, csrf
    groups: list[dict[str, Any]]  # id, members
    rates: list[float]
    seconds: float
    warmup: float
    connections: int
    via: str = "ws"  # how messages are posted: "ws" (a post frame) or "http" (POST)
    seed: int = 7


def make_node(tmp: Path) -> tuple[Path, str]:
    from cryptography.hazmat.primitives.serialization import Encoding

    from pki.ca import CaPaths, IssuingCA, init_ca
    from pki.keyfile import KdfCost
    from pki.names import NodeName, Role
    from pki.node import create_request, import_bundle
    from pki.trust import fingerprint

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    paths = CaPaths.of(tmp / "ca")
    passphrase = b"bench passphrase"
    cost = KdfCost(time_cost=1, memory_kib=8 * 1024)
    init_ca(
        paths,
        organization="Bench Plant",
        root_passphrase=passphrase,
        issuing_passphrase=passphrase,
        now=now,
        cost=cost,
    )
    ca = IssuingCA.open(paths, passphrase)
    name = NodeName(Role.EDGE, SITE)
    node = tmp / "node"
    request = create_request(node, name, dns_names=("localhost",))
    bundle = ca.sign_request(request, expect=name, now=now)
    import_bundle(node, bundle, now=now, root_fingerprint=fingerprint(ca.root))
    return node, ca.root.public_bytes(Encoding.PEM).decode()


def make_users(
    tmp: Path, node: Path, clients: int, group_size: int, durable: bool, log_level: str
) -> tuple[Path, list[dict[str, str]], list[dict[str, Any]]]:
    from edge.auth import totp
    from edge.auth.passwords import TEST_PARAMETERS
    from edge.auth.sealing import SecretSealer
    from edge.auth.service import AuthService
    from edge.auth.sessions import csrf_token
    from edge.auth.store import AccountRole, AuthStore
    from edge.chat import ChatService
    from edge.config import EdgeConfig
    from edge.db import open_database
    from edge.web.state import SEALER_KEY_FILE, auth_config
    from sync.directory import Payload, PayloadKind, apply_snapshot
    from sync.directory.records import Record, Site, User

    toml = tmp / "edge.toml"
    toml.write_text(
        f'[edge]\nsite = "{SITE}"\ndata_dir = "data"\nnode_dir = "{node}"\n'
        f'listen = "127.0.0.1:0"\n[web]\nlog_level = "{log_level}"\n'
        f"[chat]\ndurable_commits = {'true' if durable else 'false'}\n"
    )
    config = EdgeConfig.from_toml(toml)
    open_database(config.db)
    logins = [f"user{i:04d}" for i in range(clients)]
    records: list[Record] = [Site(SITE, "Bench plant")]
    records += [User(u, f"User {u[4:]}", SITE) for u in logins]
    payload = Payload.build(
        PayloadKind.SNAPSHOT, directory="b" * 32, site=SITE, version=1, base=None, records=records
    )
    conn = sqlite3.connect(config.db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    apply_snapshot(conn, payload, site=SITE)
    conn.execute("COMMIT")
    conn.close()

    sealer = SecretSealer.load_or_create(config.node_dir / SEALER_KEY_FILE, os.urandom)
    users = []
    now = dt.datetime.now(dt.UTC)
    with AuthStore.open(config.db, sealer) as store:
        store._conn.execute("PRAGMA synchronous=OFF")  # setup only: no fsync per account
        auth = AuthService(store, auth_config(config, TEST_PARAMETERS))
        for login in logins:
            auth.create_account(login, [AccountRole.USER], now, PASSWORD)
            first = auth.login(login, PASSWORD, "", "127.0.0.1", now)
            assert first.session is not None
            secret = auth.enroll_totp_start(first.session.token, now).secret
            code = totp.code_at(secret, totp.timecode(now))
            done = auth.enroll_totp_confirm(first.session.token, code, now)
            token = done.session.token
            users.append({"login": login, "token": token, "csrf": csrf_token(token)})
    groups = []
    with ChatService.open(
        config.db, site=SITE, attachments_dir=config.data_dir / "attachments", durable=False
    ) as chat:
        for i in range(0, clients, group_size):
            members = logins[i : i + group_size]
            if len(members) < 2:
                break
            conv = chat.create_group(members[0], f"group {i // group_size}", members[1:], now=now)
            groups.append({"id": conv.id, "members": members})
    return toml, users, groups


def start_edge(toml: Path, log: Path) -> tuple[subprocess.Popen[str], int]:
    exe = Path(sys.executable).parent / "zastava"
    proc = subprocess.Popen(
        [str(exe), "edge", "serve", "--config", str(toml)],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        preexec_fn=lambda: pin(*SERVER_CPUS),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if "serving https://" not in first:
        proc.kill()
        raise RuntimeError(f"the edge did not start: {first!r}; see {log}")
    return proc, int(first.rsplit(":", 1)[1])


def start_bare(
    node: Path, groups: list[dict[str, Any]], log: Path
) -> tuple[subprocess.Popen[str], int]:
    spec = node.parent / "bare-groups.json"
    spec.write_text(json.dumps(groups))
    proc = subprocess.Popen(
        [sys.executable, __file__, "_bare", "--node", str(node), "--groups", str(spec)],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        preexec_fn=lambda: pin(*SERVER_CPUS),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first.startswith("port "):
        proc.kill()
        raise RuntimeError(f"the bare app did not start: {first!r}; see {log}")
    return proc, int(first.split()[1])


def run_load(spec: Spec, path: Path) -> list[dict[str, Any]]:
    path.write_text(json.dumps(asdict(spec)))
    out = subprocess.run(
        [sys.executable, __file__, "_load", "--spec", str(path)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: pin(1),
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{out.stderr}")
    results: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


# The bare comparison app (its own process)


def bare_main(node_dir: Path, groups_file: Path) -> None:
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.config import Config, Sockets
    from quart import Quart, Response, request, websocket

    from edge.web.server import bind
    from pki.node import NodeCredentials

    groups = {g["id"]: g["members"] for g in json.loads(groups_file.read_text())}
    creds = NodeCredentials.load(node_dir)
    app = Quart("bare")
    queues: dict[str, asyncio.Queue[str]] = {}
    seq = [0]

    def publish(gid: str, text_in: str) -> str:
        seq[0] += 1
        message = {"id": f"m{seq[0]}", "conversation": gid, "text": text_in, "seq": seq[0]}
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        frame = f'{{"type":"message","conversation":{json.dumps(gid)},"message":{text}}}'
        for member in groups[gid]:
            q = queues.get(member)
            if q is not None:
                q.put_nowait(frame[:-1] + f',"topic":"user:{member}"}}')
        return text

    @app.post("/post/<gid>")
    async def post(gid: str) -> Response:
        body = await request.get_json()
        return Response(publish(gid, body["text"]), content_type="application/json")

    @app.websocket("/ws")
    async def ws() -> None:
        user = websocket.args["user"]
        q: asyncio.Queue[str] = asyncio.Queue(256)
        queues[user] = q
        await websocket.accept()

        async def receive() -> None:
            while True:
                frame = json.loads(await websocket.receive())
                text = publish(frame["conversation"], frame["text"])
                q.put_nowait(f'{{"type":"posted","id":{json.dumps(frame["id"])},"message":{text}}}')

        receiver = asyncio.ensure_future(receive())
        try:
            while True:
                await websocket.send(await q.get())
        finally:
            receiver.cancel()
            queues.pop(user, None)

    hc = Config()
    hc.certfile = str(creds.tls_cert_file)
    hc.keyfile = str(creds.tls_key_file)
    hc.accesslog = None
    sock = bind("127.0.0.1", 0)
    print(f"port {sock.getsockname()[1]}", flush=True)

    async def main() -> None:
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await worker_serve(
            ASGIWrapper(app), hc, sockets=Sockets([sock], [], []), shutdown_trigger=stopping.wait
        )

    asyncio.run(main())


# The load generator (its own process)


@dataclass
class Stats:
    sent: dict[int, float] = field(default_factory=dict)  # seq -> perf_counter before the POST
    due: dict[int, float] = field(default_factory=dict)
    expected: dict[int, int] = field(default_factory=dict)  # seq -> recipients
    answered: dict[int, float] = field(default_factory=dict)  # seq -> POST latency (s)
    answered_at: dict[int, float] = field(default_factory=dict)  # seq -> when answered
    failed: dict[int, str] = field(default_factory=dict)
    waiting: dict[int, asyncio.Future[None]] = field(default_factory=dict)  # ws posts
    latencies: dict[int, list[float]] = field(default_factory=dict)
    frames: int = 0
    other_frames: int = 0
    closed: int = 0


class Ws:
    """One WebSocket client: wsproto over an asyncio TLS stream; records message latencies."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer: list[str] = []

    async def open(
        self, port: int, ctx: ssl.SSLContext, target: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        import wsproto.events as ev
        from wsproto import ConnectionType, WSConnection

        self.ev = ev
        self.reader, self.writer = await asyncio.open_connection(
            "localhost", port, ssl=ctx, server_hostname="localhost"
        )
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.writer.write(
            self.conn.send(
                ev.Request(host=f"localhost:{port}", target=target, extra_headers=headers)
            )
        )
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise RuntimeError("WebSocket refused: connection closed")
            self.conn.receive_data(data)
            for event in self.conn.events():
                if isinstance(event, ev.AcceptConnection):
                    return
                if isinstance(event, ev.RejectConnection):
                    raise RuntimeError(f"WebSocket refused: {event.status_code}")

    def send(self, text: str) -> None:
        self.writer.write(self.conn.send(self.ev.TextMessage(text)))

    def answered(self, text: str, stats: Stats) -> None:
        """A ``posted`` or ``post_failed`` frame: the answer to this client's post."""
        frame = json.loads(text)
        seq = int(frame["id"])
        if frame["type"] == "posted":  # the author's delivery: it replaces its message frame
            stats.answered_at[seq] = time.perf_counter()
            stats.answered[seq] = stats.answered_at[seq] - stats.sent[seq]
            stats.frames += 1
            stats.latencies.setdefault(seq, []).append(stats.answered[seq])
        else:
            stats.failed[seq] = f"{frame.get('status')} {frame.get('error', '')[:200]!r}"
        waiter = stats.waiting.pop(seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self) -> None:
        ev = self.ev
        while True:
            data = await self.reader.read(262144)
            stats = self.stats  # the current window's
            if not data:
                stats.closed += 1
                return
            now = time.perf_counter()
            sent = stats.sent
            latencies = stats.latencies
            self.conn.receive_data(data)
            for event in self.conn.events():
                if isinstance(event, ev.TextMessage):
                    self.buffer.append(event.data)
                    if not event.message_finished:
                        continue
                    text = "".join(self.buffer)
                    self.buffer.clear()
                    if text.startswith('{"type":"post'):
                        self.answered(text, stats)
                        continue
                    i = text.find('"text":"m')
                    if not text.startswith('{"type":"message"') or i < 0:
                        stats.other_frames += 1
                        continue
                    j = text.find(".", i + 9)
                    seq = int(text[i + 9 : j])
                    stats.frames += 1
                    start = sent.get(seq)
                    if start is not None:
                        latencies.setdefault(seq, []).append(now - start)
                elif isinstance(event, ev.Ping):
                    self.writer.write(self.conn.send(event.response()))
                elif isinstance(event, ev.CloseConnection):
                    stats.closed += 1
                    return


async def post_loop(
    spec: Spec,
    rate: float,
    ctx: ssl.SSLContext,
    stats: Stats,
    schedule: Iterator[int],
    t0: float,
    stop_at: float,
    rng: random.Random,
    sockets: dict[str, Ws],
) -> None:
    """One sender: takes the next due message, posts it (over its own HTTPS connection, or as
    a ``post`` frame on the author's WebSocket) and waits for the answer before the next."""
    users = {u["login"]: u for u in spec.users}
    http = spec.via == "http"
    if http:
        reader, writer = await asyncio.open_connection(
            "localhost", spec.port, ssl=ctx, server_hostname="localhost"
        )
    host = f"localhost:{spec.port}"
    origin = f"https://{host}"
    try:
        for n in schedule:
            due = t0 + n / rate
            if due >= stop_at or time.perf_counter() >= stop_at:
                return  # behind schedule (saturated): the backlog is not sent
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            group = spec.groups[n % len(spec.groups)]
            login = rng.choice(group["members"])
            text = f"m{n}. load {n % 97}"
            stats.due[n] = due
            stats.expected[n] = len(group["members"])
            if not http:
                frame = {"type": "post", "id": str(n), "conversation": group["id"], "text": text}
                waiter = asyncio.get_running_loop().create_future()
                stats.waiting[n] = waiter
                stats.sent[n] = time.perf_counter()
                sockets[login].send(json.dumps(frame))
                await waiter
                continue
            author = users[login]
            body = json.dumps({"text": text}).encode()
            if spec.mode == "edge":
                path = f"/api/chat/conversations/{group['id']}/messages"
                auth = (
                    f"Cookie: __Host-zastava={author['token']}\r\n"
                    f"X-CSRF-Token: {author['csrf']}\r\n"
                )
            else:
                path = f"/post/{group['id']}"
                auth = ""
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n{auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            start = time.perf_counter()
            stats.sent[n] = start
            writer.write(head + body)
            header = await reader.readuntil(b"\r\n\r\n")
            status = int(header.split(b" ", 2)[1])
            length = 0
            for line in header.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            payload = await reader.readexactly(length)
            if status == 200:
                stats.answered_at[n] = time.perf_counter()
                stats.answered[n] = stats.answered_at[n] - start
            else:
                stats.failed[n] = f"{status} {payload[:200]!r}"
    finally:
        if http:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def measure(
    spec: Spec, rate: float, ctx: ssl.SSLContext, clients: dict[str, Ws], seed: int
) -> dict[str, Any]:
    """One window at ``rate``: warm-up, then ``spec.seconds`` measured."""
    stats = Stats()
    for c in clients.values():
        c.stats = stats
    rng = random.Random(seed)
    counter = iter(range(10**9))
    t0 = time.perf_counter() + 0.2
    measure_from = t0 + spec.warmup
    stop_at = measure_from + spec.seconds
    server_cpu0 = my_cpu0 = 0.0

    async def window() -> None:
        nonlocal server_cpu0, my_cpu0
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        server_cpu0, my_cpu0 = cpu_seconds(spec.server_pid), cpu_seconds(os.getpid())

    watcher = asyncio.ensure_future(window())
    await asyncio.gather(
        *(
            post_loop(
                spec, rate, ctx, stats, counter, t0, stop_at, random.Random(rng.random()), clients
            )
            for _ in range(spec.connections)
        )
    )
    await watcher
    ended = time.perf_counter()
    server_cpu = cpu_seconds(spec.server_pid) - server_cpu0
    my_cpu = cpu_seconds(os.getpid()) - my_cpu0
    window_seconds = ended - measure_from
    await asyncio.sleep(3.0)  # let the last deliveries arrive

    # Counted: messages sent inside the window; accepted: those answered 200 inside it.
    counted = [n for n, at in stats.sent.items() if measure_from <= at < stop_at]
    accepted = [n for n in counted if stats.answered_at.get(n, stop_at + 1) <= stop_at]
    lat = [x for n in accepted for x in stats.latencies.get(n, [])]
    expected = sum(stats.expected[n] for n in accepted)
    lag = [stats.sent[n] - stats.due[n] for n in counted]
    post_lat = [stats.answered[n] for n in accepted]
    return {
        "mode": spec.mode,
        "via": spec.via,
        "clients": len(clients),
        "groups": len(spec.groups),
        "group_size": len(spec.groups[0]["members"]),
        "target_rate": rate,
        "window_s": round(window_seconds, 2),
        "due": len(counted),
        "accepted": len(accepted),
        "accepted_per_s": round(len(accepted) / spec.seconds, 1),
        "server_cpu_ms_per_message": round(1000 * server_cpu / max(1, len(accepted)), 3),
        "failed": len([n for n in counted if n in stats.failed]),
        "failures": sorted(set(stats.failed.values()))[:3],
        "deliveries": len(lat),
        "deliveries_expected": expected,
        "deliveries_per_s": round(len(lat) / spec.seconds, 1),
        "latency_ms": {
            q: round(percentile(lat, p) * 1000, 1)
            for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))
        },
        "post_ms": {
            q: round(percentile(post_lat, p) * 1000, 1) for q, p in (("p50", 0.5), ("p99", 0.99))
        },
        "schedule_lag_ms_p99": round(percentile(lag, 0.99) * 1000, 1),
        "server_cpu": round(server_cpu / window_seconds, 2),
        "generator_cpu": round(my_cpu / window_seconds, 2),
        "closed_websockets": stats.closed,
        "other_frames": stats.other_frames,
    }


async def load_main(spec: Spec) -> list[dict[str, Any]]:
    pin(1)
    ctx = ssl.create_default_context(cadata=spec.ca_pem)
    stats = Stats()
    origin = f"https://localhost:{spec.port}"
    members = sorted({m for g in spec.groups for m in g["members"]})
    users = {u["login"]: u for u in spec.users}
    clients: list[Ws] = []

    async def connect(login: str) -> Ws:
        ws = Ws(stats)
        if spec.mode == "edge":
            cookie = f"__Host-zastava={users[login]['token']}".encode()
            await ws.open(
                spec.port, ctx, "/api/ws", [(b"cookie", cookie), (b"origin", origin.encode())]
            )
        else:
            await ws.open(spec.port, ctx, f"/ws?user={login}", [(b"origin", origin.encode())])
        return ws

    opened = time.perf_counter()
    for i in range(0, len(members), 25):
        clients += await asyncio.gather(*(connect(u) for u in members[i : i + 25]))
    connect_seconds = time.perf_counter() - opened
    readers = [asyncio.ensure_future(c.run()) for c in clients]
    # Every connection is a presence change pushed to every open page: n²/2 frames. Wait
    # until they have drained before measuring.
    settled = time.perf_counter()
    seen = -1
    while seen != stats.other_frames:
        seen = stats.other_frames
        await asyncio.sleep(1.0)
    setup = {
        "connect_seconds": round(connect_seconds, 2),
        "presence_frames": stats.other_frames,
        "settle_seconds": round(time.perf_counter() - settled - 1.0, 1),
    }
    results = []
    by_login = dict(zip(members, clients, strict=True))
    for i, rate in enumerate(spec.rates):
        results.append({**setup, **await measure(spec, rate, ctx, by_login, spec.seed + i)})
    for r in readers:
        r.cancel()
    for c in clients:
        c.writer.close()
    return results


# Reporting


def show(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    print(
        f"  {r['mode']:>4} via {r['via']}: {r['accepted_per_s']:7.0f} msg/s accepted of "
        f"{r['target_rate']:.0f} "
        f"({r['failed']} failed), {r['deliveries_per_s']:8.0f} deliveries/s "
        f"({r['deliveries']}/{r['deliveries_expected']})"
    )
    print(
        f"        delivery latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
        f"p99.9 {lat['p99.9']}  max {lat['max']}"
    )
    print(
        f"        post answered ms p50 {r['post_ms']['p50']} p99 {r['post_ms']['p99']}; lag "
        f"p99 {r['schedule_lag_ms_p99']} ms; CPU server {r['server_cpu']:.0%} generator "
        f"{r['generator_cpu']:.0%}; WebSockets closed {r['closed_websockets']}"
    )
    print(f"        server CPU per accepted message {r['server_cpu_ms_per_message']} ms")
    if r["failures"]:
        print(f"        failures: {r['failures']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        p = argparse.ArgumentParser()
        p.add_argument("_bare")
        p.add_argument("--node", type=Path, required=True)
        p.add_argument("--groups", type=Path, required=True)
        a = p.parse_args()
        bare_main(a.node, a.groups)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        spec = Spec(**json.loads(Path(sys.argv[3]).read_text()))
        print(json.dumps(asyncio.run(load_main(spec))), flush=True)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--group-size", type=int, default=10)
    p.add_argument(
        "--rate",
        default="2000",
        help="messages per second in total; a comma-separated list measures each in turn "
        "on the same server and WebSockets",
    )
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument(
        "--connections", type=int, default=32, help="senders, each waiting for its answer"
    )
    p.add_argument(
        "--via",
        default="ws",
        choices=("ws", "http"),
        help="post as a frame on the author's WebSocket (what the web client does) or as "
        "POST over HTTPS keep-alive connections",
    )
    p.add_argument(
        "--server-cpus",
        default="0",
        help="CPUs the server may run on (the generator is always on CPU 1): 0 = one core "
        "to itself; 0,1 = the whole machine, shared with the generator, as an edge would run",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--durable", action="store_true", help="[chat] durable_commits = true")
    p.add_argument("--only", choices=("edge", "bare"))
    p.add_argument("--dir", type=Path, help="keep the files here (default: a temporary dir)")
    args = p.parse_args()
    global SERVER_CPUS
    SERVER_CPUS = tuple(int(c) for c in args.server_cpus.split(","))

    with contextlib.ExitStack() as stack:
        if args.dir:
            tmp = args.dir
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chat-fanout-")))
        started = time.perf_counter()
        node, ca_pem = make_node(tmp)
        toml, users, groups = make_users(
            tmp, node, args.clients, args.group_size, args.durable, args.log_level
        )
        print(
            f"chat fan-out: {len(users)} users/WebSockets in {len(groups)} groups of "
            f"{args.group_size}, {args.rate} msg/s for {args.seconds:.0f} s "
            f"(+{args.warmup:.0f} s warm-up), {args.connections} senders posting over "
            f"{'their WebSockets' if args.via == 'ws' else 'HTTPS'}; "
            f"server on CPU {args.server_cpus}, generator on CPU 1; "
            f"setup {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        results = []
        for mode in ("edge", "bare"):
            if args.only and args.only != mode:
                continue
            log = tmp / f"{mode}-server.log"
            if mode == "edge":
                proc, port = start_edge(toml, log)
            else:
                proc, port = start_bare(node, groups, log)
            try:
                spec = Spec(
                    mode,
                    port,
                    proc.pid,
                    ca_pem,
                    users,
                    groups,
                    [float(r) for r in args.rate.split(",")],
                    args.seconds,
                    args.warmup,
                    args.connections,
                    args.via,
                )
                measured = run_load(spec, tmp / f"{mode}-spec.json")
            finally:
                stop(proc)
            print(
                f"  {mode}: connecting the WebSockets took {measured[0]['connect_seconds']} s, "
                f"their {measured[0]['presence_frames']} presence frames "
                f"{measured[0]['settle_seconds']} s more"
            )
            for result in measured:
                show(result)
            results += measured
        print(json.dumps(results))


if __name__ == "__main__":
    main()
