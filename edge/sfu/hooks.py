"""Every private aiortc attribute the SFU uses, named once, with why.

aiortc is a peer-connection library, not an SFU: its receivers always depayload, buffer and
decode, its senders always encode (or pack ``av.Packet``s and drop keyframe requests).
Forwarding packets needs its internals, which are private and change between releases
(jlaine/aiortc#449: aiortc is "not a pipe which blindly forwards pre-encoded data"). So the
version is pinned (``requirements/*.lock``), every attribute the SFU touches is listed in
:data:`HOOKS`, every access goes through a function of this module, and :func:`check_hooks`
(run by ``tests/test_sfu_hooks.py`` and, once per process, by :class:`edge.sfu.room.Room`
before it serves) fails with the attribute's name and the pinned version if one moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version
from typing import Any

from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtp import AnyRtcpPacket, RtcpByePacket, RtpPacket

logger = logging.getLogger(__name__)

PINNED_AIORTC = "1.16.0"
# fast egress also uses these packages' internals (aioice's nominated pair, pylibsrtp's
# libsrtp context): pinned in requirements/*.lock like aiortc
PINNED_OTHERS = {"aioice": "0.13.0", "pylibsrtp": "1.0.0"}

RECEIVER = "aiortc.rtcrtpreceiver.RTCRtpReceiver"
SENDER = "aiortc.rtcrtpsender.RTCRtpSender"
DTLS = "aiortc.rtcdtlstransport.RTCDtlsTransport"
TRANSCEIVER = "aiortc.rtcrtptransceiver.RTCRtpTransceiver"
STATISTICS = "aiortc.rtcrtpreceiver.StreamStatistics"
ROUTER = "aiortc.rtcdtlstransport.RtpRouter"
EXTENSIONS_MAP = "aiortc.rtp.HeaderExtensionsMap"
DTLS_STATE = "aiortc.rtcdtlstransport.State"
ICE = "aiortc.rtcicetransport.RTCIceTransport"
CONNECTION = "aioice.ice.Connection"
PAIR = "aioice.ice.CandidatePair"
STUN = "aioice.ice.StunProtocol"
TURN = "aioice.turn.TurnTransport"
SRTP = "pylibsrtp.Session"
SRTP_LIB = "pylibsrtp._binding.lib"
ESTIMATOR_MODULE = "aiortc.rtcrtpreceiver"
CERTIFICATE_MODULE = "aiortc.rtcpeerconnection"
PEER_CONNECTION = "aiortc.rtcpeerconnection.RTCPeerConnection"


class Use(enum.Enum):
    REPLACED = "replaced on the instance"
    WRAPPED = "wrapped on the instance"
    CALLED = "called"
    READ = "read"
    WRITTEN = "written"
    SWAPPED = "swapped in its module for a stand-in that defers to it"


@dataclass(frozen=True)
class Hook:
    owner: str  # dotted path of the class (of the module, for a name SWAPPED in it)
    attribute: str  # as looked up on an instance (name-mangled when aiortc uses __name)
    use: Use
    why: str
    parameters: tuple[str, ...] | None = None  # a method's parameters after self
    synchronous: bool = False  # a coroutine the SFU runs to its end at once: no await in it
    # for a SWAPPED name: (class, method, the call in its source) that must make that call
    called_in: tuple[str, str, str] | None = None


HOOKS: tuple[Hook, ...] = (
    Hook(
        RECEIVER,
        "_handle_rtp_packet",
        Use.REPLACED,
        "publisher ingress: each packet goes to the forwarder instead of the depayloader, "
        "jitter buffer and decoder thread",
        ("packet", "arrival_time_ms"),
    ),
    Hook(
        RECEIVER,
        "_handle_rtcp_packet",
        Use.WRAPPED,
        "publisher sender reports go to the forwarder (re-issued per subscriber) after aiortc "
        "noted them for its receiver reports; the fast ingress runs aiortc's part in the "
        "socket callback",
        ("packet",),
        synchronous=True,
    ),
    Hook(
        RECEIVER,
        "_send_rtcp_pli",
        Use.CALLED,
        "keyframe request to a publisher (PLI), with the receiver's RTCP SSRC",
        ("media_ssrc",),
    ),
    Hook(
        RECEIVER,
        "_send_rtcp_nack",
        Use.CALLED,
        "NACK to a publisher, with the receiver's RTCP SSRC",
        ("media_ssrc", "lost"),
    ),
    Hook(
        RECEIVER,
        "_send_rtcp",
        Use.REPLACED,
        "a publisher receiver's RTCP (its receiver reports, PLI, NACK, the SFU's REMB) leaves "
        "through the fast egress of its transport, aiortc's _send_rtp where that declines",
        ("packet",),
    ),
    Hook(
        ESTIMATOR_MODULE,
        "RemoteBitrateEstimator",
        Use.SWAPPED,
        "each video receiver's REMB estimator (1,001 objects: a rate bucket a millisecond), "
        "read only by its own _handle_rtp_packet, which the SFU replaces (a publisher's) or "
        "never gets (a slot's sendonly transceiver): never made for the SFU's receivers "
        "(sfu_side), so that the garbage collector does not walk 200,000 of them at 50 "
        "calls (pauses of 100-300 ms), nor do making and freeing them take a third of the "
        "worker's time to set up a connection",
        called_in=(RECEIVER, "__init__", "RemoteBitrateEstimator()"),
    ),
    Hook(
        CERTIFICATE_MODULE,
        "RTCCertificate",
        Use.SWAPPED,
        "each peer connection's DTLS certificate (an EC key made and a certificate signed, "
        "then its fingerprints hashed again for every description): the SFU's connections "
        "share one per worker process instead (sfu_side), made anew after a day",
        called_in=(PEER_CONNECTION, "__init__", "RTCCertificate.generateCertificate()"),
    ),
    Hook(
        RECEIVER,
        "_RTCRtpReceiver__remote_streams",
        Use.WRITTEN,
        "per-SSRC receive statistics that aiortc's RTCP task turns into receiver reports to "
        "the publisher (its own _handle_rtp_packet, which fills them, is replaced): the SFU "
        "puts edge.sfu.rtpstats.ReceiveStatistics there, with the fields aiortc reads",
    ),
    *(
        Hook(
            STATISTICS,
            field,
            Use.READ,
            "aiortc reads it from each receive-statistics object (its RTCP task, getStats); "
            "edge.sfu.rtpstats.ReceiveStatistics has it too",
        )
        for field in ("packets_received", "packets_lost", "jitter", "fraction_lost", "max_seq")
    ),
    Hook(
        SENDER,
        "_handle_rtcp_packet",
        Use.REPLACED,
        "subscriber feedback (NACK, PLI/FIR, REMB, receiver reports) goes to the forwarder; "
        "aiortc's sender has no history of forwarded packets and no encoder to ask (the fast "
        "ingress calls it for RTCP to a sender or receiver the SFU has no handler for)",
        ("packet",),
    ),
    Hook(
        SENDER,
        "_send_rtcp",
        Use.WRAPPED,
        "the subscriber-side sender's own periodic reports (a sender report of zeros: it "
        "never sent a packet itself, and SDES) are dropped; its BYE goes through",
        ("packets",),
    ),
    Hook(
        SENDER,
        "_run_rtcp",
        Use.REPLACED,
        "a slot's sender runs no periodic RTCP loop (its reports are dropped anyway): the "
        "task waits to be stopped, then sends the BYE as aiortc's does; ~720 wake-ups a "
        "second at 30 rooms, each building a report of zeros",
        (),
    ),
    Hook(SENDER, "_RTCRtpSender__started", Use.READ, "whether send() started the RTCP task"),
    Hook(
        SENDER,
        "_RTCRtpSender__rtcp_started",
        Use.WRITTEN,
        "set by the replaced RTCP task as by aiortc's: stop() waits for it",
    ),
    Hook(
        SENDER,
        "_RTCRtpSender__rtcp_exited",
        Use.WRITTEN,
        "set by the replaced RTCP task after its BYE: stop() waits for it",
    ),
    Hook(SENDER, "_ssrc", Use.READ, "SSRC a subscriber slot's packets carry"),
    Hook(SENDER, "_rtx_ssrc", Use.READ, "SSRC of a slot's retransmissions (RTX)"),
    Hook(
        DTLS,
        "_send_rtp",
        Use.CALLED,
        "subscriber egress: SRTP-protect and send forwarded RTP and RTCP bytes",
        ("data",),
    ),
    Hook(
        RECEIVER,
        "transport",
        Use.READ,
        "the publisher receiver's DTLS transport, whose RTP router binds SSRCs to receivers",
    ),
    Hook(DTLS, "_rtp_router", Use.READ, "the transport's RTP router (SSRC -> receiver)"),
    Hook(
        ROUTER,
        "ssrc_table",
        Use.WRITTEN,
        "an SSRC the forwarder refused is removed again: aiortc binds every unknown SSRC "
        "with a known payload type for good, which a participant inventing SSRCs would grow "
        "without bound (THREATS C4)",
    ),
    Hook(TRANSCEIVER, "_codecs", Use.READ, "codecs negotiated on a transceiver, first is used"),
    # -- fast egress (edge.sfu.egress): what _send_rtp does, without its per-packet layers --
    Hook(DTLS, "_state", Use.READ, "fast egress only while the DTLS transport is connected"),
    Hook(DTLS_STATE, "CONNECTED", Use.READ, "the DTLS state fast egress needs"),
    Hook(
        DTLS,
        "_tx_srtp",
        Use.READ,
        "the transport's outbound SRTP session: fast egress protects with its libsrtp context "
        "(same keys, same rollover state as _send_rtp)",
    ),
    Hook(
        DTLS,
        "_RTCDtlsTransport__tx_bytes",
        Use.WRITTEN,
        "the transport's sent-bytes statistic counts fast-egress packets too",
    ),
    Hook(
        DTLS,
        "_RTCDtlsTransport__tx_packets",
        Use.WRITTEN,
        "the transport's sent-packets statistic counts fast-egress packets too",
    ),
    Hook(ICE, "_connection", Use.READ, "the aioice connection under an ICE transport"),
    Hook(
        CONNECTION,
        "_nominated",
        Use.READ,
        "the nominated candidate pair per component: fast egress sends where aioice's "
        "sendto would, and re-resolves when the pair changes",
    ),
    Hook(PAIR, "protocol", Use.READ, "the nominated pair's local protocol (its socket)"),
    Hook(PAIR, "local_candidate", Use.READ, "its local candidate (a relay one: no fast egress)"),
    Hook(PAIR, "remote_addr", Use.READ, "the address aioice sends the pair's data to"),
    Hook(
        STUN,
        "transport",
        Use.READ,
        "the pair's asyncio datagram transport, whose sendto fast egress calls",
    ),
    Hook(TURN, "sendto", Use.READ, "a TURN-framed transport: never used for fast egress"),
    Hook(SRTP, "_srtp", Use.READ, "the libsrtp context of a pylibsrtp session"),
    Hook(SRTP_LIB, "srtp_protect", Use.CALLED, "libsrtp: protect RTP in place"),
    Hook(SRTP_LIB, "srtp_protect_rtcp", Use.CALLED, "libsrtp: protect RTCP in place"),
    # -- fast ingress (edge.sfu.ingress): what the receive chain does, in the socket callback
    Hook(
        STUN,
        "datagram_received",
        Use.WRAPPED,
        "fast ingress: SRTP from the nominated pair is taken in the socket callback instead "
        "of aioice's queue and aiortc's receive coroutines",
        ("data", "addr"),
    ),
    Hook(CONNECTION, "_protocols", Use.READ, "the ICE connection's protocols (one per socket)"),
    Hook(
        CONNECTION,
        "data_received",
        Use.WRAPPED,
        "what aioice queues for aiortc's receive task (DTLS, and datagrams the fast ingress "
        "does not take) is bounded: a flood the loop cannot drain is dropped, not queued "
        "without a limit (THREATS C4)",
        ("data", "component"),
    ),
    Hook(CONNECTION, "_queue", Use.READ, "aioice's receive queue, whose length is bounded"),
    Hook(
        DTLS,
        "_rx_srtp",
        Use.READ,
        "the transport's inbound SRTP session: fast ingress unprotects with its libsrtp "
        "context (same keys, replay window and rollover state as _recv_next)",
    ),
    Hook(
        DTLS,
        "_rtp_header_extensions_map",
        Use.READ,
        "the transport's header-extension map, configured from the negotiated parameters",
    ),
    Hook(
        EXTENSIONS_MAP,
        "_HeaderExtensionsMap__ids",
        Use.READ,
        "the negotiated extension ids: fast ingress reads the audio level at its id",
    ),
    Hook(
        ROUTER,
        "payload_type_table",
        Use.READ,
        "fast ingress routes as route_rtp does: the SSRC's receiver must take the payload type",
    ),
    Hook(
        DTLS,
        "_RTCDtlsTransport__rx_bytes",
        Use.WRITTEN,
        "the transport's received-bytes statistic counts fast-ingress packets too",
    ),
    Hook(
        DTLS,
        "_RTCDtlsTransport__rx_packets",
        Use.WRITTEN,
        "the transport's received-packets statistic counts fast-ingress packets too",
    ),
    Hook(SRTP_LIB, "srtp_unprotect", Use.CALLED, "libsrtp: unprotect RTP in place"),
    Hook(SRTP_LIB, "srtp_unprotect_rtcp", Use.CALLED, "libsrtp: unprotect RTCP in place"),
    Hook(
        ROUTER,
        "senders",
        Use.READ,
        "fast ingress routes RTCP as route_rtcp does, from the router's tables (SSRC -> "
        "sender; receivers from ssrc_table); tests/test_sfu_ingress.py compares the two",
    ),
    Hook(
        TRANSCEIVER,
        "_headerExtensions",
        Use.READ,
        "header-extension ids negotiated on a subscriber transceiver (mid, audio level, "
        "abs-send-time are rewritten per slot)",
    ),
)


class HookError(RuntimeError):
    pass


def _resolve(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(import_module(module), name)


def check_version() -> None:
    installed = version("aiortc")
    if installed != PINNED_AIORTC:
        raise HookError(
            f"aiortc {installed} is installed, but edge.sfu hooks aiortc {PINNED_AIORTC}'s "
            "private internals: re-check every entry of edge.sfu.hooks.HOOKS against the new "
            "version before changing the pin"
        )
    for package, pinned in PINNED_OTHERS.items():
        installed = version(package)
        if installed != pinned:
            raise HookError(
                f"{package} {installed} is installed, but edge.sfu's fast egress uses "
                f"{package} {pinned}'s private internals: re-check the hooks of "
                "edge.sfu.hooks.HOOKS on it before changing the pin"
            )


def check_hooks(instances: dict[str, object]) -> None:
    """Raise :class:`HookError` naming the first hooked attribute that moved.

    ``instances`` maps an owner in :data:`HOOKS` to a live instance of it, for the
    attributes aiortc sets in ``__init__`` (see :func:`sample_instances`).
    """
    check_version()
    for hook in HOOKS:
        owner = _resolve(hook.owner)
        target = instances.get(hook.owner, owner) if hook.parameters is None else owner
        if isinstance(getattr(owner, hook.attribute, None), property):
            target = owner  # a property is looked up on the class, never run here
        if not hasattr(target, hook.attribute):
            raise HookError(
                f"{hook.owner}.{hook.attribute} is gone: edge.sfu needs it ({hook.why}); "
                f"the hooks were written for aiortc {PINNED_AIORTC}, "
                f"installed is {version('aiortc')}"
            )
        if hook.synchronous and "await" in inspect.getsource(getattr(owner, hook.attribute)):
            raise HookError(
                f"{hook.owner}.{hook.attribute} awaits now: edge.sfu runs it to its end at once "
                f"({hook.why}); written for aiortc {PINNED_AIORTC}, installed is "
                f"{version('aiortc')}"
            )
        if hook.called_in is not None:
            cls, method, call = hook.called_in
            if call not in inspect.getsource(getattr(_resolve(cls), method)):
                raise HookError(
                    f"{cls}.{method} no longer calls {call}: edge.sfu swaps "
                    f"{hook.owner}.{hook.attribute} "
                    f"({hook.why}); written for aiortc {PINNED_AIORTC}, "
                    f"installed is {version('aiortc')}"
                )
        if hook.parameters is not None:
            signature = inspect.signature(getattr(owner, hook.attribute))
            names = tuple(signature.parameters)[1:]
            if names != hook.parameters:
                raise HookError(
                    f"{hook.owner}.{hook.attribute} now takes {names}, edge.sfu calls it with "
                    f"{hook.parameters} (written for aiortc {PINNED_AIORTC}, installed is "
                    f"{version('aiortc')})"
                )


_verified = False


async def verify_once() -> None:
    """:func:`check_hooks` on :func:`sample_instances`, once per process (aiortc does not
    change under a running process; a worker opens many rooms, 25 at once after a move)."""
    global _verified
    if not _verified:
        check_hooks(await sample_instances())
        _verified = True


async def sample_instances() -> dict[str, object]:
    """One live instance of each hooked class (needs a running event loop)."""
    import os

    from aioice import Candidate
    from aioice.ice import CandidatePair, StunProtocol
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.rtcrtpreceiver import StreamStatistics
    from pylibsrtp import Policy, Session

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transport = None
    try:
        transceiver = pc.addTransceiver("video")
        dtls = transceiver.receiver.transport
        connection = dtls.transport._connection
        transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: StunProtocol(connection), local_addr=("127.0.0.1", 0)
        )
        protocol.local_candidate = Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
        remote = Candidate("2", 1, "udp", 1, "127.0.0.1", 9, "host")
        return {
            RECEIVER: transceiver.receiver,
            SENDER: transceiver.sender,
            DTLS: dtls,
            TRANSCEIVER: transceiver,
            STATISTICS: StreamStatistics(90_000),
            ROUTER: dtls._rtp_router,
            ICE: dtls.transport,
            CONNECTION: connection,
            PAIR: CandidatePair(protocol, remote),
            STUN: protocol,
            EXTENSIONS_MAP: dtls._rtp_header_extensions_map,
            SRTP: Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND)),
        }
    finally:
        if transport is not None:
            transport.close()
        await pc.close()


# -- the accesses themselves ----------------------------------------------------------------

RtpHandler = Callable[[RtpPacket, int], Awaitable[None]]
RtcpHandler = Callable[[AnyRtcpPacket], Awaitable[None]]


def replace_receiver_rtp(receiver: Any, handler: RtpHandler) -> None:
    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        await handler(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle


_SFU_SIDE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "edge.sfu.hooks: what aiortc makes now is the SFU's", default=False
)


class _EstimatorUnlessSfu:
    """Stands in for aiortc's ``RemoteBitrateEstimator`` in its receiver module: a receiver
    made within :func:`sfu_side` gets none (aiortc's receiver takes ``None``, as for audio),
    any other receiver in the process (a client's, a test's) a real one."""

    def __init__(self, original: Callable[[], Any]) -> None:
        self.original = original

    def __call__(self) -> Any:
        return None if _SFU_SIDE.get() else self.original()


CERTIFICATE_LIFE = 86_400.0  # seconds a worker's DTLS certificate serves new connections


class _CertificateUnlessSfu:
    """Stands in for ``RTCCertificate`` where aiortc's peer connection makes its own: one
    made within :func:`sfu_side` gets the process's shared certificate (made anew after
    :data:`CERTIFICATE_LIFE`), any other a fresh one as aiortc makes it. The certificate is
    only the DTLS identity the SDP's fingerprint pins; each handshake still agrees keys of
    its own (ECDHE), and the private key never leaves the process."""

    def __init__(self, original: Any) -> None:
        self.original = original
        self.shared: Any = None
        self.made = 0.0

    def generateCertificate(self) -> Any:  # noqa: N802 (aiortc's name)
        if not _SFU_SIDE.get():
            return self.original.generateCertificate()
        now = time.monotonic()
        if self.shared is None or now - self.made >= CERTIFICATE_LIFE:
            self.shared = _SharedCertificate.generateCertificate()
            self.made = now
        return self.shared


class _SharedCertificate(RTCCertificate):
    """An ``RTCCertificate`` whose fingerprints are hashed once (aiortc hashes them again
    for every description of every connection)."""

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key, cert)
        self._fingerprints = super().getFingerprints()

    def getFingerprints(self) -> list[Any]:  # noqa: N802 (aiortc's name)
        return list(self._fingerprints)


def _swap(module_name: str, name: str, stand_in: type) -> None:
    module = import_module(module_name)
    original = getattr(module, name)
    if not isinstance(original, stand_in):
        setattr(module, name, stand_in(original))


@contextlib.contextmanager
def sfu_side() -> Iterator[None]:
    """Within it (in this task, across its awaits: a context variable), the receivers aiortc
    makes hold no REMB estimator and the peer connections it makes share the process's
    DTLS certificate (see :data:`HOOKS`)."""
    _swap(ESTIMATOR_MODULE, "RemoteBitrateEstimator", _EstimatorUnlessSfu)
    _swap(CERTIFICATE_MODULE, "RTCCertificate", _CertificateUnlessSfu)
    token = _SFU_SIDE.set(True)
    try:
        yield
    finally:
        _SFU_SIDE.reset(token)


def wrap_receiver_rtcp(receiver: Any, handler: RtcpHandler) -> Callable[[AnyRtcpPacket], None]:
    """aiortc's handling of a publisher's RTCP, then ``handler``; returns aiortc's handling
    alone as a plain function (it never awaits: :func:`run_now`), for the fast ingress."""
    original = receiver._handle_rtcp_packet

    async def handle(packet: AnyRtcpPacket) -> None:
        await original(packet)
        await handler(packet)

    receiver._handle_rtcp_packet = handle

    def note(packet: AnyRtcpPacket) -> None:
        run_now(original(packet))

    return note


def receiver_statistics(receiver: Any) -> dict[int, Any]:
    streams: dict[int, Any] = receiver._RTCRtpReceiver__remote_streams
    return streams


async def send_pli(receiver: Any, media_ssrc: int) -> None:
    await receiver._send_rtcp_pli(media_ssrc)


async def send_nack(receiver: Any, media_ssrc: int, lost: list[int]) -> None:
    await receiver._send_rtcp_nack(media_ssrc, lost)


async def send_receiver_rtcp(receiver: Any, packet: AnyRtcpPacket) -> None:
    await receiver._send_rtcp(packet)


def forget_ssrc(receiver: Any, ssrc: int) -> None:
    """Unbind ``ssrc`` from ``receiver`` in its transport's RTP router, if bound to it."""
    table: dict[int, Any] = receiver.transport._rtp_router.ssrc_table
    if table.get(ssrc) is receiver:
        del table[ssrc]


def replace_sender_rtcp(sender: Any, handler: RtcpHandler) -> None:
    async def handle(packet: AnyRtcpPacket) -> None:
        await handler(packet)

    sender._handle_rtcp_packet = handle


def send_receiver_rtcp_by(receiver: Any, send: Callable[[bytes], bool]) -> None:
    """The receiver's RTCP (its periodic receiver reports, PLI, NACK, REMB) goes to
    ``send(data)`` (a fast egress: False when it declines), else to aiortc's path, as its
    own ``_send_rtcp`` does it (a transport not connected: dropped)."""
    transport = receiver.transport

    async def send_rtcp(packet: AnyRtcpPacket) -> None:
        data = bytes(packet)
        if not send(data):
            with contextlib.suppress(ConnectionError):
                await transport._send_rtp(data)

    receiver._send_rtcp = send_rtcp


def silence_sender_reports(sender: Any) -> None:
    """Only the BYE of a subscriber slot's sender goes out: its periodic sender report would
    say it sent nothing (the forwarder re-issues the publisher's instead) and its SDES names
    the SFU; each one cost a send on aiortc's slow path, ~700 a second at 30 rooms. A sender
    not started yet gets an RTCP task that does not wake up at all until it is stopped."""
    original = sender._send_rtcp

    async def send(packets: list[AnyRtcpPacket]) -> None:
        kept = [packet for packet in packets if isinstance(packet, RtcpByePacket)]
        if kept:
            await original(kept)

    sender._send_rtcp = send
    if sender._RTCRtpSender__started:
        return  # aiortc's loop runs already: its reports are dropped above

    async def run_rtcp() -> None:
        sender._RTCRtpSender__rtcp_started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.get_running_loop().create_future()  # until stop() cancels it
        await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])
        sender._RTCRtpSender__rtcp_exited.set()

    sender._run_rtcp = run_rtcp


def sender_ssrcs(sender: Any) -> tuple[int, int]:
    """(media SSRC, RTX SSRC) of a sender."""
    return int(sender._ssrc), int(sender._rtx_ssrc)


def rtp_sink(transport: Any) -> Callable[[bytes], Awaitable[None]]:
    """The coroutine function that protects and sends RTP/RTCP bytes on a DTLS transport."""
    sink: Callable[[bytes], Awaitable[None]] = transport._send_rtp
    return sink


def negotiated(transceiver: Any) -> tuple[list[Any], list[Any]]:
    """(codecs, header extensions) negotiated on a transceiver."""
    return list(transceiver._codecs), list(transceiver._headerExtensions)


# -- fast egress (edge.sfu.egress) ----------------------------------------------------------


def send_rtp_is_aiortcs() -> bool:
    """Whether ``RTCDtlsTransport._send_rtp`` is aiortc's own (not wrapped by a meter)."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    function = RTCDtlsTransport._send_rtp
    return bool(
        function.__module__ == "aiortc.rtcdtlstransport"
        and function.__qualname__ == "RTCDtlsTransport._send_rtp"
    )


class _Resolved:
    """A DTLS transport as it was when resolved: its state, one of its SRTP sessions
    (outbound or inbound) and the nominated ICE pair. ``fast`` is False when that state
    does not allow the fast path (the reason is in ``why``); when it does, ``ctx`` is the
    session's libsrtp context and ``address`` the pair's remote address."""

    __slots__ = ("dtls", "state", "nominated", "session", "pair", "fast", "why", "ctx", "address")

    def __init__(self, dtls: Any, session: Any) -> None:
        from aiortc.rtcdtlstransport import State

        self.dtls = dtls
        self.state: Any = dtls._state
        self.nominated: dict[int, Any] = dtls.transport._connection._nominated
        self.session: Any = session
        self.pair: Any = self.nominated.get(1)
        self.fast = False
        self.ctx: Any = None
        self.address: tuple[str, int] = ("", 0)
        if self.state is not State.CONNECTED or session is None:
            self.why = "DTLS is not connected"
        elif self.pair is None:
            self.why = "no nominated ICE pair"
        else:
            self.why = ""

    def _open(self) -> None:
        self.why = ""
        self.fast = True
        self.ctx = self.session._srtp[0]
        self.address = self.pair.remote_addr


class Route(_Resolved):
    """Where and how one DTLS transport's RTP goes (fast egress): the outbound session,
    and the nominated pair's datagram ``sendto`` (not for a TURN relay pair)."""

    __slots__ = ("sendto", "sender")

    def __init__(self, dtls: Any) -> None:
        from aioice.turn import TurnTransport

        super().__init__(dtls, dtls._tx_srtp)
        self.sendto: Callable[[bytes, tuple[str, int]], None] | None = None
        self.sender: Any = None  # edge.sfu._sendpath.Sender, where it is built
        if self.why:
            return
        transport = getattr(self.pair.protocol, "transport", None)
        if self.pair.local_candidate.type == "relay":
            self.why = "the nominated pair is a TURN relay"
        elif transport is None or isinstance(transport, TurnTransport):
            self.why = "the nominated pair has no plain datagram transport"
        elif transport.is_closing():
            self.why = "the nominated pair's socket is closing"
        else:
            self._open()
            self.sendto = transport.sendto
            self.sender = _sender(self.ctx, transport, self.address)

    # Egress.send checks that the transport is still in this state (``_tx_srtp``, the
    # nominated pair, ``_state``, by identity: egress.current) and counts
    # ``__tx_bytes``/``__tx_packets`` itself, written out: it runs for every forwarded
    # copy. Those names are in HOOKS.


def _sender(ctx: Any, transport: Any, address: tuple[str, int]) -> Any:
    """A ``Sender`` of the compiled ``edge.sfu._sendpath`` for this route (libsrtp's
    protect functions and ``ctx`` by address, the socket's descriptor), or None where that
    module is not built (pure Python: the egress protects through cffi and sends through
    the transport)."""
    try:
        from edge.sfu import _sendpath
    except ImportError:
        return None
    socket = transport.get_extra_info("socket")
    if socket is None:
        return None
    return _sendpath.Sender(**sender_arguments(ctx, socket.fileno(), address))


def _unprotector(ctx: Any) -> Any:
    """An ``Unprotector`` of the compiled ``edge.sfu._sendpath`` for an inbound libsrtp
    context, or None where that module is not built (the ingress unprotects through cffi)."""
    try:
        from edge.sfu import _sendpath
    except ImportError:
        return None
    return _sendpath.Unprotector(**unprotector_arguments(ctx))


def unprotector_arguments(ctx: Any) -> dict[str, int]:
    """What ``edge.sfu._sendpath.Unprotector`` takes for an inbound libsrtp context: libsrtp's
    unprotect functions and the context, by address."""
    return {
        "unprotect": _address_of("srtp_unprotect"),
        "unprotect_rtcp": _address_of("srtp_unprotect_rtcp"),
        "ctx": _address_of(ctx),
    }


def _address_of(what: Any) -> int:
    """The address of a libsrtp function of pylibsrtp's binding (by name), or of a cdata
    (a libsrtp context)."""
    from pylibsrtp._binding import ffi, lib

    cdata = ffi.addressof(lib, what) if isinstance(what, str) else what
    return int(ffi.cast("uintptr_t", cdata))


def sender_arguments(ctx: Any, fd: int, address: tuple[str, int]) -> dict[str, Any]:
    """What ``edge.sfu._sendpath.Sender`` takes for a libsrtp context (pylibsrtp's ``srtp_t``
    cdata), a socket descriptor and a remote address: the functions and the context by
    address, the packet limits of pylibsrtp's buffer."""
    from pylibsrtp import SRTP_MAX_SRTCP_TRAILER_LEN, SRTP_MAX_TRAILER_LEN

    from edge.sfu import _sendpath

    return {
        "protect": _address_of("srtp_protect"),
        "protect_rtcp": _address_of("srtp_protect_rtcp"),
        "ctx": _address_of(ctx),
        "fd": fd,
        "host": address[0],
        "port": address[1],
        "rtp_limit": _sendpath.BUFFER_SIZE - SRTP_MAX_TRAILER_LEN,
        "rtcp_limit": _sendpath.BUFFER_SIZE - SRTP_MAX_SRTCP_TRAILER_LEN,
    }


def srtp_library() -> tuple[Any, Any, Any]:
    """(cffi ``ffi``, libsrtp ``srtp_protect``, ``srtp_protect_rtcp``) of pylibsrtp."""
    from pylibsrtp._binding import ffi, lib

    return ffi, lib.srtp_protect, lib.srtp_protect_rtcp


# -- fast ingress (edge.sfu.ingress) ---------------------------------------------------------


class IngressRoute(_Resolved):
    """How one DTLS transport's inbound SRTP is taken (fast ingress): the inbound session,
    the router's tables and the negotiated extension ids."""

    __slots__ = ("ssrc_table", "senders", "payload_types", "extension_ids", "unprotector")

    def __init__(self, dtls: Any) -> None:
        super().__init__(dtls, dtls._rx_srtp)
        router = dtls._rtp_router
        self.ssrc_table: dict[int, Any] = router.ssrc_table
        self.senders: dict[int, Any] = router.senders
        self.payload_types: dict[int, set[Any]] = router.payload_type_table
        # the ids the transport's extension map was configured with (the same object
        # ``configure`` updates at a renegotiation)
        self.extension_ids: Any = dtls._rtp_header_extensions_map._HeaderExtensionsMap__ids
        self.unprotector: Any = None  # edge.sfu._sendpath.Unprotector, where it is built
        if not self.why:
            self._open()
            self.unprotector = _unprotector(self.ctx)

    # Ingress.receive checks that the transport is still in the state this route was
    # resolved in with egress.current (compiled, as the egress's), and counts RTP inline: it
    # runs for every datagram. The names are in HOOKS.

    def count(self, size: int) -> None:
        """Count a received datagram in the transport's statistics, as ``_recv_next`` does."""
        dtls = self.dtls
        dtls._RTCDtlsTransport__rx_bytes += size
        dtls._RTCDtlsTransport__rx_packets += 1


class ReceiveQueueBound:
    """At most ``limit`` datagrams waiting in an ICE connection's receive queue.

    aioice hands every datagram that is not STUN to ``Connection.data_received``, which puts
    it on an ``asyncio.Queue`` without a limit, from any source address; aiortc's receive
    task takes them from there. Media the fast ingress takes never gets there, but DTLS and
    everything the ingress leaves do, and a participant (or anyone who can reach the port)
    sending faster than the event loop drains them would grow that queue until the worker
    runs out of memory. Beyond ``limit`` waiting, a datagram is dropped (as a full socket
    buffer drops it), counted in :attr:`dropped` and logged (the first, then every 1000th)."""

    def __init__(self, connection: Any, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a receive queue bound must be at least 1, not {limit}")
        self.limit = limit
        self.dropped = 0
        self._queue: asyncio.Queue[Any] = connection._queue
        self._original: Callable[[bytes, int], None] = connection.data_received
        connection.data_received = self.data_received

    def data_received(self, data: bytes, component: int) -> None:
        if self._queue.qsize() >= self.limit:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "ICE receive queue full (%d datagrams waiting): %d dropped so far",
                    self.limit,
                    self.dropped,
                )
            return
        self._original(data, component)


def bound_receive_queue(dtls: Any, limit: int) -> ReceiveQueueBound:
    """The bound of a DTLS transport's ICE receive queue (made on first use: a transport
    served by one ingress after another keeps its first bound)."""
    connection = dtls.transport._connection
    current = getattr(connection.data_received, "__self__", None)
    if isinstance(current, ReceiveQueueBound):
        return current
    return ReceiveQueueBound(connection, limit)


def srtp_unprotect() -> tuple[Any, Any, Any]:
    """(cffi ``ffi``, libsrtp ``srtp_unprotect``, ``srtp_unprotect_rtcp``) of pylibsrtp."""
    from pylibsrtp._binding import ffi, lib

    return ffi, lib.srtp_unprotect, lib.srtp_unprotect_rtcp


async def handle_rtcp(recipient: Any, packet: AnyRtcpPacket) -> None:
    """An RTCP packet to a receiver's or sender's own handling, as ``_handle_rtcp_data``."""
    await recipient._handle_rtcp_packet(packet)


def run_now(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run to its end, here and now, a coroutine of aiortc that never awaits (a hook marked
    ``synchronous``, which :func:`check_hooks` checks)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise HookError(f"{coroutine!r} suspended: it awaits something now, edge.sfu.hooks assumed not")


def ice_protocols(dtls: Any) -> list[Any]:
    """The aioice protocols (one per local candidate's socket) under a DTLS transport."""
    return list(dtls.transport._connection._protocols)


DatagramCallback = Callable[[bytes, tuple[Any, ...]], None]


def wrap_datagram_received(
    protocol: Any, wrap: Callable[[DatagramCallback], DatagramCallback]
) -> None:
    """Replace a protocol's ``datagram_received`` by ``wrap(its own)``."""
    protocol.datagram_received = wrap(protocol.datagram_received)


def unwrap_datagram_received(protocol: Any) -> None:
    """Give a protocol its class's ``datagram_received`` back."""
    protocol.__dict__.pop("datagram_received", None)
