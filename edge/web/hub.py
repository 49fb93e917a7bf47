"""The push hub: which open WebSockets listen to which topics, and how to reach or end them.

Theory of operation
-------------------
Every open WebSocket is a :class:`WsClient` with a bounded outgoing queue. It is subscribed
to its user's topic (:func:`user_topic`) and the plant-wide :data:`SITE_TOPIC` when it opens,
and to other topics (a conversation's, :func:`conversation_topic`) when it asks and a topic
guard allows it. :meth:`Hub.publish` serializes a message once and queues it for each
subscriber (:meth:`Hub.publish_encoded`: once for several topics, the topic spliced in); a
client whose queue is full is too slow to keep up and is closed (code 1013)
rather than allowed to hold memory or delay the others.

The hub lives on the event loop: its methods must be called there. Other threads (the
federation's, SQLite workers) use :meth:`Hub.call_threadsafe`, which hands the call to the
loop with ``call_soon_threadsafe``.

Hooks for other components, all called on the loop:

- ``on_connect`` / ``on_disconnect``: ``(client)`` when a WebSocket opens or ends: presence
  (``edge.presence``) counts a user's connections here;
- ``topic_guards``: ``(login, topic) -> bool | None`` for a topic a client asks to join; the
  first guard that answers decides, and a topic nobody answers for is refused (chat answers
  for its conversations: only members, THREATS W4);
- ``frame_handlers``: ``{type: handler(client, fields)}`` for client frames beyond the
  built-in ``ping``, ``subscribe`` and ``unsubscribe``.

Ending access (THREATS A7, A5): :meth:`Hub.close_user` closes every WebSocket of a login (a
user disabled here or by core's directory, a TOTP reset), :meth:`Hub.close_session` those of
one session (logout, a revoked session); the WebSocket handler also re-checks its session
every ``ws_revalidate_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from edge.web.frames import CLOSE_GOING_AWAY, CLOSE_SESSION_ENDED, CLOSE_TRY_LATER

log = logging.getLogger("edge.web.hub")

SITE_TOPIC: Final = "site"


def user_topic(login: str) -> str:
    return f"user:{login}"


def conversation_topic(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Outgoing = str | Close


@dataclass(eq=False)
class WsClient:
    """One open WebSocket: whose it is and what waits to be sent to it."""

    login: str
    session_id: str
    queue: asyncio.Queue[Outgoing]
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    topics: set[str] = field(default_factory=set)
    closing: Close | None = None

    def push(self, text: str) -> bool:
        """Queue ``text``; a full queue closes the client instead (it cannot keep up)."""
        if self.closing is not None:
            return False
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.close(CLOSE_TRY_LATER, "too slow: messages were piling up")
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code`` (the close jumps the queue)."""
        if self.closing is not None:
            return
        self.closing = Close(code, reason)
        while not self.queue.empty():  # what was queued will not be read now
            self.queue.get_nowait()
        self.queue.put_nowait(self.closing)


TopicGuard = Callable[[str, str], bool | None]
FrameHandler = Callable[[WsClient, dict[str, Any]], Awaitable[None]]
ClientHook = Callable[[WsClient], None]


class Hub:
    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._topics: dict[str, set[WsClient]] = {}
        self._by_login: dict[str, set[WsClient]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_connect: list[ClientHook] = []
        self.on_disconnect: list[ClientHook] = []
        self.topic_guards: list[TopicGuard] = []
        self.frame_handlers: dict[str, FrameHandler] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the hub lives on (the server's); set at start-up."""
        self._loop = loop

    def call_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the hub's loop, from any thread; dropped if not serving."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile: nothing is open to reach
            pass

    # Connections

    def attach(self, login: str, session_id: str) -> WsClient:
        """A new client, subscribed to its user's topic and the site's; announce it with
        :meth:`opened` once it has been greeted."""
        client = WsClient(login, session_id, asyncio.Queue(self.queue_size))
        self._by_login.setdefault(login, set()).add(client)
        self.subscribe(client, user_topic(login))
        self.subscribe(client, SITE_TOPIC)
        return client

    def opened(self, client: WsClient) -> None:
        """Run the ``on_connect`` hooks (after the client's ``hello`` is queued, so that what
        they publish — its own presence — reaches it after the greeting)."""
        for hook in self.on_connect:
            self._run_hook(hook, client, "connect")

    def detach(self, client: WsClient) -> None:
        for topic in list(client.topics):
            self.unsubscribe(client, topic)
        clients = self._by_login.get(client.login)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._by_login[client.login]
        for hook in self.on_disconnect:
            self._run_hook(hook, client, "disconnect")

    @staticmethod
    def _run_hook(hook: ClientHook, client: WsClient, what: str) -> None:
        try:
            hook(client)
        except Exception:
            log.exception("a WebSocket %s hook failed login=%s", what, client.login)

    def clients(self, login: str | None = None) -> list[WsClient]:
        if login is not None:
            return list(self._by_login.get(login, ()))
        return [c for cs in self._by_login.values() for c in cs]

    def connected(self) -> int:
        return sum(len(cs) for cs in self._by_login.values())

    # Topics

    def allowed(self, login: str, topic: str) -> bool:
        if topic in (user_topic(login), SITE_TOPIC):
            return True
        for guard in self.topic_guards:
            answer = guard(login, topic)
            if answer is not None:
                return answer
        return False

    def subscribe(self, client: WsClient, topic: str) -> None:
        self._topics.setdefault(topic, set()).add(client)
        client.topics.add(topic)

    def unsubscribe(self, client: WsClient, topic: str) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is not None:
            subscribers.discard(client)
            if not subscribers:
                del self._topics[topic]
        client.topics.discard(topic)

    def publish(self, topic: str, message: dict[str, Any]) -> int:
        """Send ``message`` (a JSON object) to every subscriber of ``topic``; returns how many."""
        subscribers = self._topics.get(topic)
        if not subscribers:
            return 0
        text = json.dumps({**message, "topic": topic}, ensure_ascii=False, separators=(",", ":"))
        return sum(client.push(text) for client in list(subscribers))

    def publish_many(self, topics: Iterable[str], message: dict[str, Any]) -> int:
        """Send ``message`` to the subscribers of each of ``topics``, encoded once."""
        return self.publish_encoded(
            topics, json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        )

    def publish_encoded(
        self, topics: Iterable[str], body: str, *, skip: WsClient | None = None
    ) -> int:
        """Send ``body`` (the text of a non-empty JSON object) to the subscribers of each of
        ``topics`` but ``skip``, each copy with its ``"topic"`` added: one encoding per
        message, not per recipient (a chat message reaches every member's ``user:`` topic)."""
        if not body.startswith("{") or not body.endswith("}") or body == "{}":
            raise ValueError("publish_encoded needs the text of a non-empty JSON object")
        head = body[:-1]
        sent = 0
        for topic in topics:
            subscribers = self._topics.get(topic)
            if not subscribers:
                continue
            text = f'{head},"topic":{json.dumps(topic, ensure_ascii=False)}}}'
            for client in list(subscribers):
                if client is not skip:
                    sent += client.push(text)
        return sent

    # Ending access

    def close_user(self, login: str, reason: str, *, keep_session_id: str | None = None) -> int:
        """Close every WebSocket of ``login`` (but those of ``keep_session_id``)."""
        closing = [c for c in self.clients(login) if c.session_id != keep_session_id]
        for client in closing:
            client.close(CLOSE_SESSION_ENDED, reason)
        if closing:
            log.info("websockets closed login=%s count=%d reason=%s", login, len(closing), reason)
        return len(closing)

    def close_session(self, login: str, session_id: str, reason: str) -> int:
        closing = [c for c in self.clients(login) if c.session_id == session_id]
        for client in closing:
            client.close(CLOSE_SESSION_ENDED, reason)
        return len(closing)

    def close_all(self, reason: str) -> None:
        for client in self.clients():
            client.close(CLOSE_GOING_AWAY, reason)
