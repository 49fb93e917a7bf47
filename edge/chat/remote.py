"""Conversations that span plants: what this plant sends, and how it applies what arrives.

Theory of operation
-------------------
**Out.** Every change to a conversation with members at other plants is queued for those
plants with :func:`edge.outbound.queue_chat` *in the transaction that makes the change*
(:func:`send`), so the local change and its copy for the others commit together or not at
all; a message's attachment bytes are queued with it (:func:`edge.outbound.queue_files`,
sent by :mod:`edge.chat.files_out`). A membership change goes to the plants of the old and
the new members alike, so a plant whose last member was removed hears of it.

**In.** :func:`apply_remote` applies one :class:`sync.events.ChatEnvelope` in the caller's
transaction (the one that records the bundle), inside a savepoint. It is idempotent — a
message, edit or deletion applied twice changes nothing — and it trusts the envelope's
``origin`` (set by the core from the bundle's verified signature), never the ``msg``'s claims:

- a plant speaks only for its own users: the acting login must be listed (or already known)
  as a member whose home is ``origin``, and, where the directory knows the login, the
  directory must agree;
- a message id must be in ``origin``'s namespace (``<origin>:…``), so no plant can pre-empt
  or overwrite another's messages;
- only a message's author edits or deletes it (channels, where owners and admins moderate,
  never cross plants);
- conversation state (``create``/``members``) replaces the local state only if its clock
  ``(at_ms, origin)`` is later than the one applied last (last writer wins: plants converge).

Messages are stored in the order they arrive. A message for an unknown conversation creates
it from the state the message carries. Whatever a remote plant sends, this function does not
raise for it: a malformed or refused ``msg`` is logged and reported as
:attr:`RemoteOutcome.REJECTED`, so one bad item never blocks the ordered stream behind it.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import sqlite3
from dataclasses import dataclass

from edge import outbound
from edge.chat import conversations, messages
from edge.chat.content import id_site
from edge.chat.directory import SiteOf, directory_site_of
from edge.chat.model import Conversation, Message, to_ms
from edge.chat.schema import require_current
from edge.chat.wire import (
    ChatMsg,
    DeleteMsg,
    EditMsg,
    MessageMsg,
    StateMsg,
    WireConversation,
    WireError,
    parse_msg,
)
from sync.events import ChatEnvelope

log = logging.getLogger("zastava.edge.chat")


def send(
    conn: sqlite3.Connection,
    conv: Conversation,
    local_site: str,
    msg: ChatMsg,
    now_ms: int,
    *,
    also: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Queue ``msg`` for the other plants of ``conv`` (and ``also``); returns the sites."""
    sites = sorted((conversations.remote_sites(conv, local_site) | also) - {local_site})
    if sites:
        outbound.queue_chat(conn, sites, msg.to_json(), now_ms)
        if isinstance(msg, MessageMsg) and msg.attachments:  # the bytes follow, once per plant
            outbound.queue_files(conn, sites, [a.sha256 for a in msg.attachments], now_ms)
    return sites


class RemoteOutcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # already applied: nothing changed
    IGNORED = "ignored"  # well-formed but moot (older state, unknown message, a tombstone)
    REJECTED = "rejected"  # malformed, or the origin may not do this: logged


@dataclass(frozen=True)
class RemoteResult:
    outcome: RemoteOutcome
    reason: str = ""
    conversation_id: str | None = None
    message: Message | None = None  # the stored message, edit or tombstone
    notify: tuple[str, ...] = ()  # this plant's users to push the change to


class _RefusedError(Exception):
    def __init__(self, outcome: RemoteOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def apply_remote(
    conn: sqlite3.Connection,
    envelope: ChatEnvelope,
    *,
    site: str,
    now: dt.datetime,
    site_of: SiteOf | None = None,
) -> RemoteResult:
    """Apply one chat item from another plant (see the module's rules); never raises for it.

    ``site`` is this plant's id; ``site_of`` defaults to the directory cache on ``conn``.
    """
    require_current(conn)
    now_ms = to_ms(now)
    lookup = site_of if site_of is not None else directory_site_of(conn)
    origin = envelope.origin
    try:
        if origin is None:
            raise _RefusedError(RemoteOutcome.REJECTED, "no verified origin on the chat item")
        if origin == site:
            raise _RefusedError(RemoteOutcome.IGNORED, "our own chat item came back")
        try:
            msg = parse_msg(envelope.msg)
        except WireError as e:
            raise _RefusedError(RemoteOutcome.REJECTED, str(e)) from None
        conn.execute("SAVEPOINT chat_remote")
        try:
            result = _apply(conn, msg, origin, site, now_ms, lookup)
        except BaseException:
            conn.execute("ROLLBACK TO chat_remote")
            conn.execute("RELEASE chat_remote")
            raise
        conn.execute("RELEASE chat_remote")
        return result
    except _RefusedError as r:
        if r.outcome is RemoteOutcome.REJECTED:
            log.warning("chat item from %s rejected: %s", origin, r.reason)
        return RemoteResult(r.outcome, r.reason)


def _apply(
    conn: sqlite3.Connection,
    msg: ChatMsg,
    origin: str,
    site: str,
    now_ms: int,
    site_of: SiteOf,
) -> RemoteResult:
    if isinstance(msg, StateMsg):
        return _apply_state(conn, msg, origin, site, now_ms, site_of)
    if isinstance(msg, MessageMsg):
        return _apply_message(conn, msg, origin, site, now_ms, site_of)
    return _apply_change(conn, msg, origin, site, site_of)


def _speaks_for(origin: str, login: str, claimed_site: str | None, site_of: SiteOf) -> None:
    if claimed_site != origin:
        raise _RefusedError(
            RemoteOutcome.REJECTED, f"{origin} may not act for {login!r} (home {claimed_site!r})"
        )
    known = site_of(login)
    if known is not None and known != origin:
        raise _RefusedError(
            RemoteOutcome.REJECTED,
            f"{origin} may not act for {login!r}: the directory says {known}",
        )


def _ensure_conversation(
    conn: sqlite3.Connection, wire: WireConversation, origin: str, now_ms: int
) -> Conversation:
    existing = conversations.load(conn, wire.id)
    if existing is not None:
        if existing.kind is not wire.kind:
            raise _RefusedError(
                RemoteOutcome.REJECTED, f"conversation {wire.id} is a {existing.kind.value} here"
            )
        return existing
    conv = conversations.from_wire(wire)
    # State carried by a message is the weakest: any create/members snapshot replaces it.
    conversations.insert(conn, conv, state_ms=-1, state_site="", now_ms=now_ms)
    return conv


def _apply_state(
    conn: sqlite3.Connection,
    msg: StateMsg,
    origin: str,
    site: str,
    now_ms: int,
    site_of: SiteOf,
) -> RemoteResult:
    wire = msg.conversation
    existing = conversations.load(conn, wire.id)
    new_member = next((m for m in wire.members if m.login == msg.by), None)
    old_member = existing.member(msg.by) if existing else None
    if existing is not None and old_member is None:
        raise _RefusedError(RemoteOutcome.REJECTED, f"{msg.by!r} is not a member of {wire.id}")
    actor = old_member or new_member
    _speaks_for(origin, msg.by, actor.site if actor else None, site_of)
    clock = (msg.at_ms, origin)
    if existing is not None:
        if existing.kind is not wire.kind:
            raise _RefusedError(
                RemoteOutcome.REJECTED, f"conversation {wire.id} is a {existing.kind.value} here"
            )
        current = conversations.state_clock(conn, wire.id)
        if clock == current:
            return RemoteResult(RemoteOutcome.DUPLICATE, "state already applied", wire.id)
        if clock < current:
            return RemoteResult(RemoteOutcome.IGNORED, "older conversation state", wire.id)
    before = set(conversations.local_members(conn, wire.id, site)) if existing else set()
    conv = conversations.from_wire(wire)
    if existing is None:
        conversations.insert(conn, conv, state_ms=msg.at_ms, state_site=origin, now_ms=now_ms)
    else:
        conversations.set_details(conn, wire.id, wire.name, wire.topic)
        conversations.put_members(conn, wire.id, conv.members, now_ms)
        conversations.set_state_clock(conn, wire.id, msg.at_ms, origin)
    after = set(conversations.local_members(conn, wire.id, site))
    return RemoteResult(RemoteOutcome.APPLIED, "", wire.id, notify=tuple(sorted(before | after)))


def _apply_message(
    conn: sqlite3.Connection,
    msg: MessageMsg,
    origin: str,
    site: str,
    now_ms: int,
    site_of: SiteOf,
) -> RemoteResult:
    if messages.by_id(conn, msg.id) is not None:
        return RemoteResult(RemoteOutcome.DUPLICATE, "message already stored", msg.conversation.id)
    if id_site(msg.id) != origin:
        raise _RefusedError(RemoteOutcome.REJECTED, f"message id {msg.id!r} is not {origin}'s")
    existing = conversations.load(conn, msg.conversation.id)
    author = (existing or conversations.from_wire(msg.conversation)).member(msg.author)
    if author is None:
        raise _RefusedError(
            RemoteOutcome.REJECTED, f"{msg.author!r} is not a member of {msg.conversation.id}"
        )
    _speaks_for(origin, msg.author, author.site, site_of)
    conv = _ensure_conversation(conn, msg.conversation, origin, now_ms)
    stored = messages.insert(
        conn,
        message_id=msg.id,
        conversation_id=conv.id,
        author=msg.author,
        text=msg.text,
        sent_ms=msg.sent_ms,
        now_ms=now_ms,
        reply_to=msg.reply_to,
        attachments=msg.attachments,
        members=conversations.member_logins(conn, conv.id),
    )
    notify = conversations.local_members(conn, conv.id, site)
    return RemoteResult(RemoteOutcome.APPLIED, "", conv.id, stored, notify)


def _apply_change(
    conn: sqlite3.Connection,
    msg: EditMsg | DeleteMsg,
    origin: str,
    site: str,
    site_of: SiteOf,
) -> RemoteResult:
    found = messages.by_id(conn, msg.id)
    if found is None or found.conversation_id != msg.conversation_id:
        return RemoteResult(RemoteOutcome.IGNORED, f"no message {msg.id!r} here")
    if msg.by != found.author or id_site(msg.id) != origin:
        raise _RefusedError(
            RemoteOutcome.REJECTED, f"{msg.by!r} at {origin} may not change {msg.id}"
        )
    _speaks_for(origin, msg.by, origin, site_of)
    cid = found.conversation_id
    if found.deleted:
        outcome = RemoteOutcome.DUPLICATE if isinstance(msg, DeleteMsg) else RemoteOutcome.IGNORED
        return RemoteResult(outcome, "message already deleted", cid)
    if isinstance(msg, DeleteMsg):
        dead, _ = messages.tombstone(conn, found, msg.by, msg.deleted_ms)
        changed = dead
    else:
        if found.edited_ms is not None and msg.edited_ms <= found.edited_ms:
            return RemoteResult(RemoteOutcome.DUPLICATE, "edit already applied", cid)
        changed = messages.edit(
            conn, found, msg.text, msg.edited_ms, conversations.member_logins(conn, cid)
        )
    notify = conversations.local_members(conn, cid, site)
    return RemoteResult(RemoteOutcome.APPLIED, "", cid, changed, notify)
