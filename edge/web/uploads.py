"""Chat attachments over HTTP: the upload (a raw, streamed body) and the download.

Theory of operation
-------------------
**Upload** (``POST /api/chat/uploads``): the body is the file itself, any bytes, with
``Content-Type`` (its media type; none: ``application/octet-stream``) and ``X-File-Name``
(the name, percent-encoded UTF-8). The route is declared with a body cap of its own —
``[chat] attachment_bytes``, 25 MiB by default, instead of ``[web] max_body_bytes``
(:mod:`edge.web.app` gives the request that cap before the first byte is buffered) — and it
never holds the body whole: chunks go, in batches of :data:`WRITE_BATCH` bytes, through a
worker thread into :meth:`edge.chat.ChatService.begin_upload`'s temporary file, which hashes
and counts them (W2):

- a ``Content-Length`` over the cap is 413 before any byte is read;
- a chunked body is cut off by the chunk that passes the cap: the partial file is deleted,
  413, nothing stored;
- more than ``[chat] pending_uploads`` uploads waiting to be posted: 429 before any byte;
- a body that stalls for :data:`BODY_IDLE_SECONDS` is 408; a client that goes away leaves
  nothing behind (the partial file is deleted).

The answer's ``token`` is what a message names in ``attachments``. It is the chat's upload
token (bound to this user, single use, valid 24 hours) followed by the name and media type
the client gave, packed (``<token>.<base64url JSON [name, media type]>``), so nothing about a
pending upload is kept outside the chat's own tables; a client that edits the packed part
only renames its own file, which it could do anyway.

**Download** (``GET /api/chat/attachments/{id}``): only for members of the conversation of
the message that carries it (404 otherwise, the same as for an unknown id: W4), streamed from
the file in worker-thread reads of :data:`READ_CHUNK` bytes. An attachment posted at another
plant whose bytes have not arrived yet (``available: false`` in the message) is *pending*:
409 with ``Retry-After``, never a broken stream; the bytes come through the federation
(``docs/chat.md``, "Attachment bytes across plants") and the message is pushed again when
they are here. W1: the media type is the
uploader's, so the answer is never rendered by the browser — ``Content-Disposition:
attachment`` with the name as RFC 5987 ``filename*`` (never raw), ``X-Content-Type-Options:
nosniff``, and a ``Content-Security-Policy`` of ``sandbox`` in case anything opens it anyway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import BinaryIO, Final, TypeVar
from urllib.parse import quote, unquote

from quart import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from edge.chat import (
    AttachmentUnavailableError,
    InvalidInputError,
    NewAttachment,
    TooLargeError,
    Upload,
)
from edge.chat.content import check_file_name, check_media_type
from edge.web.api import Access, Call, Component
from edge.web.chat import answer, number
from edge.web.errors import ApiError

T = TypeVar("T")

component = Component("chat-files", tag="chat")

MAX_TOKEN: Final = 4096
WRITE_BATCH: Final = 256 * 1024
READ_CHUNK: Final = 256 * 1024
BODY_IDLE_SECONDS: Final = 30.0
FILE_NAME_HEADER: Final = "X-File-Name"
DEFAULT_MEDIA_TYPE: Final = "application/octet-stream"
DOWNLOAD_CSP: Final = "default-src 'none'; sandbox"
PENDING_RETRY_SECONDS: Final = 10


def upload_token(chat_token: str, name: str, media_type: str) -> str:
    packed = json.dumps([name, media_type], ensure_ascii=False).encode("utf-8")
    return f"{chat_token}.{base64.urlsafe_b64encode(packed).rstrip(b'=').decode('ascii')}"


def attachment_of(token: str, index: int) -> NewAttachment:
    """The :class:`~edge.chat.NewAttachment` an upload token names (400 if it is not one)."""
    chat_token, _, packed = token.partition(".")
    try:
        raw = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
        name, media_type = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        name = media_type = None
    if not chat_token or not isinstance(name, str) or not isinstance(media_type, str):
        raise InvalidInputError(
            f"attachment {index + 1}: no such upload (unknown token, already posted, or expired)"
        )
    return NewAttachment(chat_token, name, media_type)


@dataclass(frozen=True)
class UploadJson:
    """Post ``token`` in a message's ``attachments`` within 24 hours."""

    token: str
    sha256: str
    size: int
    name: str
    media_type: str
    expires_ms: int


def _file_name(limit: int) -> str:
    raw = request.headers.get(FILE_NAME_HEADER)
    if raw is None:
        raise ApiError(400, f"send the file name in {FILE_NAME_HEADER} (percent-encoded UTF-8)")
    try:
        name = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ApiError(400, f"{FILE_NAME_HEADER}: not percent-encoded UTF-8") from None
    return check_file_name(name, limit)


def _media_type() -> str:
    raw = request.headers.get("Content-Type", "").strip()
    return check_media_type(raw) if raw else DEFAULT_MEDIA_TYPE


async def _owned(fn: Callable[[], T], release: Callable[[T], object]) -> T:
    """``fn()`` in a worker thread; if this task is cancelled meanwhile, what it returns
    is released (``release``) when the thread finishes instead of being leaked."""
    future = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() else release(f.result())
        )
        raise


async def _receive(upload: Upload, idle: float) -> None:
    """Stream the request body into ``upload`` (its writes cap the size)."""
    body = request.body.__aiter__()
    pending = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(body.__anext__(), idle)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise ApiError(408, f"the upload stalled for {idle:.0f} seconds") from None
        pending += chunk
        if len(pending) >= WRITE_BATCH:
            data, pending = bytes(pending), bytearray()
            await asyncio.to_thread(upload.write, data)
    if pending:
        await asyncio.to_thread(upload.write, bytes(pending))


def _too_large(size: int, cap: int) -> ApiError:
    return ApiError(413, str(TooLargeError("attachment", size, cap)))


@component.route(
    "/api/chat/uploads",
    "POST",
    summary="Upload a file to attach (the body is the file; X-File-Name: its name, "
    "percent-encoded UTF-8)",
    access=Access.USER,
    response=UploadJson,
    errors=(408, 429),
    body_cap=lambda state: state.config.chat.attachment_bytes,
)
async def upload(call: Call) -> Response:
    state, login, now = call.state, call.login, call.now
    chat = state.chat
    cap = chat.limits.attachment_bytes
    name = _file_name(chat.limits.file_name_chars)
    media_type = _media_type()
    if request.content_length is not None and request.content_length > cap:
        raise _too_large(request.content_length, cap)
    up = await _owned(lambda: chat.begin_upload(login, now=now), lambda u: u.abort())
    try:
        await _receive(up, BODY_IDLE_SECONDS)
        receipt = await state.run(chat.finish_upload, login, up, now=now)
    except RequestEntityTooLarge:  # the body outran the writes past the cap
        up.abort()
        raise ApiError(
            413, f"attachment is too large: over {cap} bytes; the limit is {cap} bytes"
        ) from None
    except BaseException:
        up.abort()  # idempotent; a write still running in its thread fails harmlessly
        raise
    return answer(
        {
            "token": upload_token(receipt.token, name, media_type),
            "sha256": receipt.sha256,
            "size": receipt.size,
            "name": name,
            "media_type": media_type,
            "expires_ms": receipt.expires_ms,
        }
    )


def content_disposition(name: str) -> str:
    """``attachment; filename*=UTF-8''…`` (RFC 6266, 5987): the name only percent-encoded."""
    return f"attachment; filename*=UTF-8''{quote(name, safe='', encoding='utf-8')}"


async def _stream(open_file: Callable[[], BinaryIO]) -> AsyncIterator[bytes]:
    """The file's bytes; it is opened when the answer starts and closed however it ends."""
    file = await _owned(open_file, lambda f: f.close())
    try:
        while chunk := await asyncio.to_thread(file.read, READ_CHUNK):
            yield chunk
    finally:
        file.close()


def _pending(attachment_id: int) -> ApiError:
    return ApiError(
        409,
        f"attachment {attachment_id} is pending: it was posted at another plant and its "
        "bytes have not arrived here yet",
        {"Retry-After": str(PENDING_RETRY_SECONDS)},
    )


def _no_attachment(raw: str) -> Exception:
    return ApiError(404, f"no attachment {raw!r}")


@component.route(
    "/api/chat/attachments/<attachment_id>",
    "GET",
    summary="An attachment's bytes (members of its conversation only), as a download",
    access=Access.USER,
    content_type="application/octet-stream",
    errors=(404, 409),
)
async def download(call: Call, attachment_id: str) -> Response:
    chat, login = call.state.chat, call.login
    number_id = number(attachment_id, _no_attachment)
    assert number_id is not None

    found = await call.state.run(chat.attachment, login, number_id)
    if not found.available:
        raise _pending(number_id)

    def open_file() -> BinaryIO:
        try:
            return chat.open_attachment(login, number_id)[1]
        except AttachmentUnavailableError:  # its bytes went meanwhile (message deleted)
            raise _pending(number_id) from None

    headers = {
        "Content-Type": found.media_type,
        "Content-Length": str(found.size),
        "Content-Disposition": content_disposition(found.name),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": DOWNLOAD_CSP,
        "Cache-Control": "private, no-store",
    }
    return Response(_stream(open_file), headers=headers)
