"""The fast egress's C sender (edge/sfu/_sendpath.c): libsrtp's protect and ``sendto`` in one
call, on real sockets and real libsrtp sessions; and the fast ingress's C unprotector.

Every datagram it sends is byte for byte what pylibsrtp's own ``Session.protect`` makes of the
same packet on a twin session (same key, same packets in the same order), and decrypts on an
inbound session; libsrtp's refusals send nothing; a socket that would block hands the
protected datagram back (a token-bucket queue on the loopback of a network namespace fills
the socket's send buffer); the sender keeps its socket when the transport's is closed. The
unprotector gives what pylibsrtp's ``Session.unprotect`` gives on a twin inbound session, and
refuses (None) what it refuses, its session's state unharmed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest

from edge.sfu import hooks, native

ROOT = Path(__file__).resolve().parent.parent

if not native.active():
    # CI builds it (scripts/bootstrap.sh runs scripts/compile_sfu.py; gcc is installed)
    assert not os.environ.get("CI"), "scripts/compile_sfu.py failed: see build/sfu-native.log"
    pytest.skip("no build of the current sources: the egress runs pure", allow_module_level=True)

from edge.sfu import _sendpath  # noqa: E402  (only where built)

KEY = bytes(range(30))  # AES-128 key + salt: a test key, nothing secret
RTP = bytes([0x80, 96, 0x12, 0x34, 0, 0, 0x10, 0, 0xCA, 0xFE, 0xBA, 0xBE])
SR = bytes.fromhex("80c80006cafebabe") + bytes(20)  # an RTCP sender report, no blocks


def session(inbound: bool = False) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(policy=pylibsrtp.Policy(key=KEY, ssrc_type=kind))


def packet(sequence: int, size: int = 200) -> bytes:
    return RTP[:2] + sequence.to_bytes(2, "big") + RTP[4:] + bytes([sequence % 251]) * size


def sender(ctx_session: pylibsrtp.Session, fd: int, to: int, **kwargs: Any) -> Any:
    """The route's arguments (edge.sfu.hooks), with any of them replaced by ``kwargs``."""
    arguments = hooks.sender_arguments(ctx_session._srtp[0], fd, ("127.0.0.1", to))
    return _sendpath.Sender(**{**arguments, **kwargs})


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


@pytest.fixture
def out() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield sock
    sock.close()


def test_its_datagrams_are_pylibsrtps_byte_for_byte_and_decrypt(
    receiver: socket.socket, out: socket.socket
) -> None:
    ours, twin, inbound = session(), session(), session(inbound=True)
    send = sender(ours, out.fileno(), receiver.getsockname()[1])
    for sequence in range(50):
        data = packet(sequence, size=10 + 20 * sequence)
        length = send.send(data)
        datagram = receiver.recv(2048)
        assert length == len(datagram)
        assert datagram == twin.protect(data)
        assert inbound.unprotect(datagram) == data
    for sequence in range(50, 60):  # the forwarder's way: its header, the payload apart
        data = packet(sequence, size=10 + 20 * sequence)
        length = send.send_parts(data[:12], data[12:])
        datagram = receiver.recv(2048)
        assert length == len(datagram) and datagram == twin.protect(data)
        assert inbound.unprotect(datagram) == data
    for _ in range(3):  # SRTCP: the index in its trailer counts on, as pylibsrtp's
        length = send.send_rtcp(SR)
        datagram = receiver.recv(2048)
        assert length == len(datagram) and datagram == twin.protect_rtcp(SR)
        assert inbound.unprotect_rtcp(datagram) == SR
    assert send.counts() == (63, 0)


def test_a_packet_libsrtp_refuses_sends_nothing(
    receiver: socket.socket, out: socket.socket
) -> None:
    send = sender(session(), out.fileno(), receiver.getsockname()[1])
    assert send.send(RTP[:3]) == 0  # shorter than an RTP header
    assert send.counts() == (0, 0)
    receiver.settimeout(0.3)
    with pytest.raises(TimeoutError):
        receiver.recv(2048)


def test_bad_arguments_are_refused_with_what_was_wrong(out: socket.socket) -> None:
    srtp = session()
    for kwargs, message in (
        ({"host": "edge.example"}, "not a numeric IPv4 or IPv6 address"),
        ({"port": 70000}, "port 70000 out of range"),
        ({"rtp_limit": 0}, "limits must be 1..1500"),
        ({"rtcp_limit": 4000}, "limits must be 1..1500"),
        ({"ctx": 0}, "null libsrtp function or context"),
    ):
        with pytest.raises(ValueError, match=message):
            sender(srtp, out.fileno(), 9, **kwargs)
    with pytest.raises(OSError):
        sender(srtp, 987654, 9)  # no such descriptor
    send = sender(srtp, out.fileno(), 9, rtp_limit=100)
    with pytest.raises(ValueError, match="a packet of 101 bytes \\(at most 100\\)"):
        send.send(bytes(101))
    with pytest.raises(TypeError):
        send.send("not bytes")
    with pytest.raises(ValueError, match="a packet of 101 bytes \\(at most 100\\)"):
        send.send_parts(bytes(12), bytes(89))  # the two parts together
    with pytest.raises(TypeError, match="takes a header and a payload \\(1 given\\)"):
        send.send_parts(bytes(12))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        send.send_parts(bytes(12), "not bytes")  # type: ignore[arg-type]
    assert sender(srtp, out.fileno(), 9, host="::1").counts() == (0, 0)


def test_it_keeps_its_socket_when_the_transport_closes_and_the_number_is_reused(
    receiver: socket.socket,
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        srtp = session()
        send = hooks._sender(srtp._srtp[0], transport, ("127.0.0.1", receiver.getsockname()[1]))
        number = transport.get_extra_info("socket").fileno()
        transport.close()
        await asyncio.sleep(0.05)  # the transport closes its socket on the next iterations
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert other.fileno() == number, "the closed socket's number is reused"
        try:
            assert send.send(packet(1)) > 0
            _, source = receiver.recvfrom(2048)
            assert source[1] == port, "sent from the transport's own socket, not another"
        finally:
            other.close()

    asyncio.run(scenario())


WOULD_BLOCK = textwrap.dedent(
    """
    import socket, sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[1] + "/tests")
    from edge.sfu import native
    assert native.active()
    from test_sfu_sendpath import packet, sender, session
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours, twin, inbound = session(), session(), session(inbound=True)
    send = sender(ours, out.fileno(), receiver.getsockname()[1])
    for sequence in range(40):
        data = packet(sequence, size=1000)
        length = send.send(data)
        expected = twin.protect(data)
        if length < 0:
            datagram = send.pending()
            assert -length == len(datagram) and datagram == expected
            assert inbound.unprotect(datagram) == data
            print("would block at", sequence)
            break
        assert length == len(expected)
    else:
        raise SystemExit("the socket never would block")
    """
)


def test_a_socket_that_would_block_hands_the_protected_datagram_back(tmp_path: Path) -> None:
    """In a namespace of its own whose loopback drains at 8 kbit/s (``tc``'s token bucket),
    the socket's 4 KiB send buffer fills after a few datagrams."""
    namespace = f"zsend-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        inside = ["ip", "netns", "exec", namespace]
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(
            [*inside, "tc", "qdisc", "add", "dev", "lo", "root", "tbf"]
            + ["rate", "8kbit", "burst", "1600", "latency", "10s"],
            check=True,
        )
        script = tmp_path / "would_block.py"
        script.write_text(WOULD_BLOCK)
        done = subprocess.run(
            [*inside, sys.executable, str(script), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "would block at" in done.stdout
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def unprotector(ctx_session: pylibsrtp.Session, **kwargs: Any) -> Any:
    arguments = hooks.unprotector_arguments(ctx_session._srtp[0])
    return _sendpath.Unprotector(**{**arguments, **kwargs})


def test_the_unprotector_reads_what_pylibsrtp_reads_and_refuses_what_it_refuses() -> None:
    outbound, ours, twin = session(), session(inbound=True), session(inbound=True)
    unprotect = unprotector(ours)
    for sequence in range(40):
        datagram = outbound.protect(packet(sequence, size=10 + 30 * sequence))
        assert (
            unprotect.rtp(datagram)
            == twin.unprotect(datagram)
            == packet(sequence, size=10 + 30 * sequence)
        )
        assert unprotect.rtp(datagram) is None  # a replay
        with pytest.raises(pylibsrtp.Error):
            twin.unprotect(datagram)
    forged = bytearray(outbound.protect(packet(40)))
    forged[20] ^= 1
    assert unprotect.rtp(bytes(forged)) is None  # authentication fails
    assert unprotect.rtp(RTP[:5]) is None  # not even a header
    report = outbound.protect_rtcp(SR)
    assert unprotect.rtcp(report) == twin.unprotect_rtcp(report) == SR
    assert unprotect.rtcp(report) is None  # a replayed SRTCP index
    # the session's state is unharmed by the refusals: the next packets still read
    following = outbound.protect(packet(41))
    assert unprotect.rtp(following) == twin.unprotect(following) == packet(41)


def test_the_unprotector_refuses_bad_arguments_with_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="null libsrtp function or context"):
        unprotector(session(inbound=True), ctx=0)
    unprotect = unprotector(session(inbound=True))
    with pytest.raises(ValueError, match="a datagram of 1501 bytes \\(at most 1500\\)"):
        unprotect.rtp(bytes(1501))
    with pytest.raises(TypeError):
        unprotect.rtcp("not bytes")
