"""What a client may send over ``/api/ws``, as a sans-IO parser and a frame budget (W5).

Theory of operation
-------------------
A client frame is one WebSocket text message holding a JSON object with a string ``type``
(at most 64 characters) and, per type, its fields. :func:`parse_frame` takes the message as
received (``str`` or ``bytes``) and returns a :class:`ClientFrame` or raises
:class:`FrameError`, whose ``code`` is the WebSocket close code to end *that* connection with:

- a binary message: 1003 (unsupported data);
- over ``max_bytes`` (UTF-8): 1009 (too big);
- not a JSON object, or no string ``type``: 1007 (invalid payload);
- a ``subscribe``/``unsubscribe`` without a string ``topic`` of at most 200 characters:
  1007.

Which types exist is the dispatcher's business (an unknown type closes with 1008). A
:class:`FrameBudget` (token bucket, ``now`` passed in) limits frames per second per
connection; a flood closes that connection with 1008 and costs the others nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

# WebSocket close codes (RFC 6455 and the 4000-4999 range for applications).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_UNSUPPORTED: Final = 1003
CLOSE_INVALID: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_TRY_LATER: Final = 1013
CLOSE_SESSION_ENDED: Final = 4401

MAX_TYPE_LENGTH: Final = 64
MAX_TOPIC_LENGTH: Final = 200


class FrameError(ValueError):
    """A frame that ends its connection: ``code`` is the close code, the message the reason."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ClientFrame:
    type: str
    fields: dict[str, Any]

    @property
    def topic(self) -> str:
        """The ``topic`` field of a subscribe/unsubscribe frame (checked by the parser)."""
        topic = self.fields["topic"]
        assert isinstance(topic, str)
        return topic


def parse_frame(message: str | bytes, max_bytes: int) -> ClientFrame:
    if isinstance(message, bytes):
        raise FrameError(CLOSE_UNSUPPORTED, "binary frames are not accepted")
    if len(message) > max_bytes or len(message.encode("utf-8", "surrogatepass")) > max_bytes:
        raise FrameError(CLOSE_TOO_BIG, f"frame over {max_bytes} bytes")
    try:
        obj = json.loads(message)
    except (json.JSONDecodeError, RecursionError):
        raise FrameError(CLOSE_INVALID, "frame is not JSON") from None
    if not isinstance(obj, dict):
        raise FrameError(CLOSE_INVALID, "frame is not a JSON object")
    kind = obj.pop("type", None)
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_TYPE_LENGTH:
        raise FrameError(CLOSE_INVALID, "frame has no string 'type'")
    if kind in ("subscribe", "unsubscribe"):
        topic = obj.get("topic")
        if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_LENGTH:
            raise FrameError(CLOSE_INVALID, f"{kind} needs a string 'topic'")
    return ClientFrame(kind, obj)


def unknown_type(kind: str) -> FrameError:
    return FrameError(CLOSE_POLICY, f"unknown frame type {kind[:MAX_TYPE_LENGTH]!r}")


class FrameBudget:
    """At most ``rate`` frames per second on average, bursts of ``burst`` (token bucket)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a frame budget needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one frame at ``now`` (monotonic seconds); false when the budget is spent."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
