"""The narrow interface between call signalling and the SFU's rooms.

Theory of operation
-------------------
The call service (:mod:`edge.calls.service`) decides *who* is in a call; the media side
(:class:`MediaRooms`) moves their audio and video. Between them pass only these calls and
events, and every argument and result is plain data — strings, enums and frozen
dataclasses of them — never an aiortc object, a socket or a callback into the web layer.
That is what lets the rooms live in SFU worker processes (THREATS C1): each call becomes a
request on a pipe to the worker that holds the room, each result its reply, and the events
come back on the same pipe (:class:`edge.calls.worker_media.WorkerMedia`, one worker per
core, each running a :class:`edge.calls.local_media.LocalMedia`, which runs the rooms
(:class:`edge.sfu.room.Room`) in its process). When a worker dies its rooms are made again
on another and :class:`Moved` tells the call service, whose pages then publish and
subscribe again: the call goes on.

A room is named by the call id; a participant by login. Each participant has at most two
*publish* connections (``Source.CAMERA``: microphone and camera; ``Source.SCREEN``: a
screen share), offered by the browser and answered here, and one *subscribe* connection,
offered here with one slot per publication of the others and answered by the browser.
:meth:`MediaRooms.subscribe` re-points idle slots (whose publisher left) to new
publications of the same kind before it adds slots, so a long meeting does not grow the
browser's connection without bound; it returns an offer only when slots were added.
People at other plants arrive over bridge legs (:mod:`edge.calls.bridge`, driven through
``LocalMedia.bridge_*``): :class:`RemotePublished` / :class:`RemoteUnpublished` name them
(``Publication.site`` is their plant), and subscribing offers them like local people.
A room records (:meth:`MediaRooms.start_recording`) the publications it is given into a file
named by the call service: the media side taps them and muxes what arrives.

SDP is untrusted text from a browser: :func:`check_sdp` refuses what is not SDP-shaped
(or lacks what WebRTC needs, or names a candidate address the edge would have to look up)
before any parser sees it, and the media side raises :class:`SdpError` (a ``ValueError``
with the reason) for an offer or answer it cannot use; that participant's connection is
closed and every other one serves on (THREATS W5).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Protocol

MAX_SDP_CHARS: Final = 262_144  # a subscribe answer for 48 others' audio+video is ~100 KB


class Source(enum.Enum):
    CAMERA = "camera"  # microphone and camera
    SCREEN = "screen"


@dataclass(frozen=True)
class Publication:
    id: str
    participant: str  # login
    kind: str  # "audio" or "video"
    source: Source
    site: str | None = None  # None: of this plant; else the plant it comes from over a bridge


@dataclass(frozen=True)
class Slot:
    """One stream of a subscribe connection: its mid, and what feeds it now (or nothing)."""

    mid: str
    kind: str
    publication: Publication | None


@dataclass(frozen=True)
class Offer:
    sdp: str | None  # None: no new slots, nothing to answer
    slots: tuple[Slot, ...]


# Events from the media side


@dataclass(frozen=True)
class Published:
    room: str
    publication: Publication


@dataclass(frozen=True)
class Unpublished:
    room: str
    publication: Publication


@dataclass(frozen=True)
class SlotsChanged:
    """A participant's slots changed without their asking (a publisher left)."""

    room: str
    participant: str
    slots: tuple[Slot, ...]


@dataclass(frozen=True)
class SlotAdapted:
    """Adaptive quality (:mod:`edge.sfu.adapt`): the participant's link cannot carry this
    video slot now (``paused``: nothing is sent on it; the page shows the person's name
    instead of a frozen picture), or can again (it restarts on a keyframe)."""

    room: str
    participant: str
    mid: str
    paused: bool


@dataclass(frozen=True)
class Dropped:
    """A participant's media connection failed: their page is gone."""

    room: str
    participant: str


@dataclass(frozen=True)
class Speaker:
    """The active speaker (by the audio levels the SFU forwards), or nobody."""

    room: str
    participant: str | None


@dataclass(frozen=True)
class Moved:
    """The room was lost with the SFU worker that held it (THREATS C1) and made again on
    another: its publications ended (an :class:`Unpublished` came for each), its
    participants (these logins) are in it again with no connection, and a recording that
    ran was cut. Their pages must publish and subscribe again; the call goes on."""

    room: str
    participants: tuple[str, ...]


class Direction(enum.Enum):
    """A bridge leg's two connections: ``OUT`` carries this plant's publications (offered
    here), ``IN`` the other plant's (offered there)."""

    OUT = "out"
    IN = "in"


class LinkState(enum.Enum):
    CONNECTED = "connected"
    DROPPED = "dropped"  # failed or closed by the other end; the media side let it go


@dataclass(frozen=True)
class RemotePublished:
    """A publication of another plant arrived over the bridge leg to ``publication.site``:
    local subscribers may now get it (``publication.participant`` is the remote login)."""

    room: str
    publication: Publication


@dataclass(frozen=True)
class RemoteUnpublished:
    """A remote publication ended (at its plant, or because its leg dropped)."""

    room: str
    publication: Publication


@dataclass(frozen=True)
class BridgeLink:
    """One connection of a bridge leg connected or dropped (``edge.calls.bridge``)."""

    room: str
    site: str
    direction: Direction
    connection: str
    state: LinkState


MediaEvent = (
    Published
    | Unpublished
    | SlotsChanged
    | SlotAdapted
    | Dropped
    | Speaker
    | Moved
    | RemotePublished
    | RemoteUnpublished
    | BridgeLink
)


@dataclass(frozen=True)
class Recorded:
    """A finished recording (:meth:`MediaRooms.stop_recording`): the file, its length and
    the frames written per publication."""

    path: str
    duration_ms: int
    frames: tuple[tuple[str, int], ...]  # (publication id, frames)
    resyncs: int
    cut: bool = False  # the worker recording it died: the file ends at its last whole frame


class SdpError(ValueError):
    """An offer or answer that cannot be used; the message says why."""


class MediaConflictError(ValueError):
    """Not now (publishing twice, a subscribe offer still unanswered)."""


class BridgeError(ValueError):
    """A bridge leg's offer, answer or settings that cannot be used; the message says why."""


class NoRelayError(BridgeError):
    """A bridge connection gathered no relay candidate: the TURN server refused the
    credential or did not answer (``edge.calls.bridge.turn_refusal`` tells which)."""


class MediaRooms(Protocol):
    async def join(self, room: str, participant: str) -> None:
        """Into the room (made on first use); joining again starts their media afresh."""

    async def leave(self, room: str, participant: str) -> None:
        """Out of the room with all their connections; nothing if not in it."""

    async def publish(self, room: str, participant: str, source: Source, offer: str) -> str:
        """Answer their offer to send ``source``; :class:`SdpError` if it is unusable."""
        ...

    async def unpublish(self, room: str, participant: str, source: Source) -> None:
        """Stop publishing ``source`` (the screen share ends)."""

    async def subscribe(self, room: str, participant: str) -> Offer:
        """Slots for every publication of the others."""
        ...

    async def answer(self, room: str, participant: str, answer: str) -> tuple[Slot, ...]:
        """Their answer to the last subscribe offer; the slots now."""
        ...

    async def hold(self, room: str, participant: str, held: bool) -> None:
        """Forward none of ``participant``'s audio (the moderator muted them), or again."""

    async def start_recording(self, room: str, publications: tuple[str, ...], path: str) -> None:
        """Mux these publications, as they arrive and never re-encoded, into the WebM file
        ``path`` (:mod:`edge.calls.recording`); :class:`MediaConflictError` if the room
        records already or none of them is published."""

    async def stop_recording(self, room: str) -> Recorded | None:
        """Finish the room's recording; ``None`` if it was not recording."""
        ...

    async def close_room(self, room: str) -> None:
        """Everyone out; the room is gone (a recording still running is finished)."""

    async def close(self) -> None:
        """Every room closed (the edge stops)."""


_CONTROL: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # but tab (RFC 8866's text)


def check_sdp(text: str) -> str:
    """``text`` if it is shaped like WebRTC's SDP, else :class:`SdpError` naming what is
    wrong: ``v=0`` first, ``x=value`` lines of printable text (RFC 8866), a media section,
    ICE credentials and a DTLS fingerprint (RFC 8829: nothing connects without them), and
    ICE candidates whose address is an IP address or an mDNS name (``….local``, RFC 8828:
    never a name the edge would have to look up) and whose port is a port. The parser
    decides the rest."""
    if not text:
        raise SdpError("the SDP is empty")
    if len(text) > MAX_SDP_CHARS:
        raise SdpError(f"the SDP is too long (at most {MAX_SDP_CHARS} characters)")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise SdpError("the SDP must start with v=0")
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"SDP line {number} is not of the form x=value")
        if _CONTROL.search(line):
            raise SdpError(f"SDP line {number} holds a control character")
        if line.startswith("a=candidate:"):
            _check_candidate(line[12:], number)
    if not any(line.startswith("m=") for line in lines):
        raise SdpError("the SDP has no media section (m=)")
    for attribute, what in (
        ("a=ice-ufrag:", "ICE username fragment"),
        ("a=ice-pwd:", "ICE password"),
        ("a=fingerprint:", "DTLS fingerprint"),
    ):
        if not any(line.startswith(attribute) for line in lines):
            raise SdpError(f"the SDP has no {what} ({attribute[:-1]})")
    return text


def _check_candidate(value: str, number: int) -> None:
    """``foundation component transport priority address port typ type ...`` (RFC 8839)."""
    parts = value.split()
    if len(parts) < 8 or parts[6] != "typ":
        raise SdpError(f"SDP line {number}: not an ICE candidate")
    component, priority, address, port = parts[1], parts[3], parts[4], parts[5]
    if not (component.isdigit() and priority.isdigit() and port.isdigit()):
        raise SdpError(f"SDP line {number}: an ICE candidate needs numbers there")
    if int(port) > 65535:
        raise SdpError(f"SDP line {number}: port {port} is not a port")
    if not address.lower().endswith(".local"):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise SdpError(
                f"SDP line {number}: candidate address {address[:64]!r} is neither an IP "
                "address nor an mDNS name"
            ) from None
