"""A small WebDriver BiDi client for Firefox: what the browser tests need, nothing more.

Theory of operation
-------------------
Firefox speaks WebDriver BiDi (https://w3c.github.io/webdriver-bidi/) natively: started with
``--remote-debugging-port 0`` it prints ``WebDriver BiDi listening on ws://127.0.0.1:PORT`` on
stderr and accepts a WebSocket at ``/session``. No geckodriver, no patched browser build, no
download: Debian's ``firefox-esr`` as installed.

``Firefox`` runs the browser on a profile made for the run (``write_profile``: ``user.js``
with ``QUIET_PREFS``, so that nothing in the browser calls home, and, for a test server,
``cert_override.txt`` naming *its* certificate for *its* host and port: any other certificate
is still refused, unlike ``acceptInsecureCerts``, which accepts every one), with
``MOZ_DISABLE_NONLOCAL_CONNECTIONS=1`` (Firefox's own test switch: no connection to an address
off this machine). ``ProxyTrap`` is a proxy for every host but localhost that forwards
nothing and records what was asked of it: the proof that the browser itself, not only the
page, tried to reach nothing else.

``Session`` is one WebSocket to it, over a plain socket with wsproto (sans-IO) doing the
framing. A reader thread parses what arrives: a command's answer (``{"id": …}``) completes
the caller's future; an event goes to a queue that a second thread hands to the subscribers,
so a subscriber may itself send commands (answering a prompt, say) without blocking the
reader. ``command`` raises ``BiDiError`` with the protocol's error code and message.

``Tab`` is one top-level browsing context, in a user context of its own when asked (its own
cookies, as a second person on another machine). Scripts run in a sandbox realm (the page's
DOM through Firefox's X-ray wrappers; the page's own globals unseen and untouched); input is
real: pointer and key actions go through Firefox's event dispatch as a person's would, files
are set on an ``<input type=file>`` from paths on disk. ``Tab.wait`` polls a predicate
*inside* the page until it holds (or the timeout passes) in one command, the way
Playwright's ``expect`` does, so tests never sleep.

Trusted: the browser process we started. The BiDi port is Firefox's, on 127.0.0.1; the only
socket listening here is ``ProxyTrap``'s, on 127.0.0.1, which answers nothing.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

JSON = Any  # what json.loads gives

# Special keys of the WebDriver key table (https://w3c.github.io/webdriver/#keyboard-actions)
ENTER = "\ue007"
ESCAPE = "\ue00c"
BACKSPACE = "\ue003"

# Nothing in the browser calls home: no updates, telemetry, studies, remote settings, safe
# browsing, captive-portal or connectivity checks, DNS over HTTPS, prefetching, push, pocket,
# sponsored content, first-run pages; any host but localhost goes to a proxy that does not
# exist (port 9 on loopback; ``ProxyTrap`` for one that records), so a request that slipped
# through fails instead of leaving the machine.
QUIET_PREFS: Mapping[str, bool | int | str] = {
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "app.update.auto": False,
    "app.update.enabled": False,
    "app.update.disabledForTesting": True,
    "app.update.checkInstallTime": False,
    "browser.aboutwelcome.enabled": False,
    "browser.discovery.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.newtabpage.activity-stream.showSponsored": False,
    "browser.newtabpage.activity-stream.showSponsoredTopSites": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.ping-centre.telemetry": False,
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.search.geoip.url": "",
    "browser.search.suggest.enabled": False,
    "browser.search.update": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.tabs.warnOnClose": False,
    "browser.topsites.contile.enabled": False,
    "browser.translations.enable": False,
    "browser.urlbar.suggest.searches": False,
    "browser.urlbar.speculativeConnect.enabled": False,
    "browser.ml.enable": False,
    "captivedetect.canonicalURL": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.policy.firstRunURL": "",
    "datareporting.usage.uploadEnabled": False,
    "dom.push.connection.enabled": False,
    "dom.push.serverURL": "",
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.update.enabled": False,
    "extensions.blocklist.enabled": False,
    "geo.provider.network.url": "",
    "identity.fxaccounts.enabled": False,
    "media.eme.enabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-manager.chromium-update-url": "",
    "media.gmp-provider.enabled": False,
    "media.gmp-widevinecdm.enabled": False,
    "media.gmp-widevinecdm.allow-chromium-update": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.predictor.enabled": False,
    "network.prefetch-next": False,
    "network.trr.mode": 5,  # DNS over HTTPS off, by choice
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": 9,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": 9,
    "network.proxy.socks_remote_dns": True,
    "network.proxy.no_proxies_on": "",  # localhost is never proxied (allow_hijacking_localhost)
    "network.proxy.allow_hijacking_localhost": False,
    "privacy.trackingprotection.enabled": False,
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "security.OCSP.enabled": 0,
    # remote settings: honoured on a release build only with MOZ_DISABLE_NONLOCAL_CONNECTIONS=1
    # in the environment (``Firefox.start`` sets it), and skipped for exactly this URL
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "services.sync.enabled": False,
    "signon.rememberSignons": False,
    "startup.homepage_welcome_url": "",
    "startup.homepage_welcome_url.additional": "",
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.coverage.endpoint.base": "",
    "toolkit.startup.max_resumed_crashes": -1,
    # automation: no input ignored as "too soon after the element appeared", no throttling of
    # windows that are not in front (each person's tab is a window of its own), no slow-script
    # dialog, focus kept per window as if each were the active one
    "dom.input_events.security.minNumTicks": 0,
    "dom.input_events.security.minTimeElapsedInMS": 0,
    "dom.min_background_timeout_value": 4,
    "dom.timeout.enable_budget_timer_throttling": False,
    "dom.max_script_run_time": 0,
    "focusmanager.testmode": True,
}


class BiDiError(Exception):
    """An error answer: ``error`` is the protocol's code (``no such element``, …)."""

    def __init__(self, method: str, error: str, message: str) -> None:
        super().__init__(f"{method}: {error}: {message}")
        self.error = error


@dataclass(frozen=True)
class Node:
    """A DOM node the browser handed out: ``shared_id`` names it in later commands."""

    shared_id: str


@dataclass(frozen=True)
class Event:
    method: str
    params: JSON


def cert_override_line(host: str, port: int, certificate: x509.Certificate) -> str:
    """One line of a profile's ``cert_override.txt``: this certificate, and only it, is
    accepted for ``host:port`` (Firefox's "add exception", written ahead of time). Format:
    ``host:port:originAttributes TAB OID of SHA-256 TAB fingerprint TAB (no bits) TAB dbKey``
    (``nsCertOverrideService::Read``); the fingerprint is what is compared, the dbKey (module
    and slot 0, serial and issuer with their lengths, base64) only names the certificate."""
    fingerprint = ":".join(
        f"{b:02X}" for b in hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    )
    serial = certificate.serial_number
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")  # DER INTEGER content
    issuer = certificate.issuer.public_bytes()
    lengths = len(serial_bytes).to_bytes(4, "big") + len(issuer).to_bytes(4, "big")
    db_key = base64.b64encode(bytes(8) + lengths + serial_bytes + issuer).decode()
    return f"{host}:{port}:\tOID.2.16.840.1.101.3.4.2.1\t{fingerprint}\t\t{db_key}\n"


def write_profile(
    directory: Path,
    prefs: Mapping[str, bool | int | str] = QUIET_PREFS,
    *,
    cert_overrides: Iterable[str] = (),
) -> Path:
    """A fresh profile: ``user.js`` with ``prefs`` and ``cert_override.txt`` with the lines
    of ``cert_override_line``."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items()]
    (directory / "user.js").write_text("".join(lines), encoding="utf-8")
    overrides = "".join(cert_overrides)
    if overrides:
        (directory / "cert_override.txt").write_text(overrides, encoding="ascii")
    return directory


class ProxyTrap:
    """A proxy that forwards nothing, for every host but localhost (``prefs``): whatever the
    browser tries to reach elsewhere is recorded in ``caught`` (the request's first line,
    ``CONNECT host:443 HTTP/1.1`` or ``GET http://host/… HTTP/1.1``) and refused. A test
    asserts ``caught`` is empty to know that nothing left the machine, page or browser."""

    def __init__(self) -> None:
        self.caught: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, name="proxy-trap", daemon=True)
        self._thread.start()

    @property
    def prefs(self) -> dict[str, bool | int | str]:
        port = self._listener.getsockname()[1]
        return {"network.proxy.http_port": port, "network.proxy.ssl_port": port}

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(5)
                head = b""
                try:
                    while b"\r\n" not in head and len(head) < 4096:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                except OSError:
                    pass
                self.caught.append(head.split(b"\r\n")[0].decode("latin-1") or "(nothing sent)")

    def __enter__(self) -> ProxyTrap:
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self._thread.join(5)


class Firefox:
    """The browser process, headless, on ``profile``; ``url`` is its BiDi endpoint once
    ``start`` returns. ``stop`` ends it (after ``browser.close`` if a session asked first)."""

    LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")

    def __init__(self, executable: Path, profile: Path) -> None:
        self.executable = executable
        self.profile = profile
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.stderr: list[str] = []  # kept for the failure message
        self._listening = threading.Event()
        self._drainer: threading.Thread | None = None

    def start(self, timeout: float = 120.0) -> None:
        # 120 s: a cold start reads libxul (~150 MB) from disk; measured 18 s on a quiet VM
        # with a cold page cache, and a fresh CI machine's first start (the other test worker
        # busy) printed nothing at all in 30 s. A warm start takes under a second.
        # MOZ_DISABLE_NONLOCAL_CONNECTIONS: Firefox's own test switch; no connection to an
        # address not on this machine (a proxy on loopback still is), remote settings off
        env = dict(
            os.environ,
            MOZ_CRASHREPORTER_DISABLE="1",
            MOZ_HEADLESS="1",
            MOZ_DISABLE_NONLOCAL_CONNECTIONS="1",
        )
        self.process = subprocess.Popen(
            [
                str(self.executable),
                "--headless",
                "--no-remote",
                "--remote-debugging-port",
                "0",
                "--profile",
                str(self.profile),
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._drainer = threading.Thread(target=self._drain, name="firefox-stderr", daemon=True)
        self._drainer.start()
        began = time.monotonic()
        if not self._listening.wait(timeout) or not self.url:
            self.stop(0)
            waited = time.monotonic() - began
            raise RuntimeError(
                f"Firefox did not start its BiDi server in {waited:.0f} s: {self.stderr[-20:]}"
            )

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr.append(line)
            found = self.LISTENING.search(line)
            if found and not self._listening.is_set():
                self.url = found.group(1)
                self._listening.set()
        self.process.stderr.close()
        self._listening.set()  # the process ended: ``start`` stops waiting

    def stop(self, timeout: float = 10.0) -> None:
        """Wait ``timeout`` for the process to end (after ``browser.close``), then terminate
        it, then kill it."""
        if self.process is None:
            return
        for end, wait in ((None, timeout), (self.process.terminate, 5), (self.process.kill, 5)):
            if end is not None:
                end()
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._drainer is not None:
            self._drainer.join(5)


class Session:
    """A BiDi session over one WebSocket: ``command`` and event subscribers."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        assert parts.scheme == "ws" and parts.hostname and parts.port, url
        self.timeout = timeout
        self._sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._lock = threading.Lock()  # wsproto's state and the socket's writes
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, Future[JSON]]] = {}
        self._handlers: dict[str, list[Callable[[Event], None]]] = {}
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._closed = False
        self.handler_errors: list[BaseException] = []  # raised by subscribers; see Browser
        self._handshake(f"{parts.hostname}:{parts.port}", parts.path or "/session")
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="bidi-reader", daemon=True)
        self._reader.start()
        self._dispatcher = threading.Thread(target=self._dispatch, name="bidi-events", daemon=True)
        self._dispatcher.start()

    def _handshake(self, host: str, target: str) -> None:
        self._sock.sendall(self._ws.send(Request(host=host, target=target)))
        while True:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("the BiDi server closed the connection in the handshake")
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    raise ConnectionError(f"the BiDi server refused the WebSocket: {event}")

    def _send_frame(self, text: str) -> None:
        with self._lock:
            self._sock.sendall(self._ws.send(TextMessage(data=text)))

    def _read(self) -> None:
        parts: list[str] = []
        try:
            while True:
                data = self._sock.recv(1 << 16)
                with self._lock:
                    self._ws.receive_data(data or None)
                    events = list(self._ws.events())
                for event in events:
                    if isinstance(event, TextMessage):
                        parts.append(event.data)
                        if event.message_finished:
                            self._received(json.loads("".join(parts)))
                            parts = []
                    elif isinstance(event, Ping):
                        with self._lock:
                            self._sock.sendall(self._ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        return
                if not data:
                    return
        except OSError:
            return
        finally:
            self._closed = True
            for method, future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"{method}: the connection closed"))
            self._events.put(None)

    def _received(self, message: JSON) -> None:
        if message.get("type") == "event":
            self._events.put(Event(message["method"], message["params"]))
            return
        pending = self._pending.pop(message.get("id"), None)
        if pending is None:
            return  # an error without an id: a message we sent could not be parsed
        method, future = pending
        if message.get("type") == "success":
            future.set_result(message["result"])
        else:
            error = BiDiError(method, message.get("error", "?"), message.get("message", ""))
            future.set_exception(error)

    def _dispatch(self) -> None:
        while (event := self._events.get()) is not None:
            for handler in self._handlers.get(event.method, []):
                try:
                    handler(event)
                except Exception as e:  # kept for Browser.__exit__; the next events still go
                    self.handler_errors.append(e)

    def command(
        self, method: str, params: JSON | None = None, timeout: float | None = None
    ) -> JSON:
        """Send a command and wait for its result; ``BiDiError`` for an error answer."""
        if self._closed:
            raise ConnectionError(f"{method}: the connection is closed")
        id_ = next(self._ids)
        future: Future[JSON] = Future()
        self._pending[id_] = (method, future)
        self._send_frame(json.dumps({"id": id_, "method": method, "params": params or {}}))
        return future.result(timeout if timeout is not None else self.timeout)

    def on(self, events: Iterable[str], handler: Callable[[Event], None]) -> None:
        """Call ``handler`` (on the event thread) for each of ``events``, and subscribe to
        them for every browsing context."""
        names = list(events)
        for name in names:
            self._handlers.setdefault(name, []).append(handler)
        self.command("session.subscribe", {"events": names})

    def close(self) -> None:
        with self._lock:
            try:
                self._sock.sendall(self._ws.send(CloseConnection(code=1000)))
            except (OSError, LocalProtocolError):  # closed by the browser already
                pass
        self._sock.close()
        self._reader.join(5)
        self._dispatcher.join(5)


class Browser:
    """Firefox and a BiDi session on it: ``with Browser(executable, profile) as browser``."""

    def __init__(self, executable: Path, profile: Path, capabilities: JSON | None = None) -> None:
        self.firefox = Firefox(executable, profile)
        self.capabilities = capabilities or {}
        self.session: Session | None = None

    def __enter__(self) -> Browser:
        self.firefox.start()
        try:
            self.session = Session(self.firefox.url + "/session")
            self.session.command(
                "session.new", {"capabilities": {"alwaysMatch": self.capabilities}}
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        errors = self.bidi.handler_errors
        self.close()
        if errors and kind is None:
            raise RuntimeError(f"an event subscriber failed: {errors!r}") from errors[0]

    def close(self) -> None:
        closing = False
        if self.session is not None:
            try:
                self.session.command("browser.close", timeout=10)
                closing = True
            except (BiDiError, ConnectionError, TimeoutError):
                pass
            self.session.close()
            self.session = None
        self.firefox.stop(10 if closing else 0)

    @property
    def bidi(self) -> Session:
        assert self.session is not None, "the browser is not running"
        return self.session

    def new_tab(self, *, own_cookies: bool = False) -> Tab:
        """A new window; with ``own_cookies``, in a user context of its own (storage and
        cookies apart from every other tab's, as another person's browser would be)."""
        params: JSON = {"type": "window"}
        if own_cookies:
            params["userContext"] = self.bidi.command("browser.createUserContext")["userContext"]
        context = self.bidi.command("browsingContext.create", params)["context"]
        return Tab(self.bidi, context)


def serialize(value: object) -> JSON:
    """A Python value as a BiDi ``LocalValue``."""
    match value:
        case None:
            return {"type": "null"}
        case bool():
            return {"type": "boolean", "value": value}
        case int() | float():
            return {"type": "number", "value": value}
        case str():
            return {"type": "string", "value": value}
        case Node(shared_id):
            return {"sharedId": shared_id}
        case list() | tuple():
            return {"type": "array", "value": [serialize(v) for v in value]}
        case dict():
            return {"type": "object", "value": [[str(k), serialize(v)] for k, v in value.items()]}
    raise TypeError(f"cannot pass {type(value).__name__} to a script")


def deserialize(remote: JSON) -> Any:
    """A BiDi ``RemoteValue`` as Python: primitives, lists, dicts, ``Node``; others raw."""
    kind = remote.get("type")
    if kind in ("undefined", "null"):
        return None
    if kind in ("string", "boolean"):
        return remote["value"]
    if kind == "number":
        value = remote["value"]
        return float(value.replace("Infinity", "inf")) if isinstance(value, str) else value
    if kind == "bigint":
        return int(remote["value"])
    if kind in ("array", "set", "nodelist", "htmlcollection"):
        return [deserialize(v) for v in remote.get("value", [])]
    if kind in ("object", "map"):
        return {
            (k if isinstance(k, str) else deserialize(k)): deserialize(v)
            for k, v in remote.get("value", [])
        }
    if kind == "node":
        return Node(remote["sharedId"])
    return remote


class ScriptError(Exception):
    """A script threw: the exception's text and where."""


# Defined for every script a ``Tab`` runs: ``find(path)``, the elements a *path* names. A path
# is CSS selectors joined by " >> ", each applied within the elements the steps before it
# found; the steps "first" and "last" keep only the first or the last of those:
# ``#messages .message >> last >> .text`` is the text of the last message.
FIND = """const find = (path) => {
    let found = [document];
    for (const step of path.split(" >> ")) {
        if (step === "first") found = found.slice(0, 1);
        else if (step === "last") found = found.slice(-1);
        else found = found.flatMap((el) => Array.from(el.querySelectorAll(step)));
    }
    return found;
};"""


class Tab:
    """One top-level browsing context. Elements are named by ``find`` paths (see ``FIND``)."""

    SANDBOX = "bidi-tests"  # the realm test scripts run in, beside the page's

    def __init__(self, session: Session, context: str) -> None:
        self.session = session
        self.context = context

    def navigate(self, url: str) -> None:
        self.session.command(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    def call(self, function: str, *args: object, sandbox: bool = True) -> Any:
        """Run the JavaScript ``function`` with ``args``; its (awaited) result as Python."""
        target: JSON = {"context": self.context}
        if sandbox:
            target["sandbox"] = self.SANDBOX
        result = self.session.command(
            "script.callFunction",
            {
                "functionDeclaration": f"function (...args) {{ {FIND}\n"
                f"return ({function}).apply(this, args); }}",
                "arguments": [serialize(a) for a in args],
                "awaitPromise": True,
                "target": target,
                "resultOwnership": "none",
            },
            timeout=self.session.timeout + 60,
        )
        if result["type"] == "exception":
            details = result["exceptionDetails"]
            raise ScriptError(f"{details.get('text')} (line {details.get('lineNumber')})")
        return deserialize(result["result"])

    def wait(self, predicate: str, *args: object, timeout: float = 10.0, what: str = "") -> Any:
        """Poll the JavaScript ``predicate(...args)`` in the page until it returns something
        truthy, and return that; ``TimeoutError`` with the last value after ``timeout``."""
        poll = f"""async (args, timeout) => {{
            const predicate = {predicate};
            const end = performance.now() + timeout;
            for (;;) {{
                const value = await predicate(...args);
                if (value) return {{ok: true, value}};
                if (performance.now() > end) return {{ok: false, value}};
                await new Promise((resolve) => setTimeout(resolve, 20));
            }}
        }}"""
        outcome = self.call(poll, list(args), timeout * 1000)
        if not outcome["ok"]:
            raise TimeoutError(
                f"{what or predicate} {list(args)!r}: not within {timeout} s "
                f"(last: {outcome['value']!r})"
            )
        return outcome["value"]

    def element(self, path: str, *, timeout: float = 10.0) -> Node:
        """The first element ``path`` names, once it is there and visible, scrolled into view."""
        node = self.wait(
            """(path) => {
                const el = find(path)[0];
                if (!el || !el.checkVisibility()) return null;
                el.scrollIntoView({block: "nearest", inline: "nearest"});
                return el;
            }""",
            path,
            timeout=timeout,
            what="a visible element",
        )
        assert isinstance(node, Node)
        return node

    # what ``input.performActions`` answers when its element went away or moved (the page
    # re-rendered it) between finding it and clicking it: nothing was clicked, find it again
    GONE = frozenset({"move target out of bounds", "no such node", "stale element reference"})

    def click(self, path: str, *, timeout: float = 10.0) -> None:
        """A real mouse click in the middle of the element."""
        end = time.monotonic() + timeout
        while True:
            node = self.element(path, timeout=timeout)
            origin = {"type": "element", "element": {"sharedId": node.shared_id}}
            try:
                self.perform(
                    {
                        "type": "pointer",
                        "id": "mouse",
                        "parameters": {"pointerType": "mouse"},
                        "actions": [
                            {"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
                            {"type": "pointerDown", "button": 0},
                            {"type": "pointerUp", "button": 0},
                        ],
                    }
                )
                return
            except BiDiError as e:
                if e.error not in self.GONE or time.monotonic() > end:
                    raise

    def type(self, text: str) -> None:
        """Key presses for each character of ``text`` (or a special key), into whatever has
        the focus."""
        actions: list[JSON] = []
        for char in text:
            actions += [{"type": "keyDown", "value": char}, {"type": "keyUp", "value": char}]
        self.perform({"type": "key", "id": "keyboard", "actions": actions})

    def fill(self, path: str, text: str) -> None:
        """Focus the field, select what it holds, and type ``text`` over it (or erase it)."""
        self.wait(
            """(path) => {
                const el = find(path)[0];
                if (!el || !el.checkVisibility()) return false;
                el.focus();
                el.select();
                return document.activeElement === el;
            }""",
            path,
            what="a visible field that takes the focus",
        )
        self.type(text or BACKSPACE)

    def perform(self, *sources: JSON) -> None:
        self.session.command(
            "input.performActions", {"context": self.context, "actions": list(sources)}
        )

    def set_files(self, path: str, files: Iterable[Path]) -> None:
        """Choose files on an ``<input type=file>`` as the file picker would (it may be
        hidden, as a styled one usually is)."""
        node = self.wait("(path) => find(path)[0]", path, what="a file input")
        self.session.command(
            "input.setFiles",
            {
                "context": self.context,
                "element": {"sharedId": node.shared_id},
                "files": [str(f) for f in files],
            },
        )


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``check`` on this side (events recorded from the browser) until it is truthy."""
    end = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > end:
            raise TimeoutError(f"{what or check}: not within {timeout} s")
        time.sleep(0.02)
    return value
