"""What one UDP datagram costs the sender on this host: ``sendto`` against ``sendmmsg``.

    .venv/bin/python bench/udp_send.py [--packets N] [--size BYTES]

The SFU sends every forwarded copy with one ``sendto`` (``edge.sfu.egress``). This measures
whether batching them would pay: the sender pinned to CPU 0, a drain process on CPU 1
reading three sockets on loopback; CPU time (user + system) of the sender per datagram for
``os.getppid`` (a system call's floor), ``socket.sendto`` and libc's ``sendmmsg`` (through
ctypes: Python's ``socket`` has no ``sendmmsg``) in batches of 3, 16 and 64 to the three
addresses in turn. On loopback the sender's system time includes the kernel delivering each
datagram into the receiver's socket, as it does for the SFU under ``bench/sfu.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import multiprocessing
import os
import selectors
import socket
import time
from multiprocessing.synchronize import Event

PORTS = (41001, 41002, 41003)


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


class SockaddrIn(ctypes.Structure):
    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_uint16),
        ("sin_addr", ctypes.c_uint32),
        ("sin_zero", ctypes.c_char * 8),
    ]


def drain(ready: Event, stop: Event) -> None:
    os.sched_setaffinity(0, {1})
    selector = selectors.DefaultSelector()
    for port in PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    ready.set()
    while not stop.is_set():
        for key, _ in selector.select(0.1):
            try:
                while True:
                    key.fileobj.recv(2048)  # type: ignore[union-attr]
            except BlockingIOError:
                pass


def per_packet(seconds: float, packets: int) -> str:
    return f"{seconds / packets * 1e6:6.2f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=120_000)
    parser.add_argument("--size", type=int, default=1200)
    args = parser.parse_args()
    count, size = args.packets, args.size
    os.sched_setaffinity(0, {0})
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    drainer = multiprocessing.Process(target=drain, args=(ready, stop))
    drainer.start()
    ready.wait()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        data = os.urandom(size)
        addresses = [("127.0.0.1", port) for port in PORTS]
        print(f"# {count} datagrams of {size} bytes to 3 loopback sockets; CPU time per datagram")

        start = time.process_time()
        for _ in range(count):
            os.getppid()
        print(f"getppid (system call floor)  {per_packet(time.process_time() - start, count)}")

        start = time.process_time()
        for i in range(count):
            sock.sendto(data, addresses[i % 3])
            if i % 64 == 0:
                time.sleep(0)  # let the drain keep up
        print(f"sendto                       {per_packet(time.process_time() - start, count)}")

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buffer = ctypes.create_string_buffer(data, size)
        loopback = int.from_bytes(socket.inet_aton("127.0.0.1"), "little")
        for batch in (3, 16, 64):
            names = (SockaddrIn * batch)()
            vectors = (IoVec * batch)()
            messages = (MMsgHdr * batch)()
            for j in range(batch):
                names[j].sin_family = socket.AF_INET
                names[j].sin_port = socket.htons(PORTS[j % 3])
                names[j].sin_addr = loopback
                vectors[j].iov_base = ctypes.addressof(buffer)
                vectors[j].iov_len = size
                messages[j].msg_hdr.msg_name = ctypes.addressof(names[j])
                messages[j].msg_hdr.msg_namelen = ctypes.sizeof(SockaddrIn)
                messages[j].msg_hdr.msg_iov = ctypes.pointer(vectors[j])
                messages[j].msg_hdr.msg_iovlen = 1
            sent, rounds = 0, 0
            start = time.process_time()
            while sent < count:
                result = libc.sendmmsg(sock.fileno(), messages, batch, 0)
                if result < 0:
                    time.sleep(0.001)  # the socket's buffer is full: let the drain read
                    continue
                sent += result
                rounds += 1
                if rounds % 8 == 0:
                    time.sleep(0)
            elapsed = time.process_time() - start
            print(f"sendmmsg, {batch:2d} a call          {per_packet(elapsed, sent)}")
    finally:
        stop.set()
        drainer.join()


if __name__ == "__main__":
    main()
