"""The rules for what users type and name: text, names, file names, media types, mentions, ids.

Theory of operation
-------------------
Text is stored exactly as given — HTML, control characters, any script (THREATS W1, W3): the
client renders it as text. What is refused, with a message naming the field: text over the
byte limit (W2, measured in UTF-8 before anything is stored), strings that cannot be UTF-8 at
all (lone surrogates), and, in *names* shown in lists (conversation, channel, folder), the
control and bidi-override characters that make one name display as another — the directory's
rule (:func:`sync.directory.records.check_text`). File names are kept as given, any Unicode;
they never become a path (attachments are stored by hash).

Identifiers are global: a message or a group/channel is ``<site>:<32 hex>`` minted by the
plant that made it, a direct conversation is ``direct:<login>:<login>`` with the two logins
sorted, so both plants of a cross-site pair arrive at the same conversation independently.

A mention is ``@login`` (case-insensitive, not preceded by a word character, so an e-mail
address is not one) of a member of the conversation other than the author.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from edge.chat.errors import InvalidInputError, TooLargeError
from pki.names import check_login, check_site
from sync.directory.records import check_text

_MEDIA_TYPE: Final = re.compile(
    r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
    r"(?:; ?[a-z0-9!#$&^_.+-]{1,64}=(?:[a-z0-9!#$&^_.+-]{1,128}|\"[ -~]{0,128}\"))*"
)
_MENTION: Final = re.compile(r"(?<![\w@])@([a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?)", re.IGNORECASE)
_LOCAL_ID: Final = re.compile(r"([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?):([0-9a-f]{32})")
DIRECT_PREFIX: Final = "direct:"


def utf8_size(what: str, value: str) -> int:
    """The UTF-8 length of ``value``; refuses what cannot be encoded (lone surrogates)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{what}: not valid Unicode (U+{ord(value[e.start]):04X} at {e.start} is a lone "
            "surrogate)"
        ) from None


def check_message_text(text: object, limit: int, *, allow_empty: bool) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"text: must be a string, not {type(text).__name__}")
    size = utf8_size("text", text)
    if size > limit:
        raise TooLargeError("message text", size, limit)
    if not text and not allow_empty:
        raise InvalidInputError("text: an empty message needs at least one attachment")
    return text


def check_name(what: str, value: object, limit: int) -> str:
    """A name shown in lists: non-empty, no surrounding space, no control or bidi characters."""
    if isinstance(value, str):
        utf8_size(what, value)
    try:
        return check_text(what, value, limit=limit)
    except ValueError as e:
        raise InvalidInputError(str(e)) from None


def check_topic(value: object, limit: int) -> str | None:
    """A topic: like a name, or ``None``/empty to clear it."""
    if value is None or value == "":
        return None
    return check_name("topic", value, limit)


def check_file_name(value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"file name: must be a string, not {type(value).__name__}")
    utf8_size("file name", value)
    if not value:
        raise InvalidInputError("file name: must not be empty")
    if len(value) > limit:
        raise InvalidInputError(f"file name: {len(value)} characters long; the limit is {limit}")
    return value


def check_media_type(value: object) -> str:
    """``type/subtype`` with optional parameters, in lower case (RFC 6838 characters)."""
    if not isinstance(value, str) or not _MEDIA_TYPE.fullmatch(value.lower()):
        raise InvalidInputError(
            f"media type: {value!r} is not of the form type/subtype (for example 'image/png')"
        )
    return value.lower()


def check_user(what: str, login: object) -> str:
    if not isinstance(login, str):
        raise InvalidInputError(f"{what}: must be a login, not {type(login).__name__}")
    try:
        return check_login(login)
    except ValueError as e:
        raise InvalidInputError(f"{what}: {e}") from None


def mentions(text: str, members: Iterable[str], author: str) -> tuple[str, ...]:
    """The members other than ``author`` that ``text`` mentions, sorted, each once."""
    candidates = {m.group(1).lower() for m in _MENTION.finditer(text)}
    return tuple(sorted(candidates.intersection(members) - {author}))


def new_id(site: str, rand: Callable[[int], bytes]) -> str:
    """A fresh global id in ``site``'s namespace."""
    return f"{site}:{rand(16).hex()}"


def direct_id(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"{DIRECT_PREFIX}{first}:{second}"


def direct_pair(conversation_id: str) -> tuple[str, str] | None:
    """The two logins of a well-formed direct conversation id, else ``None``."""
    if not conversation_id.startswith(DIRECT_PREFIX):
        return None
    parts = conversation_id[len(DIRECT_PREFIX) :].split(":")
    if len(parts) != 2:
        return None
    a, b = parts
    try:
        check_login(a)
        check_login(b)
    except ValueError:
        return None
    return (a, b) if a < b else None


def id_site(value: str) -> str | None:
    """The minting site of a ``<site>:<32 hex>`` id, else ``None``."""
    m = _LOCAL_ID.fullmatch(value)
    if m is None:
        return None
    try:
        return check_site(m.group(1))
    except ValueError:
        return None


def is_conversation_id(value: object) -> bool:
    return isinstance(value, str) and (direct_pair(value) is not None or id_site(value) is not None)
