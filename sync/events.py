"""What edges and the core say to each other besides the directory: streams and item kinds.

Streams (each ordered, exactly once, per origin → recipient):

``events``   edge → core: what happened at the plant (logins, presence changes, call
             records, edge health). Item kind ``zastava.event.<name>``, data a JSON object.
``chat``     edge → core → edge: messages of conversations that span plants. Item kind
             ``zastava.chat``, data a JSON object ``{"to": [site...], "msg": {...}}`` from the
             edge; the core forwards ``{"from": origin, "to": [...], "msg": {...}}`` to each
             site in ``to`` (``from`` is the bundle's verified origin, never the sender's claim).
``presence`` core → edge: other plants' presence events, forwarded as they arrived.
``policy``   core → edge: the CA's CRL (``zastava.crl``, DER) whenever it changes.

The chat ``msg`` object belongs to the chat component (``edge.chat``); the core only reads
``to`` and stores the whole item in its global event store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from pki.names import check_site

EVENTS_STREAM: Final = "events"
CHAT_STREAM: Final = "chat"
PRESENCE_STREAM: Final = "presence"
POLICY_STREAM: Final = "policy"

EVENT_PREFIX: Final = "zastava.event."
CHAT_ITEM: Final = "zastava.chat"
CRL_ITEM: Final = "zastava.crl"

# Event names the core forwards to every other edge (on the presence stream).
FORWARDED_EVENTS: Final = frozenset({"presence"})

MAX_CHAT_SITES: Final = 256


class EventError(ValueError):
    """An item that does not follow this module's rules (the whole bundle is refused)."""


def event_kind(name: str) -> str:
    if not name.isascii() or not name.replace("_", "").isalnum() or len(name) > 64:
        raise EventError(f"event name {name!r}: use up to 64 ASCII letters, digits and '_'")
    return EVENT_PREFIX + name


def event_name(kind: str) -> str:
    if not kind.startswith(EVENT_PREFIX):
        raise EventError(f"not an event item: {kind!r}")
    return kind[len(EVENT_PREFIX) :]


def encode_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def decode_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EventError(f"{what}: not a UTF-8 JSON object ({e})") from None
    if not isinstance(obj, dict):
        raise EventError(f"{what}: not a JSON object")
    return obj


@dataclass(frozen=True)
class ChatEnvelope:
    """A cross-site chat item: destination sites, the message, and (from core) its origin."""

    to: tuple[str, ...]
    msg: dict[str, Any]
    origin: str | None = None

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"to": list(self.to), "msg": self.msg}
        if self.origin is not None:
            obj["from"] = self.origin
        return encode_json(obj)

    @classmethod
    def decode(cls, data: bytes) -> ChatEnvelope:
        obj = decode_json(data, "chat item")
        to, msg, origin = obj.get("to"), obj.get("msg"), obj.get("from")
        if (
            not isinstance(to, list)
            or not to
            or len(to) > MAX_CHAT_SITES
            or not all(isinstance(s, str) for s in to)
        ):
            raise EventError(f"chat item: 'to' must list 1 to {MAX_CHAT_SITES} site ids")
        try:
            sites = tuple(check_site(s) for s in to)
        except ValueError as e:
            raise EventError(f"chat item: {e}") from None
        if not isinstance(msg, dict):
            raise EventError("chat item: 'msg' must be a JSON object")
        if origin is not None and not isinstance(origin, str):
            raise EventError("chat item: 'from' must be a site id")
        return cls(sites, msg, origin)
