"""Errors the web layer answers with: every one is JSON ``{"error": "..."}`` with its status.

Handlers raise :class:`ApiError`; :func:`install` maps it, the auth layer's
``SessionInvalidError`` (401) and ``UnknownAccountError`` (404), the chat domain's refusals
(:func:`chat_status`: 404, 403, 413, 400, 429, 409), Werkzeug's HTTP exceptions
(404, 405, 413 from ``MAX_CONTENT_LENGTH``, 400 from a malformed request), and any other
exception (500, logged with its traceback, never shown) to JSON.
"""

from __future__ import annotations

import logging
from typing import Final

from quart import Quart, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from edge.auth.results import SessionInvalidError, UnknownAccountError
from edge.chat import (
    AttachmentUnavailableError,
    ChatError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    TooManyUploadsError,
)

log = logging.getLogger("edge.web")

_MESSAGES: Final = {
    400: "bad request",
    401: "log in first",
    403: "not allowed",
    404: "not found",
    405: "method not allowed",
    408: "request timed out",
    413: "request body too large",
    415: "unsupported media type",
    429: "too many requests; try again later",
    500: "internal error",
    503: "service unavailable",
}


class ApiError(Exception):
    """An answer other than success: ``status`` and the message the client may see."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def chat_status(e: ChatError) -> tuple[int, dict[str, str]]:
    """The HTTP status of a chat refusal (``docs/chat.md``): its message is fit to show."""
    if isinstance(e, NotFoundError):
        return 404, {}  # does not exist, or not for this user: the same answer (W4)
    if isinstance(e, ForbiddenError):
        return 403, {}
    if isinstance(e, TooLargeError):
        return 413, {}
    if isinstance(e, InvalidInputError):
        return 400, {}
    if isinstance(e, TooManyUploadsError):
        return 429, {"Retry-After": "60"}
    if isinstance(e, ConflictError | AttachmentUnavailableError):
        return 409, {}
    return 400, {}


def install(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def api_error(e: ApiError) -> Response:
        return error_response(e.status, e.message, e.headers)

    @app.errorhandler(SessionInvalidError)
    async def session_ended(e: SessionInvalidError) -> Response:
        return error_response(401, _MESSAGES[401])  # it ended between the gate and the call

    @app.errorhandler(UnknownAccountError)
    async def unknown_account(e: UnknownAccountError) -> Response:
        return error_response(404, "no such account at this edge")

    @app.errorhandler(ChatError)
    async def chat_refused(e: ChatError) -> Response:
        status, headers = chat_status(e)
        return error_response(status, str(e), headers)

    @app.errorhandler(HTTPException)
    async def http_error(e: HTTPException) -> Response:
        status = e.code or 500
        message = _MESSAGES.get(status, e.name.lower())
        if status == 413:
            message = (
                f"request body too large (at most {current_app.config['MAX_CONTENT_LENGTH']} bytes)"
            )
        return error_response(status, message)

    @app.errorhandler(Exception)
    async def internal_error(e: Exception) -> Response:
        log.error("unhandled error", exc_info=e)
        return error_response(500, _MESSAGES[500])
