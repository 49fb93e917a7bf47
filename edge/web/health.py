"""For operators and monitoring: ``/healthz``, ``/metrics`` and the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quart import Response, current_app

from edge.web import metrics
from edge.web.api import Access, Call, Component, json_response, openapi_document, routes_of

component = Component("health", tag="operations")

API_VERSION = "1"


@dataclass(frozen=True)
class Health:
    status: str
    site: str
    db: str
    federation: dict[str, Any] | None


def _db_ok(call: Call) -> bool:
    row = call.state.db.get().execute("SELECT count(*) FROM schema_versions").fetchone()
    return bool(row and row[0] > 0)


@component.route(
    "/healthz",
    "GET",
    summary="Is the edge serving: database reachable, federation status",
    access=Access.PUBLIC,
    response=Health,
    errors=(503,),
)
async def healthz(call: Call) -> Response:
    try:
        db_ok = await call.state.run(_db_ok, call)
    except Exception:
        db_ok = False
    federation = call.state.federation
    body = Health(
        "ok" if db_ok else "failing",
        call.state.config.site,
        "ok" if db_ok else "unreachable",
        None if federation is None else federation.status(),
    )
    return json_response(body, 200 if db_ok else 503)


@component.route(
    "/metrics",
    "GET",
    summary="Prometheus metrics (from the addresses in [web] metrics_allow)",
    access=Access.METRICS,
    content_type=metrics.CONTENT_TYPE,
)
async def prometheus(call: Call) -> Response:
    return Response(call.state.metrics.exposition(), content_type=metrics.CONTENT_TYPE)


@component.route(
    "/api/openapi.json",
    "GET",
    summary="This document: every route of the edge's API",
    access=Access.PUBLIC,
)
async def openapi(call: Call) -> Response:
    document = openapi_document(
        routes_of(current_app), title=f"Zastava edge {call.state.config.site}", version=API_VERSION
    )
    return json_response(document)
