"""What the federation's thread calls in the web layer when bundles from the core arrive.

Theory of operation
-------------------
:meth:`Inbound.on_disabled` runs in the federation thread, inside the transaction that applies
the directory change, on the federation's own connection to ``edge.db`` (THREATS A7). It
disables each named user's local account and ends their sessions *on that connection*, by
running the auth layer's own :meth:`~edge.auth.accounts.AccountAdmin.disable_user` over an
:class:`~edge.auth.store.AuthStore` wrapped around it (the store joins the open transaction),
and writes an audit row in the same transaction: the change, the disabled account and the
ended sessions commit together or not at all. Users without an account at this edge (the
directory is company-wide) are skipped.

Then their open WebSockets close, on the event loop (``call_soon_threadsafe``): at once, and
once more after the bundle commits (:meth:`Inbound.after_pass`), because a page that
reconnected in between still saw the committed, enabled state. A re-enabled user in the
directory is *not* re-enabled here: an administrator of this edge enables the account.

``after_pass`` also tells open pages that the directory changed (``directory.changed`` on
the site topic), so they can refresh a search.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from edge.auth.accounts import AccountAdmin
from edge.auth.results import UnknownAccountError
from edge.auth.store import AuthStore, to_ms
from edge.directory import DIRECTORY_STREAM
from edge.web import audit
from edge.web.audit import Action, Entry
from edge.web.hub import SITE_TOPIC
from edge.web.state import WebState

log = logging.getLogger("edge.web.inbound")

CLOSE_REASON = "account disabled in the directory"


class Inbound:
    def __init__(self, state: WebState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._closing: set[str] = set()

    def on_disabled(self, conn: sqlite3.Connection, logins: list[str]) -> None:
        """Federation thread, inside the bundle's transaction on ``conn``."""
        state = self.state
        now = state.clock()
        admin = AccountAdmin(AuthStore(conn, state.sealer), state.auth.config)
        disabled = []
        for login in logins:
            try:
                ended = admin.disable_user(login, now)
            except UnknownAccountError:
                continue
            audit.record(
                conn,
                Entry(
                    Action.DISABLED_BY_DIRECTORY,
                    "ok",
                    login=login,
                    actor="core",
                    reason=f"sessions ended: {ended}",
                ),
                to_ms(now),
            )
            disabled.append(login)
        with self._lock:
            self._closing.update(disabled)
        for login in disabled:
            state.hub.call_threadsafe(state.hub.close_user, login, CLOSE_REASON)

    def after_pass(self, streams: frozenset[str]) -> None:
        """Federation thread, after the pass committed."""
        with self._lock:
            closing, self._closing = self._closing, set()
        hub = self.state.hub
        for login in sorted(closing):
            hub.call_threadsafe(hub.close_user, login, CLOSE_REASON)
        if DIRECTORY_STREAM in streams:
            hub.call_threadsafe(hub.publish, SITE_TOPIC, {"type": "directory.changed"})
