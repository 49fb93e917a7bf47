"""Janus (Debian ``janus`` 1.1.2, videoroom plugin) as the comparison SFU of ``bench/sfu.py``.

:class:`JanusProcess` writes a configuration folder of its own (nothing is read from
``/etc/janus``) and runs ``janus`` as a child process pinned to one CPU. Only two shared
objects are loaded: the folders Janus scans for plugins and transports hold one symlink
each (``libjanus_videoroom.so``, ``libjanus_http.so``); the event-handler and logger folders
are empty. The HTTP API listens on 127.0.0.1 only (admin API off). ICE: no STUN server, host
candidates gathered only on the address the aiortc clients use (``ice_enforce_list``): aioice
never offers 127.0.0.1, so the media goes over the host's own address, as it does for the
Python SFUs.

:class:`JanusClient` speaks the Janus HTTP API (``create`` → ``attach`` → plugin messages,
events by long-poll, which also keeps the sessions alive) and :class:`JanusServer` maps
the benchmark's signalling operations onto the videoroom (FIELD-NOTES "Janus"):

* ``join``: one session per participant, a publisher handle, ``{"request": "join",
  "ptype": "publisher"}``;
* ``publish``: ``{"request": "publish"}`` with the client's offer (``trickle: false``: every
  candidate is in the SDP), Janus's answer back;
* ``subscribe``: waits until the other publishers' PeerConnections are up (Janus refuses a
  subscription to a feed that has no media yet), then a second handle joins with
  ``"ptype": "subscriber", "streams": [{"feed": F}, ...]`` (one multistream subscription to
  all the others' audio and video, as the Python SFUs offer) and Janus's offer comes back;
* ``answer``: ``{"request": "start"}`` with the client's answer.

Bench tooling only: the HTTP client is the few lines of HTTP/1.0 this needs (no dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JANUS = "janus"
LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
ROOM_BASE = 1000  # videoroom ids are integers: bench room r is ROOM_BASE + r


def janus_binary() -> str:
    path = shutil.which(JANUS)
    if path is None:
        raise RuntimeError(
            "janus is not installed: apt-get install janus (scripts/bench-packages.txt)"
        )
    return path


def janus_version() -> str:
    out = subprocess.run([janus_binary(), "--version"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Janus version:"):
            return line.split("(")[-1].rstrip(")")
    return "unknown"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class JanusConfig:
    rooms: int
    publishers: int  # per room
    bitrate: int  # the room's REMB cap towards publishers
    ice_address: str  # the only address Janus gathers host candidates on
    event_loops: int = 0  # 0: Janus's default, one loop thread per handle
    debug_level: int = 3  # warnings and errors


def write_config(folder: Path, config: JanusConfig, port: int) -> Path:
    """The configuration folder: janus.jcfg, the HTTP transport, the videoroom's rooms."""
    for sub, libs in (
        ("plugins", ["plugins/libjanus_videoroom.so"]),
        ("transports", ["transports/libjanus_http.so"]),
        ("events", []),
        ("loggers", []),
    ):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for lib in libs:
            source = LIB / lib
            if not source.exists():
                raise RuntimeError(f"{source} is missing: is the Debian janus package installed?")
            (folder / sub / source.name).symlink_to(source)
    loops = f"\tevent_loops = {config.event_loops}\n" if config.event_loops else ""
    (folder / "janus.jcfg").write_text(
        "general: {\n"
        f'\tconfigs_folder = "{folder}"\n'
        f'\tplugins_folder = "{folder}/plugins"\n'
        f'\ttransports_folder = "{folder}/transports"\n'
        f'\tevents_folder = "{folder}/events"\n'
        f'\tloggers_folder = "{folder}/loggers"\n'
        f"\tdebug_level = {config.debug_level}\n"
        '\tserver_name = "zastava-bench"\n'
        "\tsession_timeout = 60\n"
        f"{loops}"
        "}\n"
        "certificates: {\n}\n"
        "media: {\n}\n"
        "nat: {\n"
        "\tnice_debug = false\n"
        "\tfull_trickle = false\n"
        "\tignore_mdns = true\n"
        f'\tice_enforce_list = "{config.ice_address}"\n'
        "}\n"
        "plugins: {\n}\n"
        "transports: {\n}\n"
        "loggers: {\n}\n"
        "events: {\n\tbroadcast = false\n}\n"
    )
    (folder / "janus.transport.http.jcfg").write_text(
        "general: {\n"
        '\tjson = "compact"\n'
        '\tbase_path = "/janus"\n'
        "\thttp = true\n"
        f"\tport = {port}\n"
        '\tip = "127.0.0.1"\n'
        "\thttps = false\n"
        "}\n"
        "admin: {\n\tadmin_http = false\n\tadmin_https = false\n}\n"
        "cors: {\n}\n"
        "certificates: {\n}\n"
    )
    rooms = "".join(
        f"room-{ROOM_BASE + r}: {{\n"
        f'\tdescription = "bench room {r}"\n'
        f"\tpublishers = {config.publishers}\n"
        f"\tbitrate = {config.bitrate}\n"
        "\tfir_freq = 0\n"
        '\taudiocodec = "opus"\n'
        '\tvideocodec = "vp8"\n'
        "\trecord = false\n"
        "}\n"
        for r in range(config.rooms)
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n" + rooms)
    return folder / "janus.jcfg"


def _pin_and_die_with_parent(cpu: int) -> None:
    """In the child before exec: pinned to ``cpu`` (threads inherit it), killed with us."""
    os.sched_setaffinity(0, {cpu})
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class JanusProcess:
    """``janus`` running on a generated configuration folder, pinned to ``cpu``."""

    def __init__(self, config: JanusConfig, cpu: int) -> None:
        self.config = config
        self.cpu = cpu
        self.port = free_tcp_port()
        self.folder = Path(tempfile.mkdtemp(prefix="zastava-janus-"))
        self.log = self.folder / "janus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, limit: float = 15.0) -> None:
        """Launch janus and wait until its HTTP API answers with the videoroom loaded."""
        self._launch()
        await self._ready(limit)

    def _launch(self) -> None:
        main = write_config(self.folder, self.config, self.port)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [janus_binary(), "-C", str(main), "-F", str(self.folder), "-o"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: _pin_and_die_with_parent(self.cpu),
            )

    async def _ready(self, limit: float) -> None:
        assert self.process is not None
        client = JanusClient(self.url)
        deadline = time.monotonic() + limit
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"janus exited with {self.process.returncode}: {self.tail()}")
            try:
                info = await client.get("/info", limit=1.0)
                if "janus.plugin.videoroom" in info.get("plugins", {}):
                    return
                raise RuntimeError(f"janus is up without the videoroom plugin: {self.tail()}")
            except (OSError, TimeoutError, ValueError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"janus did not answer within {limit} s: {self.tail()}"
                    ) from exc
                await asyncio.sleep(0.1)

    def tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class JanusError(RuntimeError):
    pass


_transactions = itertools.count(1)


class JanusClient:
    """JSON over HTTP/1.0 to Janus's HTTP transport (one connection per request)."""

    def __init__(self, url: str) -> None:
        host_port, _, base = url.removeprefix("http://").partition("/")
        host, _, port = host_port.partition(":")
        self.host, self.port, self.base = host, int(port), "/" + base

    async def _request(self, method: str, path: str, body: Any, limit: float) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {self.base}{path} HTTP/1.0\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), limit
        )
        try:
            writer.write(head.encode() + data)
            raw = await asyncio.wait_for(reader.read(), limit)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        header, _, payload = raw.partition(b"\r\n\r\n")
        status = header.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise ValueError(f"janus HTTP {status.decode(errors='replace')}: {payload[:200]!r}")
        return json.loads(payload)

    async def get(self, path: str, limit: float = 10.0) -> Any:
        return await self._request("GET", path, None, limit)

    async def post(self, path: str, body: dict[str, Any], limit: float = 10.0) -> Any:
        body = {"transaction": f"t{next(_transactions)}", **body}
        reply = await self._request("POST", path, body, limit)
        if reply.get("janus") == "error":
            error = reply.get("error", {})
            raise JanusError(f"{body.get('janus')}: {error.get('code')} {error.get('reason')}")
        return reply


@dataclass
class Handle:
    id: int
    up: asyncio.Event = field(default_factory=asyncio.Event)  # "webrtcup"
    hangup: str | None = None


class JanusSession:
    """One session (one participant): its handles, plugin events by transaction, long-poll."""

    def __init__(self, client: JanusClient) -> None:
        self.client = client
        self.id = 0
        self.handles: dict[int, Handle] = {}
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.poll_task: asyncio.Task[None] | None = None
        self.closing = False

    async def create(self) -> None:
        reply = await self.client.post("", {"janus": "create"})
        self.id = reply["data"]["id"]
        self.poll_task = asyncio.ensure_future(self._poll())

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> Handle:
        reply = await self.client.post(f"/{self.id}", {"janus": "attach", "plugin": plugin})
        handle = Handle(reply["data"]["id"])
        self.handles[handle.id] = handle
        return handle

    async def message(
        self, handle: Handle, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A plugin request; returns its asynchronous event (``plugindata.data`` + ``jsep``)."""
        transaction = f"t{next(_transactions)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[transaction] = future
        request: dict[str, Any] = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        try:
            reply = await self.client.post(f"/{self.id}/{handle.id}", request)
            if reply.get("janus") == "success":  # a synchronous plugin answer
                event = {"plugindata": reply.get("plugindata", {})}
            else:
                event = await asyncio.wait_for(future, 20)
        finally:
            self.waiting.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data.get('error_code')} {data['error']}")
        return {"data": data, "jsep": event.get("jsep")}

    async def _poll(self) -> None:
        while True:
            try:
                events = await self.client.get(f"/{self.id}?maxev=10", limit=40)
            except (OSError, TimeoutError, ValueError):
                if self.closing:  # destroyed: the long-poll is over
                    return
                await asyncio.sleep(0.5)
                continue
            if isinstance(events, dict) and events.get("janus") == "error":
                return  # the session is gone (destroyed or timed out)
            for event in events if isinstance(events, list) else [events]:
                self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        handle = self.handles.get(event.get("sender", 0))
        if kind == "webrtcup" and handle is not None:
            handle.up.set()
        elif kind == "hangup" and handle is not None:
            handle.hangup = str(event.get("reason"))
        future = self.waiting.get(str(event.get("transaction")))
        if kind == "event" and future is not None and not future.done():
            future.set_result(event)

    async def destroy(self) -> None:
        self.closing = True
        with contextlib.suppress(JanusError, OSError, TimeoutError, ValueError):
            await self.client.post(f"/{self.id}", {"janus": "destroy"}, limit=5)
        if self.poll_task is not None:
            self.poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.poll_task


@dataclass
class Participant:
    session: JanusSession
    publisher: Handle
    feed: int = 0
    subscriber: Handle | None = None


class JanusServer:
    """The benchmark's signalling operations (join/publish/subscribe/answer) on Janus."""

    def __init__(self, url: str) -> None:
        self.client = JanusClient(url)
        self.rooms: dict[str, dict[str, Participant]] = {}

    @staticmethod
    def room_id(room: str) -> int:
        return ROOM_BASE + int(room.rsplit("-", 1)[1])

    async def join(self, room: str, pid: str) -> None:
        session = JanusSession(self.client)
        await session.create()
        handle = await session.attach()
        joined = await session.message(
            handle,
            {"request": "join", "ptype": "publisher", "room": self.room_id(room), "display": pid},
        )
        participant = Participant(session, handle, feed=int(joined["data"]["id"]))
        self.rooms.setdefault(room, {})[pid] = participant

    async def publish(self, room: str, pid: str, sdp: str) -> str:
        me = self.rooms[room][pid]
        reply = await me.session.message(
            me.publisher, {"request": "publish"}, {"type": "offer", "sdp": sdp, "trickle": False}
        )
        if reply["jsep"] is None:
            raise JanusError(f"publish: no answer from Janus ({reply['data']})")
        return str(reply["jsep"]["sdp"])

    async def subscribe(self, room: str, pid: str) -> str:
        me = self.rooms[room][pid]
        others = [p for name, p in self.rooms[room].items() if name != pid]
        limit = 20.0
        try:
            await asyncio.wait_for(asyncio.gather(*(p.publisher.up.wait() for p in others)), limit)
        except TimeoutError:
            down = [name for name, p in self.rooms[room].items() if not p.publisher.up.is_set()]
            raise JanusError(f"publishers without media after {limit} s: {down}") from None
        me.subscriber = await me.session.attach()
        reply = await me.session.message(
            me.subscriber,
            {
                "request": "join",
                "ptype": "subscriber",
                "room": self.room_id(room),
                "streams": [{"feed": p.feed} for p in others],
            },
        )
        if reply["jsep"] is None:
            raise JanusError(f"subscribe: no offer from Janus ({reply['data']})")
        return str(reply["jsep"]["sdp"])

    async def answer(self, room: str, pid: str, sdp: str) -> None:
        me = self.rooms[room][pid]
        assert me.subscriber is not None
        await me.session.message(
            me.subscriber, {"request": "start"}, {"type": "answer", "sdp": sdp, "trickle": False}
        )

    def hangups(self) -> list[str]:
        return [
            f"{room}/{pid}: {handle.hangup}"
            for room, participants in self.rooms.items()
            for pid, p in participants.items()
            for handle in (p.publisher, p.subscriber)
            if handle is not None and handle.hangup
        ]

    async def close(self) -> None:
        await asyncio.gather(
            *(p.session.destroy() for ps in self.rooms.values() for p in ps.values())
        )
