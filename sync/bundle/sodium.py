"""The libsodium calls of the bundle codec, made directly through PyNaCl's cffi library.

Theory of operation. ``nacl.bindings`` wraps each libsodium function in Python that checks
every argument (``isinstance``, lengths) through a helper call per check and copies results
out of freshly allocated buffers. For a 1 KiB bundle that wrapping costs more than some of the
primitives it wraps: secretstream init + push + init + pull of one chunk takes ~13 µs through
``nacl.bindings`` and ~7 µs here. This module calls the same functions of the same library
(``nacl._sodium.lib``, the one ``nacl.bindings`` calls; importing ``nacl.bindings`` runs
``sodium_init``) with the same arguments, so the bytes produced and the verdicts are
identical; only the Python around them is thinner.

What it trusts: nothing about its arguments' lengths. libsodium reads fixed-size keys,
nonces and headers through bare pointers, so every function here checks those lengths itself
first and raises ``ValueError`` on a wrong one, never letting libsodium read past a buffer.
What it decides: nothing. A signature, a box or a chunk that does not verify is reported
(``False`` / ``None``), and the codec names the check that failed.
"""

from __future__ import annotations

from typing import Any

import nacl.bindings  # noqa: F401 - importing it initialises libsodium (sodium_init)
from nacl._sodium import ffi, lib  # type: ignore[import-not-found]  # cffi, no stubs

SIG_LEN: int = lib.crypto_sign_bytes()  # 64
SIGN_SECRET_LEN: int = lib.crypto_sign_secretkeybytes()  # 64: seed ‖ public key
SIGN_PUBLIC_LEN: int = lib.crypto_sign_publickeybytes()  # 32
BOX_KEY_LEN: int = lib.crypto_box_publickeybytes()  # 32, public and secret X25519 keys alike
SEAL_LEN: int = lib.crypto_box_sealbytes()  # 48: ephemeral public key ‖ MAC
SS_KEY_LEN: int = lib.crypto_secretstream_xchacha20poly1305_keybytes()  # 32
SS_HEADER: int = lib.crypto_secretstream_xchacha20poly1305_headerbytes()  # 24
SS_ABYTES: int = lib.crypto_secretstream_xchacha20poly1305_abytes()  # 17
SS_STATE_LEN: int = lib.crypto_secretstream_xchacha20poly1305_statebytes()
TAG_MESSAGE: int = lib.crypto_secretstream_xchacha20poly1305_tag_message()
TAG_FINAL: int = lib.crypto_secretstream_xchacha20poly1305_tag_final()
MAX_CHUNK_LEN = 1 << 30  # far above any chunk size a header allows, far below libsodium's cap
_NULL = ffi.NULL
_new = ffi.new
_buffer = ffi.buffer
_from_buffer = ffi.from_buffer


def sign(message: bytes, secret_key: bytes) -> bytes:
    """Ed25519 (``crypto_sign``): the 64-byte signature of ``message``."""
    if len(secret_key) != SIGN_SECRET_LEN:
        raise ValueError("Ed25519 secret key must be seed ‖ public key (64 bytes)")
    signed = _new("unsigned char[]", SIG_LEN + len(message))
    lib.crypto_sign(signed, _NULL, message, len(message), secret_key)  # cannot fail
    signature: bytes = _buffer(signed, SIG_LEN)[:]
    return signature


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 verification (``crypto_sign_open``, which also refuses a non-canonical S and
    small-order or non-canonical R and A). No copy of the message is asked for."""
    if len(public_key) != SIGN_PUBLIC_LEN:
        raise ValueError("Ed25519 public key must be 32 bytes")
    if len(signature) != SIG_LEN:
        return False
    signed = signature + message
    # Verification only: no buffer for libsodium's copy of the message (m = NULL is allowed).
    return bool(lib.crypto_sign_open(_NULL, _NULL, signed, len(signed), public_key) == 0)


def box_seal(message: bytes, public_key: bytes) -> bytes:
    """``crypto_box_seal``: ``message`` sealed for the X25519 ``public_key``."""
    if len(public_key) != BOX_KEY_LEN:
        raise ValueError("X25519 public key must be 32 bytes")
    sealed = _new("unsigned char[]", SEAL_LEN + len(message))
    if lib.crypto_box_seal(sealed, message, len(message), public_key) != 0:
        raise ValueError("crypto_box_seal refused the recipient key")
    out: bytes = _buffer(sealed)[:]
    return out


def box_seal_open(sealed: bytes, public_key: bytes, secret_key: bytes) -> bytes | None:
    """``crypto_box_seal_open``: the message, or ``None`` if the box does not open."""
    if len(public_key) != BOX_KEY_LEN or len(secret_key) != BOX_KEY_LEN:
        raise ValueError("X25519 keys must be 32 bytes")
    if len(sealed) < SEAL_LEN:
        return None
    message = _new("unsigned char[]", max(len(sealed) - SEAL_LEN, 1))
    if lib.crypto_box_seal_open(message, sealed, len(sealed), public_key, secret_key) != 0:
        return None
    out: bytes = _buffer(message, len(sealed) - SEAL_LEN)[:]
    return out


class PushStream:
    """secretstream XChaCha20-Poly1305, encrypting: ``header`` first, then ``push`` per chunk."""

    __slots__ = ("_buf", "_state", "header")

    def __init__(self, key: bytes) -> None:
        if len(key) != SS_KEY_LEN:
            raise ValueError("secretstream key must be 32 bytes")
        self._state = _new("unsigned char[]", SS_STATE_LEN)
        header = _new("unsigned char[]", SS_HEADER)
        lib.crypto_secretstream_xchacha20poly1305_init_push(self._state, header, key)
        self.header: bytes = _buffer(header)[:]
        self._buf: Any = None

    def push(self, chunk: bytes, ad: bytes, tag: int) -> bytes:
        n = len(chunk)
        if n > MAX_CHUNK_LEN:
            raise ValueError("secretstream chunk too long")
        out_len = n + SS_ABYTES
        if self._buf is None or len(self._buf) < out_len:
            self._buf = _new("unsigned char[]", out_len)
        lib.crypto_secretstream_xchacha20poly1305_push(
            self._state, self._buf, _NULL, chunk, n, ad, len(ad), tag
        )
        out: bytes = _buffer(self._buf, out_len)[:]
        return out


class PullStream:
    """secretstream XChaCha20-Poly1305, decrypting ``body`` (the 24-byte header, then the
    chunks) in place: libsodium reads each chunk where it lies, nothing is copied first.
    Raises ``ValueError`` if the header is refused; ``pull`` gives ``(message, tag)``, or
    ``None`` for a chunk that does not authenticate."""

    __slots__ = ("_body", "_buf", "_len", "_state", "_tag")

    def __init__(self, body: bytes | memoryview, key: bytes) -> None:
        if len(body) < SS_HEADER or len(key) != SS_KEY_LEN:
            raise ValueError("secretstream needs a 24-byte header and a 32-byte key")
        self._body = _from_buffer("unsigned char[]", body)  # keeps ``body`` alive
        self._len = len(body)
        self._state = _new("unsigned char[]", SS_STATE_LEN)
        self._tag = _new("unsigned char *")
        self._buf: Any = None
        if lib.crypto_secretstream_xchacha20poly1305_init_pull(self._state, self._body, key):
            raise ValueError("secretstream header refused")

    def pull(self, start: int, end: int, ad: bytes) -> tuple[bytes, int] | None:
        """Decrypt the chunk ``body[start:end]`` (after the header, within the body)."""
        n = end - start
        if start < SS_HEADER or end > self._len or not SS_ABYTES <= n <= MAX_CHUNK_LEN:
            raise ValueError(f"no chunk at {start}..{end} of a {self._len}-byte body")
        out_len = n - SS_ABYTES
        if self._buf is None or len(self._buf) < out_len:
            self._buf = _new("unsigned char[]", max(out_len, 1))
        rc = lib.crypto_secretstream_xchacha20poly1305_pull(
            self._state, self._buf, _NULL, self._tag, self._body + start, n, ad, len(ad)
        )
        if rc != 0:
            return None
        return _buffer(self._buf, out_len)[:], self._tag[0]
