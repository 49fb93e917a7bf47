"""Send history of one subscriber stream, for answering NACKs without the publisher.

Theory of operation: every packet written to a slot is remembered by its output sequence
number in a ring of ``size`` entries (a power of two), as the header written for that
subscriber and the publisher's payload. The payload object is the one received from the
publisher, shared by every slot that forwarded it, so the history of N subscribers of one
track costs N small headers per packet, not N copies of the video. A lookup returns the
entry only if the ring slot still holds that exact sequence number.
"""

from __future__ import annotations


class SendHistory:
    __slots__ = ("_mask", "_ring")

    def __init__(self, size: int = 512) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"history size must be a power of two, not {size}")
        self._mask = size - 1
        self._ring: list[tuple[int, bytes, bytes] | None] = [None] * size

    def store(self, sequence: int, header: bytes, payload: bytes) -> None:
        self._ring[sequence & self._mask] = (sequence, header, payload)

    def get(self, sequence: int) -> tuple[bytes, bytes] | None:
        """(header, payload) of the packet sent as ``sequence``, if still held."""
        entry = self._ring[sequence & self._mask]
        if entry is None or entry[0] != sequence:
            return None
        return entry[1], entry[2]
