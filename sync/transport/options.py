"""``TransportOptions``: how a node talks to its relay (one frozen object, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sync.transport.backoff import RetryPolicy


@dataclass(frozen=True)
class TransportOptions:
    """Timeouts, the minimum rate (B9), the download cap (B8), pipelining and backoff.

    The defaults suit a LAN and a slow plant link alike; the sizes and the cipher order were
    measured on loopback (docs/bench-relay.md).
    """

    connect_timeout: float = 30.0  # TCP + SSH handshake + authentication + SFTP start
    min_rate: float = 4096.0  # bytes/s over rate_window, below which a request is cut (B9)
    rate_window: float = 20.0  # seconds; min_rate 0 disables the watchdog
    max_download_bytes: int = 256 * 1024 * 1024  # default cap of a download (B8)
    request_size: int = 128 * 1024  # bytes per SFTP read or write request
    resume_from_bytes: int = 1024 * 1024  # smaller uploads restart (one round trip less)
    pipeline_depth: int = 64  # requests in flight per transfer (8 MiB)
    batch_depth: int = 256  # requests in flight in a batch (upload_many, fetch_many...)
    window_size: int = 8 * 1024 * 1024  # SSH channel window: what the relay may send unasked
    max_packet_size: int = 32 * 1024  # largest SSH channel packet the relay may send us
    # SSH ciphers in order of preference (the client's order decides); unknown ones are skipped.
    ciphers: tuple[str, ...] = ("aes128-gcm@openssh.com", "aes128-ctr", "aes256-gcm@openssh.com")
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.rate_window <= 0:
            raise ValueError("connect_timeout and rate_window must be positive")
        if self.min_rate < 0:
            raise ValueError("min_rate must not be negative")
        if self.request_size < 1024 or min(self.pipeline_depth, self.batch_depth) < 1:
            raise ValueError(
                "request_size must be at least 1024, pipeline_depth and batch_depth at least 1"
            )
        if self.max_download_bytes < 0:
            raise ValueError("max_download_bytes must not be negative")
