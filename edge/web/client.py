"""The web client's static files, served from ``edge/web/static/`` and nowhere else.

The page loads nothing from outside the edge: every response carries
``Content-Security-Policy: default-src 'self'`` (set for all responses in :mod:`edge.web.app`),
so an inline script or a reference to another host is refused by the browser. File names
come from the URL and are resolved by Quart's ``send_from_directory``, which refuses any path
outside the directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from quart import Response, send_from_directory
from werkzeug.exceptions import NotFound

from edge.web.api import Access, Call, Component
from edge.web.errors import ApiError

STATIC_DIR: Final = Path(__file__).parent / "static"

component = Component("client", tag="web client")


@component.route(
    "/", "GET", summary="The web client", access=Access.PUBLIC, content_type="text/html"
)
async def index(call: Call) -> Response:
    response = await send_from_directory(STATIC_DIR, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@component.route(
    "/static/<path:filename>",
    "GET",
    summary="The web client's files (scripts, styles, images)",
    access=Access.PUBLIC,
    content_type="application/octet-stream",
    errors=(404,),
)
async def static_file(call: Call, filename: str) -> Response:
    try:
        response = await send_from_directory(STATIC_DIR, filename)
    except NotFound:
        raise ApiError(404, "no such file") from None
    response.headers["Cache-Control"] = "no-cache"
    return response
