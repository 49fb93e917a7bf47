"""The web client's static files, served from ``edge/web/static/`` and nowhere else.

The page loads nothing from outside the edge: every response carries
``Content-Security-Policy: default-src 'self'`` (set for all responses in :mod:`edge.web.app`),
so an inline script or a reference to another host is refused by the browser. File names
come from the URL and are resolved by Werkzeug's ``safe_join``, which refuses any path
outside the directory.

The files are small (the client's modules, a style sheet, an icon): each is read whole in a
worker thread and answered as bytes, with an ``ETag`` of its content so that a page load
revalidates (``Cache-Control: no-cache``) and gets ``304`` for what did not change. (Quart's
``send_from_directory`` opens the file through ``aiofiles`` in the answer itself; a request
cancelled at the wrong moment left that file open until the garbage collector found it.)
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from typing import Final

from quart import Response, request
from werkzeug.security import safe_join

from edge.web.api import Access, Call, Component
from edge.web.errors import ApiError

STATIC_DIR: Final = Path(__file__).parent / "static"
TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

component = Component("client", tag="web client")


def _read(name: str) -> tuple[bytes, str] | None:
    """Blocking: the file's bytes and media type, or ``None`` (absent, or outside)."""
    joined = safe_join(str(STATIC_DIR), name)
    if joined is None:
        return None
    path = Path(joined)
    if not path.is_file():
        return None
    media_type = TYPES.get(path.suffix.lower())
    if media_type is None:
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.read_bytes(), media_type


async def _serve(call: Call, name: str) -> Response:
    found = await call.state.run(_read, name)
    if found is None:
        raise ApiError(404, "no such file")
    data, media_type = found
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    if request.headers.get("If-None-Match") == etag:
        response = Response(b"", status=304)
    else:
        response = Response(data, content_type=media_type)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"
    return response


@component.route(
    "/", "GET", summary="The web client", access=Access.PUBLIC, content_type="text/html"
)
async def index(call: Call) -> Response:
    return await _serve(call, "index.html")


@component.route(
    "/static/<path:filename>",
    "GET",
    summary="The web client's files (scripts, styles, images)",
    access=Access.PUBLIC,
    content_type="application/octet-stream",
    errors=(404,),
)
async def static_file(call: Call, filename: str) -> Response:
    return await _serve(call, filename)
