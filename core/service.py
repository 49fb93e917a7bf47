"""``zastava core serve``: the core's federation running against the relay.

Theory of operation. One :class:`~sync.nodesync.NodeSync` thread owns the core's sync state
(``core-sync.db``: stream state, the global event store, the forwarding queue) and opens the
master directory read-mostly: each pass receives hellos, events and cross-site chat, then
seals what each edge lacks of the directory, the forwarding queue and the CRL. Admins change
the directory from other processes (``zastava core user ...``); a watcher thread notices a new
directory version or CRL file within a quarter of a second (a single-row read, a ``stat``)
and wakes the pass, so a
change reaches the relay without waiting for the interval.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from core.config import ServeConfig
from core.directory import Directory
from core.federation import CoreFederation
from pki.node import NodeCredentials
from sync.agent import SyncReport
from sync.bundle.store import connect
from sync.nodesync import NodeSync
from sync.transport import RelayClient

log = logging.getLogger("zastava.core")

WATCH_INTERVAL = 0.25


class CoreService:
    def __init__(self, config: ServeConfig, *, clock: Callable[[], dt.datetime]) -> None:
        self.config = config
        self.clock = clock
        self.creds = NodeCredentials.load(config.node_dir)
        self.federation: CoreFederation | None = None
        self.sync = NodeSync(
            self.creds, config.relay, self._make_pass, clock=clock, name="core-sync"
        )
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._crl_cache: tuple[tuple[int, int], bytes] | None = None

    def start(self) -> None:
        if not self.config.db.exists():
            raise ValueError(
                f"{self.config.db}: no directory database; create it with "
                "'zastava core site add' / 'zastava core import' first"
            )
        self.sync.start()
        self._watcher = threading.Thread(target=self._watch, name="core-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self.sync.stop()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def _read_crl(self) -> bytes | None:
        """The CA's current CRL as DER, or None when none is configured or readable yet.

        Read again only when the file's stamp changed (every pass asks)."""
        if self.config.crl is None:
            return None
        stamp = self._crl_stamp()
        if stamp is None:
            log.warning("%s: no CRL file yet; edges keep the one they have", self.config.crl)
            return None
        if self._crl_cache is None or self._crl_cache[0] != stamp:
            pem = self.config.crl.read_bytes()
            self._crl_cache = (stamp, x509.load_pem_x509_crl(pem).public_bytes(Encoding.DER))
        return self._crl_cache[1]

    def _crl_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.config.crl.stat() if self.config.crl else None
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def _make_pass(self, link: RelayClient) -> Callable[[], SyncReport]:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        directory = Directory.open(self.config.db, clock=self.clock, create=False)
        federation = CoreFederation(
            directory,
            connect(self.config.sync_db),
            self.creds,
            link,
            clock=self.clock,
            relay_log_key=self.sync.relay_log_key,
            crl=self._read_crl,
        )
        self.federation = federation
        return federation.sync_once

    def _watch(self) -> None:
        directory = Directory.open(self.config.db, clock=self.clock, create=False)
        try:
            seen = (directory.version, self._crl_stamp())
            while not self._stop.wait(WATCH_INTERVAL):
                now = (directory.version, self._crl_stamp())
                if now != seen:
                    seen = now
                    self.sync.wake()
        finally:
            directory.close()
