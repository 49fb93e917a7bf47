"""Chat posts with a group commit: the hot path of a busy plant.

Theory of operation
-------------------
Every post — ``POST /api/chat/conversations/{id}/messages`` or a ``post`` frame on the
WebSocket — goes through :meth:`PostBatcher.post`. It queues the post and, if no batch is
being written, starts one: a single worker-thread call that writes *every* post waiting at
that moment in one SQLite transaction (:meth:`edge.chat.ChatService.post_many`: a savepoint
per post, so a refused one leaves nothing and the others stand) and looks up the authors'
display names once. While that batch is written, new posts wait for the next. Under light
load a batch is one post and nothing changes; under heavy load one commit, one thread hop
and one lock round serve many posts (measured with ``bench/chat_fanout.py``: the commit
and the per-call thread hops were most of the edge's time per message before).

A post is answered only after its batch has committed, as before. What happens after the
commit — the ``message`` frame to every member's WebSockets, the end of the author's typing
indicator, waking the federation for a conversation that spans plants — is done here, on the
loop, for every post of the batch, whatever became of the caller: a client that went away
after its post was written does not keep the others from seeing it. A caller cancelled
before its batch was taken is dropped from it (nothing is written for it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from edge.chat import ChatError, Conversation, Message, NewPost, PostedMessage, TypingChange
from edge.web.chat_views import Names, dumps, message_json
from edge.web.hub import WsClient

if TYPE_CHECKING:
    from edge.web.state import WebState

log = logging.getLogger("edge.web.chat")

MAX_BATCH: Final = 256


def spans_plants(conv: Conversation, site: str) -> bool:
    return any(m.site != site for m in conv.members)


def local_members(state: WebState, conv: Conversation) -> list[str]:
    """The members of this plant: whose WebSockets a change goes to (other plants push to
    their own users)."""
    return [m.login for m in conv.members if m.site == state.config.site]


def publish(
    state: WebState,
    kind: str,
    message: Message,
    conv: Conversation | None,
    members: Iterable[str],
    names: Names,
    skip: WsClient | None = None,
) -> str:
    """Encode once; push it to ``members`` (but the connection ``skip``); wake the federation
    if the conversation spans plants. The encoded message (the HTTP answer)."""
    text = dumps(message_json(message, names))
    state.push.message(kind, message.conversation_id, text, members, skip)
    if conv is not None and spans_plants(conv, state.config.site):
        state.wake_federation()
    return text


def posted_frame(request_id: str, message_text: str) -> str:
    return f'{{"type":"posted","id":{dumps(request_id)},"message":{message_text}}}'


@dataclass(frozen=True)
class Answer:
    """Where a post made over a WebSocket is answered: that connection, the frame's id."""

    client: WsClient
    request_id: str


@dataclass(frozen=True)
class _Written:
    results: list[PostedMessage | ChatError]
    was_typing: list[bool]
    names: Names
    now: dt.datetime


class PostBatcher:
    def __init__(self, state: WebState, max_batch: int = MAX_BATCH) -> None:
        self.state = state
        self.max_batch = max_batch
        self._waiting: list[tuple[NewPost, Answer | None, asyncio.Future[str]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def post(self, post: NewPost, answer: Answer | None = None) -> str:
        """Post it; the encoded message once committed and pushed, or the chat's refusal.
        With ``answer``, that connection gets the ``posted`` frame in place of the
        ``message`` frame, in the same order as every other connection gets the latter."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((post, answer, future))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_all())
        return await future

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                taken = [w for w in self._waiting[: self.max_batch] if not w[2].cancelled()]
                del self._waiting[: self.max_batch]
                if taken:
                    await self._write(taken)
        finally:
            self._writer = None

    async def _write(self, taken: list[tuple[NewPost, Answer | None, asyncio.Future[str]]]) -> None:
        state = self.state
        try:
            written = await state.run(self._commit, [post for post, _, _ in taken])
        except Exception as e:  # the database failed: every caller of the batch gets it
            for _, _, future in taken:
                if not future.done():
                    future.set_exception(e)
            return
        for (post, answer, future), result, was_typing in zip(
            taken, written.results, written.was_typing, strict=True
        ):
            if isinstance(result, ChatError):
                if not future.done():
                    future.set_exception(result)
                continue
            try:
                text = self._announce(post, answer, result, was_typing, written)
            except Exception as e:
                log.exception("a posted message could not be pushed")
                if not future.done():
                    future.set_exception(e)
                continue
            if not future.done():
                future.set_result(text)

    def _commit(self, posts: Sequence[NewPost]) -> _Written:
        """Blocking (a worker thread): the batch in one transaction, the authors' names."""
        state = self.state
        chat = state.chat
        now = state.clock()
        was_typing = [
            p.login in chat.typing_indicators.typing(p.conversation_id, now) for p in posts
        ]
        results = chat.post_many(posts, now=now)
        authors = {
            p.login for p, r in zip(posts, results, strict=True) if not isinstance(r, ChatError)
        }
        names = state.names.lookup(state.db.get(), authors) if authors else {}
        return _Written(results, was_typing, names, now)

    def _announce(
        self,
        post: NewPost,
        answer: Answer | None,
        posted: PostedMessage,
        was_typing: bool,
        written: _Written,
    ) -> str:
        state = self.state
        members = local_members(state, posted.conversation)
        if was_typing:  # posting ended the indicator
            change = TypingChange(post.conversation_id, post.login, False, written.now)
            state.push.typing(change, members)
        skip = answer.client if answer is not None else None
        conv, names = posted.conversation, written.names
        text = publish(state, "message", posted.message, conv, members, names, skip)
        if answer is not None:
            answer.client.push(posted_frame(answer.request_id, text))
        return text
