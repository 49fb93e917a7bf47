"""Benchmark of the bundle codec (sync.bundle.codec) against the bare cost of its primitives.

    .venv/bin/python bench/bundle.py [--small 3000] [--large-mib 16 64] [--repeat 3]

Pinned to one core (CPU 1 when it exists) so the figures are per core. Three tables:

(a) seal+open per second of 1 KiB payloads, with a warm ``SignerCache`` (issue target:
    >= 3,000/s on one core), and seal, open and the relay's ``verify_envelope`` alone;
(b) seal and open throughput for large payloads next to the bare cost, measured in the same
    run, of the same primitives: secretstream push/pull with the same chunking, SHA-256 of the
    items and of the ciphertext, the two Ed25519 signatures (verifications), the sealed-box
    wrap and the body-key derivation (unwrap). Issue target: >= 1/2 of the bare speed;
(c) where the time of one 1 KiB seal+open goes: each primitive timed alone, called the way
    the codec calls it (``sync.bundle.sodium``, hashlib), the rest is codec overhead, and a
    profile of that rest.

The bare primitives of (b) and (c) go through ``sync.bundle.sodium``, the thin libsodium
layer the codec itself uses, so that neither the codec nor the "bare" figure pays for
``nacl.bindings``' per-call argument checks.

Keys and certificates are made fresh in a temporary directory (pki.ca, cheap Argon2 cost).
Times are the best of ``--repeat`` runs.

On a shared machine times move by 20-30 %; instruction counts do not. ``--loop N`` only does
N seal+open of 1 KiB (after a warm-up) and prints nothing, for callgrind; the difference
between two runs is the count per seal+open (hash seed and BLAS threads fixed, so that setup
costs the same both times):

    export PYTHONHASHSEED=0 OPENBLAS_NUM_THREADS=1
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/bundle.py --loop 0     # then --loop 2000: (b - a) / 2000
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cryptography  # noqa: E402
import nacl  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import x25519  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

from pki.ca import CaPaths, IssuingCA, init_ca  # noqa: E402
from pki.keyfile import KdfCost  # noqa: E402
from pki.names import NodeName, Purpose, Role  # noqa: E402
from pki.node import NodeCredentials, create_request, import_bundle  # noqa: E402
from pki.trust import fingerprint, verify_node  # noqa: E402
from sync.bundle import sodium  # noqa: E402
from sync.bundle.codec import (  # noqa: E402
    DEFAULT_CHUNK,
    Item,
    Recipient,
    Signer,
    SignerCache,
    open_bundle,
    seal,
    verify_envelope,
)
from sync.bundle.header import BundleHeader  # noqa: E402

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(days=1)
PASSPHRASE = b"benchmark only"
TAG_MESSAGE = sodium.TAG_MESSAGE
TAG_FINAL = sodium.TAG_FINAL


@dataclass(frozen=True)
class Parties:
    sender: NodeCredentials
    receiver: NodeCredentials
    signer: Signer
    recipient: Recipient


def make_parties(base: Path) -> Parties:
    paths = CaPaths.of(base / "ca")
    cost = KdfCost(time_cost=1, memory_kib=8 * 1024)
    init_ca(
        paths,
        organization="Bench",
        root_passphrase=PASSPHRASE,
        issuing_passphrase=PASSPHRASE,
        now=NOW,
        cost=cost,
    )
    ca = IssuingCA.open(paths, PASSPHRASE)

    def enroll(role: Role, site: str) -> NodeCredentials:
        name = NodeName(role, site)
        request = create_request(base / site, name)
        issued = ca.sign_request(request, expect=name, now=NOW)
        return import_bundle(base / site, issued, now=NOW, root_fingerprint=fingerprint(ca.root))

    sender, receiver = enroll(Role.EDGE, "plant-a"), enroll(Role.CORE, "hq")
    verified = verify_node(
        receiver.receiving_certificate,
        trust=sender.trust,
        role=Role.CORE,
        purpose=Purpose.RECEIVING,
        now=NOW,
    )
    return Parties(
        sender,
        receiver,
        Signer("plant-a", sender.keys.signing, sender.signing_certificate),
        Recipient.from_verified(verified),
    )


def receiving_public(p: Parties) -> x25519.X25519PublicKey:
    key = p.recipient.certificate.public_key()
    assert isinstance(key, x25519.X25519PublicKey)
    return key


def pin_one_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    cpu = 1 if 1 in cpus else cpus[-1]
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def best(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def per_call(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Seconds per call of ``fn``, best of ``repeat`` runs of ``n`` calls."""

    def run() -> None:
        for _ in range(n):
            fn()

    return best(run, repeat) / n


def seal_one(p: Parties, items: list[Item], chunk_size: int = DEFAULT_CHUNK) -> bytes:
    return seal(
        items,
        signer=p.signer,
        recipient=p.recipient,
        stream="bench",
        seq=1,
        prev=bytes(32),
        now=NOW,
        ttl=TTL,
        chunk_size=chunk_size,
    )


def open_one(p: Parties, data: bytes, cache: SignerCache) -> object:
    return open_bundle(
        data,
        trust=p.receiver.trust,
        now=NOW,
        site="hq",
        receiving_key=p.receiver.keys.receiving,
        receiving_certificate=p.receiver.receiving_certificate,
        cache=cache,
    )


# --- (a) small bundles --------------------------------------------------------------------


def loop_small(p: Parties, n: int) -> None:
    """``n`` seal+open of a fixed 1 KiB item after a warm-up: work for instruction counting."""
    items = [Item("chat.message", bytes(range(256)) * 4)]
    cache = SignerCache(ttl=dt.timedelta(days=1))
    for _ in range(20 + n):
        open_one(p, seal_one(p, items), cache)


def bench_small(p: Parties, n: int, repeat: int) -> list[tuple[str, float]]:
    items = [Item("chat.message", os.urandom(1024))]
    cache = SignerCache(ttl=dt.timedelta(days=1))
    data = seal_one(p, items)
    open_one(p, data, cache)  # warm the cache

    def both() -> None:
        open_one(p, seal_one(p, items), cache)

    def relay() -> None:
        verify_envelope(data, trust=p.receiver.trust, now=NOW, recipient=None, cache=cache)

    return [
        ("seal + open", 1 / per_call(both, n, repeat)),
        ("seal", 1 / per_call(lambda: seal_one(p, items), n, repeat)),
        ("open (warm SignerCache)", 1 / per_call(lambda: open_one(p, data, cache), n, repeat)),
        (
            "open (no cache: full chain + CRL check)",
            1 / per_call(lambda: open_one(p, data, SignerCache()), max(n // 10, 10), repeat),
        ),
        ("relay verify_envelope (warm cache)", 1 / per_call(relay, n, repeat)),
    ]


def wrap(key: bytes, public: bytes, context: bytes) -> bytes:
    """The bare key wrap: sealed box for a raw X25519 key, and the keyed-BLAKE2b body key."""
    hashlib.blake2b(context, key=key, digest_size=32).digest()
    return sodium.box_seal(key, public)


def unwrap(wrapped: bytes, public: bytes, private: bytes, context: bytes) -> bytes:
    """The bare key unwrap, from raw keys (the codec remembers them per key object)."""
    key = sodium.box_seal_open(wrapped, public, private)
    assert key is not None
    return hashlib.blake2b(context, key=key, digest_size=32).digest()


def raw_pair(key: x25519.X25519PrivateKey) -> tuple[bytes, bytes]:
    return key.public_key().public_bytes_raw(), key.private_bytes_raw()


# --- (b) large bundles --------------------------------------------------------------------


def bare_seal(payload: bytes, p: Parties, chunk_size: int) -> None:
    """The primitives seal cannot avoid, with no codec around them."""
    wrap(os.urandom(32), receiving_public(p).public_bytes_raw(), bytes(700))
    hashlib.sha256(payload).digest()  # the item's manifest hash
    stream = sodium.PushStream(os.urandom(32))
    digest = hashlib.sha256(stream.header)
    ad = bytes(32)
    n = len(payload)
    for start in range(0, n, chunk_size):
        tag = TAG_FINAL if start + chunk_size >= n else TAG_MESSAGE
        digest.update(stream.push(payload[start : start + chunk_size], ad, tag))
    digest.digest()  # the ciphertext hash
    p.signer.sign(bytes(200))  # manifest
    p.signer.sign(bytes(800))  # header


def bare_open(
    ciphertext: bytes, key: bytes, wrapped: bytes, p: Parties, chunk_size: int, sigs: list[bytes]
) -> None:
    """The primitives open cannot avoid: unwrap, pull, two hashes, two verifications."""
    public = p.signer.key.public_key().public_bytes_raw()
    assert sodium.verify(public, sigs[1], bytes(800))  # header
    hashlib.sha256(ciphertext).digest()  # ciphertext hash
    unwrap(wrapped, *raw_pair(p.receiver.keys.receiving), bytes(700))
    stream = sodium.PullStream(ciphertext, key)
    item = hashlib.sha256()
    step = chunk_size + sodium.SS_ABYTES
    ad = bytes(32)
    for start in range(sodium.SS_HEADER, len(ciphertext), step):
        pulled = stream.pull(start, min(start + step, len(ciphertext)), ad)
        assert pulled is not None
        item.update(pulled[0])
    assert sodium.verify(public, sigs[0], bytes(200))  # manifest
    item.digest()  # item hash


@dataclass(frozen=True)
class LargeRow:
    mib: int
    seal_s: float
    bare_seal_s: float
    open_s: float
    bare_open_s: float


def bench_large(p: Parties, mib: int, repeat: int, chunk_size: int) -> LargeRow:
    payload = os.urandom(mib << 20)
    items = [Item("recording.opus", payload)]
    cache = SignerCache(ttl=dt.timedelta(days=1))
    data = seal_one(p, items, chunk_size)
    open_one(p, data, cache)
    seal_s = best(lambda: seal_one(p, items, chunk_size), repeat)
    open_s = best(lambda: open_one(p, data, cache), repeat)

    # Bare open needs a real secretstream ciphertext and wrapped key.
    key = os.urandom(32)
    wrapped = wrap(key, receiving_public(p).public_bytes_raw(), bytes(700))
    stream = sodium.PushStream(key)
    parts = [stream.header]
    for start in range(0, len(payload), chunk_size):
        tag = TAG_FINAL if start + chunk_size >= len(payload) else TAG_MESSAGE
        parts.append(stream.push(payload[start : start + chunk_size], bytes(32), tag))
    ciphertext = b"".join(parts)
    del parts
    sigs = [p.signer.sign(bytes(200)), p.signer.sign(bytes(800))]
    bare_seal_s = best(lambda: bare_seal(payload, p, chunk_size), repeat)
    bare_open_s = best(lambda: bare_open(ciphertext, key, wrapped, p, chunk_size, sigs), repeat)
    return LargeRow(mib, seal_s, bare_seal_s, open_s, bare_open_s)


# --- (c) breakdown of one 1 KiB seal+open -------------------------------------------------


def bench_breakdown(
    p: Parties, repeat: int
) -> tuple[list[tuple[str, float]], float, list[tuple[str, float]]]:
    """Each primitive as the codec calls it, timed alone; the total; the profile of the rest."""
    n = 1000
    items = [Item("chat.message", os.urandom(1024))]
    cache = SignerCache(ttl=dt.timedelta(days=1))
    data = seal_one(p, items)
    header = BundleHeader.from_bundle(data)
    open_one(p, data, cache)
    total = per_call(lambda: open_one(p, seal_one(p, items), cache), n, repeat)

    signed_header = header.signed_message
    signed_manifest = bytes(190)
    # Raw keys, as the codec holds them (derived once per long-lived key object).
    secret = p.signer.key.private_bytes_raw() + p.signer.key.public_key().public_bytes_raw()
    public = p.signer.key.public_key().public_bytes_raw()
    sig_h = sodium.sign(signed_header, secret)
    sig_m = sodium.sign(signed_manifest, secret)
    rpub = receiving_public(p).public_bytes_raw()
    rpub_raw, rpriv_raw = raw_pair(p.receiver.keys.receiving)
    info = header.key_context
    wrapped = wrap(bytes(32), rpub, info)
    plaintext = os.urandom(4 + 190 + 64 + 1024)
    ad = header.bundle_id
    ss_key = os.urandom(32)

    def push() -> bytes:
        stream = sodium.PushStream(ss_key)
        return stream.header + stream.push(plaintext, ad, TAG_FINAL)

    ciphertext = push()

    def pull() -> bytes:
        pulled = sodium.PullStream(ciphertext, ss_key).pull(sodium.SS_HEADER, len(ciphertext), ad)
        assert pulled is not None
        return pulled[0]

    def sign2() -> None:
        sodium.sign(signed_header, secret)
        sodium.sign(signed_manifest, secret)

    def verify2() -> None:
        assert sodium.verify(public, sig_h, signed_header)
        assert sodium.verify(public, sig_m, signed_manifest)

    item = items[0].data
    bundle_id_input = signed_header[:760]
    cert = header.signer_cert

    def hashes7() -> None:
        for _ in range(2):  # once sealing, once opening
            hashlib.sha256(item).digest()
            hashlib.sha256(ciphertext).digest()
            hashlib.sha256(bundle_id_input).digest()
        hashlib.sha256(cert).digest()  # the SignerCache's key

    m = 3000
    rows = [
        ("Ed25519 sign x2 (libsodium)", per_call(sign2, m, repeat)),
        ("Ed25519 verify x2 (libsodium)", per_call(verify2, m, repeat)),
        (
            "sealed box + body key (libsodium, BLAKE2b)",
            per_call(lambda: wrap(bytes(32), rpub, info), m, repeat),
        ),
        (
            "sealed box open + body key",
            per_call(lambda: unwrap(wrapped, rpub_raw, rpriv_raw, info), m, repeat),
        ),
        ("secretstream init + push, 1 chunk", per_call(push, m, repeat)),
        ("secretstream init + pull, 1 chunk", per_call(pull, m, repeat)),
        (
            "SHA-256 x7 (item, ciphertext, bundle id; x2; signer certificate)",
            per_call(hashes7, m, repeat),
        ),
    ]

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        open_one(p, seal_one(p, items), cache)
    profile.disable()
    stats = pstats.Stats(profile)
    raw: dict[tuple[str, int, str], tuple[int, int, int, float, object]]
    raw = stats.stats  # type: ignore[attr-defined]
    python_side = []
    for (filename, line, function), (_, _, tottime, _, _) in raw.items():
        if "/sync/bundle/" in filename or "dataclasses" in filename or "functools" in filename:
            short = (
                filename.split("/sync/bundle/")[-1]
                if "/sync/bundle/" in filename
                else (Path(filename).name)
            )
            python_side.append((f"{short}:{line} {function}", tottime / n))
    python_side.sort(key=lambda r: -r[1])
    return rows, total, python_side[:10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000, help="bundles per small run")
    parser.add_argument("--large-mib", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--chunk-kib", type=int, default=DEFAULT_CHUNK // 1024)
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts")
    parser.add_argument("--loop", type=int, help="only N 1 KiB seal+open, for instruction counts")
    args = parser.parse_args()
    if args.loop is not None:
        with tempfile.TemporaryDirectory(prefix="bundle-bench-") as tmp:
            loop_small(make_parties(Path(tmp)), args.loop)
        return
    pinned = pin_one_core()
    print(
        f"{platform.python_implementation()} {platform.python_version()}, cryptography "
        f"{cryptography.__version__}, PyNaCl {nacl.__version__}, {pinned}"
    )
    with tempfile.TemporaryDirectory(prefix="bundle-bench-") as tmp:
        p = make_parties(Path(tmp))
        cert_len = len(p.signer.certificate.public_bytes(Encoding.DER))
        print(f"signer certificate {cert_len} bytes; chunk size {args.chunk_kib} KiB\n")

        print("(a) 1 KiB payload, one item")
        print("| operation | per second | µs each |")
        print("|---|---|---|")
        for name, rate in bench_small(p, args.small, args.repeat):
            print(f"| {name} | {rate:,.0f} | {1e6 / rate:,.0f} |")

        print("\n(b) large payloads, one item (MB = 10^6 bytes of payload)")
        print(
            "| payload | seal MB/s | bare seal MB/s | seal / bare | open MB/s | bare open MB/s "
            "| open / bare |"
        )
        print("|---|---|---|---|---|---|---|")
        chunk_size = args.chunk_kib * 1024
        for mib in args.large_mib:
            r = bench_large(p, mib, args.repeat, chunk_size)
            mb = (mib << 20) / 1e6
            print(
                f"| {mib} MiB | {mb / r.seal_s:,.0f} | {mb / r.bare_seal_s:,.0f} | "
                f"{r.bare_seal_s / r.seal_s:.2f} | {mb / r.open_s:,.0f} | "
                f"{mb / r.bare_open_s:,.0f} | {r.bare_open_s / r.open_s:.2f} |"
            )

        print("\n(c) one 1 KiB seal + open: where the time goes")
        rows, total, python_side = bench_breakdown(p, args.repeat)
        print("| part | µs | share |")
        print("|---|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds * 1e6:,.1f} | {seconds / total:.0%} |")
        primitives = sum(s for _, s in rows)
        print(f"| **primitives** | {primitives * 1e6:,.1f} | {primitives / total:.0%} |")
        rest = total - primitives
        print(f"| codec overhead (the rest) | {rest * 1e6:,.1f} | {rest / total:.0%} |")
        print(f"| **total seal + open** | {total * 1e6:,.1f} | 100% |")
        print(
            f"\nceiling with zero codec overhead: {1 / primitives:,.0f} seal+open/s; "
            f"measured: {1 / total:,.0f}/s"
        )
        print("\ncodec-side Python, own time per seal+open (profiled, so inflated):")
        print("| function | µs |")
        print("|---|---|")
        for name, seconds in python_side:
            print(f"| {name} | {seconds * 1e6:,.1f} |")


if __name__ == "__main__":
    main()
