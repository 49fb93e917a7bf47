"""The node end of the signalling channel (paramiko adapter over :mod:`sync.signal`).

A node opens it on the same SSH connection as its SFTP session. It receives doorbells
("a bundle is waiting"), signalling envelopes from other sites, errors, and the relay's
audit checkpoints, which it checks against the last one it trusts every time it connects.
"""

from __future__ import annotations

import time

import paramiko

from sync.relay.audit import CheckpointWitness
from sync.relay.checkpoint import Checkpoint
from sync.signal import (
    MAX_PAYLOAD,
    Frame,
    FrameError,
    FrameReader,
    FrameType,
    checkpoint_request,
    parse_checkpoint,
)

SUBSYSTEM = "zastava-signal"


class SignalClient:
    def __init__(self, transport: paramiko.Transport) -> None:
        self.channel = transport.open_session()
        self.channel.invoke_subsystem(SUBSYSTEM)
        self._reader = FrameReader()
        self._queue: list[Frame] = []

    def send(self, frame: Frame) -> None:
        self.channel.sendall(bytes(frame))

    def send_envelope(self, bundle: bytes) -> None:
        self.send(Frame(FrameType.ENVELOPE, bundle))

    def recv(self, timeout: float) -> Frame | None:
        """The next frame, or None if none arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._queue:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.channel.settimeout(left)
            try:
                data = self.channel.recv(MAX_PAYLOAD + 5)
            except TimeoutError:
                return None
            if not data:
                raise EOFError("the relay closed the signalling channel")
            self._queue += self._reader.feed(data)
        return self._queue.pop(0)

    def wait_for(self, ftype: FrameType, timeout: float) -> Frame:
        """The next frame of ``ftype``; other frames are kept for later ``recv`` calls."""
        deadline = time.monotonic() + timeout
        skipped: list[Frame] = []
        try:
            while True:
                frame = self.recv(max(0.0, deadline - time.monotonic()))
                if frame is None:
                    raise TimeoutError(f"no {ftype.name} frame from the relay in {timeout} s")
                if frame.type is ftype:
                    return frame
                if frame.type is FrameType.ERROR and ftype is FrameType.CHECKPOINT:
                    raise FrameError(f"relay: {frame.payload.decode(errors='replace')}")
                skipped.append(frame)
        finally:
            self._queue[:0] = skipped

    def check_relay_log(self, witness: CheckpointWitness, timeout: float = 10.0) -> Checkpoint:
        """Fetch the relay's latest checkpoint and prove it extends the one we trust.

        Raises the witness's error (rollback, fork, bad signature) if it does not; the caller
        alerts the operator and stops trusting that relay.
        """
        trusted = witness.checkpoint
        self.send(checkpoint_request(trusted.size if trusted else 0))
        note, proof = parse_checkpoint(self.wait_for(FrameType.CHECKPOINT, timeout))
        return witness.update(note, proof)

    def close(self) -> None:
        self.channel.close()
