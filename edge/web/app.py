"""The edge's Quart app: components, security headers, errors, metrics, access log.

Theory of operation
-------------------
:func:`create_app` builds the app around a :class:`~edge.web.state.WebState` and registers
the :data:`COMPONENTS` (login, administration, directory, push, operations, web client); a
later component (chat) is one more :class:`~edge.web.api.Component` given in ``components``
or added with :func:`edge.web.api.register` — its blueprint and its OpenAPI entries in one
call. Routes served by the device listener are listed too (:func:`describe`).

Every response, error pages and static files included, carries the headers of
:data:`SECURITY_HEADERS`: a Content-Security-Policy of ``default-src 'self'`` (no inline
script, nothing from another host), no framing, no sniffing, no referrer, HSTS; API answers
are ``no-store``. Each request is timed and counted by route rule and status, and logged as
one JSON line (method, route, status, milliseconds, address; never a body, query string,
cookie or header). Request bodies are capped by ``MAX_CONTENT_LENGTH`` (``[web]
max_body_bytes``; 413 above it).

While serving, a maintenance task runs hourly: expired sessions, forgotten throttle counters
and old audit rows are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable
from typing import Final

from hypercorn.typing import ASGISendCallable
from quart import Quart, Response, g, request
from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request

from edge.web import (
    admin,
    calls,
    chat,
    chat_messages,
    client,
    directory,
    errors,
    guests,
    health,
    login,
    presence_api,
    uploads,
    ws,
)
from edge.web.api import (
    BODY_CAPS_KEY,
    ROUTES_KEY,
    STATE_KEY,
    Component,
    client_address,
    register,
)
from edge.web.state import WebState

log = logging.getLogger("edge.web.access")

COMPONENTS: Final = (
    login.component,
    admin.component,
    directory.component,
    ws.component,
    health.component,
    client.component,
    chat.component,
    chat_messages.component,
    uploads.component,
    presence_api.component,
    calls.component,
    guests.component,
)

CSP: Final = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer the Fetch spec lets a browser send
    # "Origin: null" on same-origin POSTs, which the Origin check (A5) must refuse.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self), "
    "geolocation=(), payment=(), usb=()",
}
MAINTENANCE_SECONDS: Final = 3600


class _Connection(ASGIHTTPConnection):
    """Quart's HTTP connection, with a body cap of its own for raw-body routes (uploads).

    Quart fixes a request's body cap when it makes the request, before routing; a route
    declared with ``body_cap`` (:class:`~edge.web.api.RouteSpec`) gets a body with that cap
    instead of ``MAX_CONTENT_LENGTH`` here, before any byte is buffered.
    """

    def _create_request_from_scope(self, send: ASGISendCallable) -> Request:
        request = super()._create_request_from_scope(send)
        caps: dict[tuple[str, str], int] | None = self.app.extensions.get(BODY_CAPS_KEY)
        cap = caps.get((request.method, request.path)) if caps else None
        if cap is not None:
            request.body = request.body_class(request.content_length, cap)
        return request


class _Quart(Quart):
    asgi_http_class = _Connection


def describe(app: Quart, component: Component) -> None:
    """List ``component``'s routes in ``app``'s OpenAPI document without serving them here
    (they are served by another listener)."""
    app.extensions.setdefault(ROUTES_KEY, []).extend(component.routes)


def base_app(name: str, state: WebState) -> Quart:
    """An app with the state, the limits, the JSON errors and the headers: no routes yet."""
    app = _Quart(name, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = state.settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30
    app.extensions[STATE_KEY] = state
    app.extensions[ROUTES_KEY] = []
    errors.install(app)

    @app.before_request
    async def started() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def finished(response: Response) -> Response:
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        state.metrics.requests.labels(rule, request.method, str(response.status_code)).inc()
        state.metrics.latency.labels(rule).observe(elapsed)
        log.info(
            "request",
            extra={
                "fields": {
                    "app": name,
                    "method": request.method,
                    "route": rule,
                    "status": response.status_code,
                    "ms": round(elapsed * 1000, 1),
                    "address": client_address(request.scope),
                }
            },
        )
        return response

    return app


def create_app(
    state: WebState,
    components: Iterable[Component] = COMPONENTS,
    *,
    described: Iterable[Component] = (),
) -> Quart:
    app = base_app("zastava.edge", state)
    components = tuple(components)
    for component in components:
        register(app, component)
    for component in described:
        describe(app, component)
    if chat_messages.component in components:
        state.hub.frame_handlers["post"] = functools.partial(chat_messages.post_frame, state)
    maintenance: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start() -> None:
        state.bind(asyncio.get_running_loop())
        state.start_live()
        maintenance.append(asyncio.create_task(_maintain(state)))

    @app.after_serving
    async def stop() -> None:
        state.hub.close_all("the server is stopping")
        for task in maintenance:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        maintenance.clear()
        await state.stop_live()

    return app


async def _maintain(state: WebState) -> None:
    while True:
        try:
            removed = await state.run(state.maintain)
            if removed:
                log.info("maintenance", extra={"fields": {"removed": removed}})
        except Exception:
            log.exception("maintenance failed")
        await asyncio.sleep(MAINTENANCE_SECONDS)
