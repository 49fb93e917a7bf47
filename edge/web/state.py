"""Everything a running web app holds: configuration, the auth service, the database, the hub.

Theory of operation
-------------------
:meth:`WebState.open` migrates ``edge.db`` (every component, :func:`edge.db.open_database`),
loads the TOTP sealing key from the node directory and builds the one
:class:`~edge.auth.service.AuthService`. The app reaches it through
:func:`edge.web.api.state_of`; handlers get it in their :class:`~edge.web.api.Call`.

Nothing blocking runs on the event loop: SQLite and the auth service run in worker threads
(:meth:`run`, :class:`~edge.web.workers.Workers`: a few threads that each take every call
waiting at once), each thread with its own connection to the web layer's tables
(:class:`~edge.db.ThreadConnections`). WAL checkpoints run in a thread of their own
(:class:`~edge.web.checkpoint.Checkpointer`). Argon2 work goes through :meth:`hashing`, which lets
at most ``hash_concurrency`` hashes run at once (64 MiB each) and at most ``login_queue``
requests wait for a slot; the next is refused with 429 at once instead of queueing memory
and latency without bound.

The chat (:class:`~edge.chat.ChatService`, its own connection under its own lock) is opened
here too, with the ``[chat]`` limits, and so are the live parts that use it: chat push
(:mod:`edge.web.chat_push`) and presence (:mod:`edge.web.presence_live`), started and
stopped with the serving loop (:meth:`start_live`, :meth:`stop_live`).

Time is :attr:`clock` (injected; tests move it), randomness the ``rand`` given to the auth
and chat services.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from edge.auth.passwords import PRODUCTION, HashParameters
from edge.auth.results import AuthConfig
from edge.auth.sealing import SecretSealer
from edge.auth.service import AuthService
from edge.auth.sessions import SessionPolicy
from edge.auth.store import AuthStore, to_ms
from edge.chat import ChatLimits, ChatService, TypingIndicators
from edge.config import EdgeConfig, WebSettings
from edge.db import ThreadConnections, open_database
from edge.web import audit
from edge.web.chat_push import ChatPush
from edge.web.chat_views import DisplayNames
from edge.web.checkpoint import Checkpointer
from edge.web.directory import DirectoryIndex
from edge.web.errors import ApiError
from edge.web.hub import Hub
from edge.web.metrics import Metrics
from edge.web.posting import PostBatcher
from edge.web.presence_live import LivePresence
from edge.web.workers import Workers
from pki.node import NodeCredentials

if TYPE_CHECKING:
    from edge.signalling import Link

T = TypeVar("T")

SEALER_KEY_FILE = "auth.key"


class FederationLink(Protocol):
    """What the web layer uses of the running federation (``edge.federation``)."""

    def wake(self) -> None: ...

    def status(self) -> dict[str, object]: ...

    def signal_link(self) -> Link | None:
        """The standing signalling channel to the relay (calls between plants)."""
        ...

    def credentials(self) -> NodeCredentials:
        """The node's credentials with the trust store in force now (CRLs adopted)."""
        ...


def auth_config(config: EdgeConfig, hashing: HashParameters = PRODUCTION) -> AuthConfig:
    web = config.web
    return AuthConfig(
        site=config.site,
        issuer=web.issuer or f"Zastava {config.site}",
        hashing=hashing,
        sessions=SessionPolicy(
            idle=dt.timedelta(minutes=web.session_idle_minutes),
            absolute=dt.timedelta(hours=web.session_absolute_hours),
        ),
    )


def chat_limits(config: EdgeConfig) -> ChatLimits:
    c = config.chat
    return ChatLimits(
        text_bytes=c.text_bytes,
        attachment_bytes=c.attachment_bytes,
        pending_uploads_per_user=c.pending_uploads,
    )


def open_chat(config: EdgeConfig, rand: Callable[[int], bytes]) -> ChatService:
    """The chat service over ``edge.db``; attachments under ``data_dir/attachments``."""
    return ChatService.open(
        config.db,
        site=config.site,
        attachments_dir=config.data_dir / "attachments",
        limits=chat_limits(config),
        rand=rand,
        typing=TypingIndicators(dt.timedelta(seconds=config.chat.typing_seconds)),
        durable=config.chat.durable_commits,
        checkpoint=False,  # the web state's Checkpointer does it, off the requests' path
    )


@dataclass(eq=False)
class WebState:
    config: EdgeConfig
    auth: AuthService
    sealer: SecretSealer
    db: ThreadConnections
    clock: Callable[[], dt.datetime]
    versions: dict[str, int]
    hub: Hub
    chat: ChatService
    metrics: Metrics = field(default_factory=Metrics)
    federation: FederationLink | None = None
    directory: DirectoryIndex = field(default_factory=DirectoryIndex)
    names: DisplayNames = field(default_factory=DisplayNames)
    main_port: int | None = None  # the main listener's bound port (the configured one may be 0)
    workers: Workers = field(default_factory=Workers)
    push: ChatPush = field(init=False)
    posts: PostBatcher = field(init=False)
    presence: LivePresence = field(init=False)
    checkpointer: Checkpointer = field(init=False)
    _slots: asyncio.Semaphore | None = None
    _pending: int = 0

    def __post_init__(self) -> None:
        self.checkpointer = Checkpointer(self.config.db)
        self.push = ChatPush(self)
        self.posts = PostBatcher(self)
        self.presence = LivePresence(self, dt.timedelta(minutes=self.config.chat.away_minutes))
        self.presence.attach()

    @classmethod
    def open(
        cls,
        config: EdgeConfig,
        *,
        clock: Callable[[], dt.datetime],
        rand: Callable[[int], bytes] = secrets.token_bytes,
        hashing: HashParameters = PRODUCTION,
    ) -> WebState:
        versions = open_database(config.db)
        sealer = SecretSealer.load_or_create(config.node_dir / SEALER_KEY_FILE, rand)
        store = AuthStore.open(config.db, sealer)
        auth = AuthService(store, auth_config(config, hashing), rand)
        try:
            chat = open_chat(config, rand)
        except BaseException:
            store.close()
            raise
        return cls(
            config,
            auth,
            sealer,
            ThreadConnections(config.db),
            clock,
            versions,
            Hub(config.web.ws_queue),
            chat,
        )

    def close(self) -> None:
        self.workers.close()
        self.checkpointer.stop()
        self.db.close()
        self.auth.store.close()
        self.chat.close()

    def wake_federation(self) -> None:
        """Something was queued for the core (``edge.outbound``): let the federation send it."""
        if self.federation is not None:
            self.federation.wake()

    @property
    def settings(self) -> WebSettings:
        return self.config.web

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start serving on ``loop``: the hub lives there, the hashing slots belong to it."""
        self.hub.bind(loop)
        self._slots = asyncio.Semaphore(self.settings.hash_concurrency)
        self._pending = 0

    def start_live(self) -> None:
        """On the serving loop: presence's writer and timers, the checkpoint thread."""
        self.presence.start()
        self.checkpointer.start()

    async def stop_live(self) -> None:
        """On the serving loop, when it stops: timers off, waiting presence changes written."""
        self.push.stop()
        await self.presence.stop()
        await asyncio.to_thread(self.checkpointer.stop)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread (:class:`~edge.web.workers.Workers`)."""
        return await self.workers.run(fn, *args, **kwargs)

    async def hashing(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like :meth:`run`, for calls that hash a password: bounded concurrency and queue."""
        if self._slots is None:
            self.bind(asyncio.get_running_loop())
        assert self._slots is not None
        if self._pending >= self.settings.hash_concurrency + self.settings.login_queue:
            raise ApiError(
                429, "too many logins at once; try again in a moment", {"Retry-After": "1"}
            )
        self._pending += 1
        self.metrics.hash_waiting.inc()
        waiting = True
        try:
            async with self._slots:
                self.metrics.hash_waiting.dec()
                waiting = False
                return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        finally:
            self._pending -= 1
            if waiting:
                self.metrics.hash_waiting.dec()

    def now_ms(self) -> int:
        return to_ms(self.clock())

    def audit(self, entry: audit.Entry, *, wake: bool = False) -> None:
        """Write an audit row (blocking: call it in a worker thread)."""
        audit.record(self.db.get(), entry, self.now_ms())
        if wake and self.federation is not None:
            self.federation.wake()

    def maintain(self) -> int:
        """Expired sessions, forgotten throttle counters, old audit rows, expired uploads and
        unreferenced attachment bytes (blocking)."""
        now = self.clock()
        cutoff = now - dt.timedelta(days=self.settings.audit_days)
        removed = self.auth.prune(now) + audit.prune(self.db.get(), to_ms(cutoff))
        chat = self.chat.prune(now=now)
        return removed + chat.expired_uploads + chat.removed_blobs + chat.removed_partial_files
