"""The web layer's Prometheus metrics, in a registry of its own per app (tests run many apps).

Labels are bounded: the route *rule* (``/api/admin/accounts/<login>``, never the raw path),
the method, the status; login outcomes by method and :class:`~edge.auth.results.Reason`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "zastava_http_requests",
            "HTTP requests answered, by route rule, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "zastava_http_request_duration_seconds",
            "Time from request to response, by route rule.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.logins = Counter(
            "zastava_logins",
            "Login attempts by method and outcome (the audit reason).",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.websockets = Gauge(
            "zastava_websocket_connections",
            "Open WebSocket connections.",
            registry=self.registry,
        )
        self.websocket_closes = Counter(
            "zastava_websocket_closes",
            "WebSocket connections closed by the server, by close code.",
            ["code"],
            registry=self.registry,
        )
        self.frames = Counter(
            "zastava_websocket_frames",
            "Client WebSocket frames that ask for work (a chat post), by type and status.",
            ["type", "status"],
            registry=self.registry,
        )
        self.hash_waiting = Gauge(
            "zastava_password_hash_waiting",
            "Requests waiting for a password-hashing slot.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
