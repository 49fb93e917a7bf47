"""The sync transport (``sync.transport``): sans-IO rules first, then a real relay on loopback.

Covers THREATS B8 (download cap, relay's upload cap seen by the client), B9 (a trickling
relay cut by the client's minimum rate; a trickling client cut by the relay's watchdog) and
B13 (an interrupted upload resumes and the bundle is released exactly once).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.sftp import CMD_DATA, CMD_STATUS, SFTP_EOF, SFTP_OK, SFTP_PERMISSION_DENIED

from pki.names import Role
from sync.relay.config import Limits
from sync.transport import (
    AuthenticationRefusedError,
    ConnectionLostError,
    DownloadTooLargeError,
    NoSuchFileError,
    RelayClient,
    RelayIdentityError,
    RelayUnreachableError,
    RequestRefusedError,
    RetryPolicy,
    SlowTransferError,
    TransportOptions,
    with_retries,
)
from sync.transport.client import RemoteFile, check_name
from sync.transport.ratewindow import RateWindow, Stall
from sync.transport.sftppipe import (
    Pipeline,
    SFTPProtocolError,
    SFTPStatusError,
    read_range,
    write_range,
)
from tests.relayfixture import RelayPKI, RunningRelay, TrickleProxy, eventually, running_relay

# -- sans-IO: the minimum-rate rule (B9) ----------------------------------------------------


def test_rate_window_waits_one_window_before_judging() -> None:
    w = RateWindow(window=10, min_rate=100, now=0)
    assert w.check(9.9) is None  # too early to tell, even with nothing moved
    assert w.check(10) == Stall(0, 10, 100)


def test_rate_window_judges_only_the_last_window() -> None:
    w = RateWindow(window=10, min_rate=100, now=0)
    w.add(1, 5000)  # a fast start...
    assert w.check(10.5) is None
    w.add(12, 10)  # ...then a trickle
    assert w.moved_in_window(15) == 10
    assert w.check(15) == Stall(10, 10, 100)
    w.add(16, 990)
    assert w.moved_in_window(16) == 1000
    assert w.check(16) is None  # exactly min_rate * window is enough


def test_rate_window_zero_rate_never_stalls_and_rejects_nonsense() -> None:
    assert RateWindow(window=1, min_rate=0, now=0).check(1e9) is None
    with pytest.raises(ValueError, match="rate window must be positive"):
        RateWindow(window=0, min_rate=1, now=0)
    with pytest.raises(ValueError, match="must not be negative"):
        RateWindow(window=1, min_rate=1, now=0).add(1, -1)


# -- sans-IO: backoff ---------------------------------------------------------------------


def test_backoff_delays_grow_are_capped_and_jittered() -> None:
    p = RetryPolicy(max_attempts=10, base_delay=1, factor=2, max_delay=5, jitter=0.5)
    assert [p.delay(k, 0.0) for k in range(1, 6)] == [1, 2, 4, 5, 5]
    assert p.delay(3, 0.999) == pytest.approx(2.002)  # up to half of it cut at random
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)


def test_with_retries_retries_retryable_errors_only() -> None:
    slept: list[float] = []
    calls = iter([ConnectionLostError("boom"), SlowTransferError("slow", moved=0, window=1)])

    def flaky() -> str:
        error = next(calls, None)
        if error:
            raise error
        return "done"

    policy = RetryPolicy(base_delay=1, factor=3, jitter=0)
    assert with_retries(flaky, policy=policy, sleep=slept.append) == "done"
    assert slept == [1, 3]

    def refused() -> None:
        raise AuthenticationRefusedError("no")

    with pytest.raises(AuthenticationRefusedError):
        with_retries(refused, policy=policy, sleep=slept.append)
    assert slept == [1, 3]  # no pause: raised at once


def test_with_retries_gives_up_with_the_last_error() -> None:
    slept: list[float] = []
    attempts = []

    def down() -> None:
        attempts.append(1)
        raise RelayUnreachableError(f"attempt {len(attempts)}")

    policy = RetryPolicy(max_attempts=3, base_delay=2, jitter=0.5)
    with pytest.raises(RelayUnreachableError, match="attempt 3"):
        with_retries(down, policy=policy, sleep=slept.append, random=lambda: 0.5)
    assert slept == [1.5, 3.0]


def test_names_are_checked_before_anything_is_sent() -> None:
    assert check_name("plant-a.events.7", ".partial") == "plant-a.events.7.partial"
    for bad in ("", "../x", "Upper", ".hidden", "a/b", "x" * 121):
        with pytest.raises(ValueError, match="invalid relay file name"):
            check_name(bad, ".partial")


# -- the SFTP pipeline over an in-memory server ---------------------------------------------


class FakeSFTP:
    """Answers pipelined requests like a server would, in an order and a way the test picks."""

    def __init__(self, content: bytes = b"", *, reverse: bool = False, short: int = 0) -> None:
        self.content = bytearray(content)
        self.reverse = reverse  # answer the newest request first
        self.short = short  # serve at most this many bytes per read (0: all asked)
        self.queue: list[tuple[object, int, int, tuple[object, ...]]] = []
        self.num = 0
        self.deny_from: int | None = None  # refuse writes reaching past this offset
        self.overlong = False

    def _async_request(self, fileobj: object, t: int, *args: object) -> int:
        self.num += 1
        self.queue.append((fileobj, self.num, t, args))
        return self.num

    def _read_response(self, waitfor: int | None = None) -> None:
        fileobj, num, t, args = self.queue.pop(-1 if self.reverse else 0)
        m = paramiko.Message()
        if t == paramiko.sftp.CMD_CLOSE:
            m.add_int(SFTP_OK)
            m.add_string("")
            fileobj._async_response(CMD_STATUS, paramiko.Message(m.asbytes()), num)  # type: ignore[attr-defined]
            return
        handle, offset, rest = args[0], int(args[1]), args[2]  # type: ignore[call-overload]
        assert handle == b"h"
        if t == paramiko.sftp.CMD_WRITE:
            data = bytes(rest)  # type: ignore[call-overload]
            if self.deny_from is not None and offset + len(data) > self.deny_from:
                m.add_int(SFTP_PERMISSION_DENIED)
                m.add_string("over the cap")
            else:
                end = offset + len(data)
                self.content[len(self.content) : end] = bytes(max(0, end - len(self.content)))
                self.content[offset:end] = data
                m.add_int(SFTP_OK)
                m.add_string("")
            kind = CMD_STATUS
        else:
            length = int(rest)  # type: ignore[call-overload]
            if self.short:
                length = min(length, self.short)
            data = bytes(self.content[offset : offset + length])
            if self.overlong:
                data += b"!"
            if data:
                m.add_string(data)
                kind = CMD_DATA
            else:
                m.add_int(SFTP_EOF)
                m.add_string("eof")
                kind = CMD_STATUS
        fileobj._async_response(kind, paramiko.Message(m.asbytes()), num)  # type: ignore[attr-defined]


def _pipe(fake: FakeSFTP, depth: int = 4) -> Pipeline:
    pipe = Pipeline(fake, depth)  # type: ignore[arg-type]
    pipe.handle = b"h"  # as if opened
    return pipe


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("short", [0, 700])
def test_pipeline_reads_whatever_the_answer_order_and_size(reverse: bool, short: int) -> None:
    content = os.urandom(10_000)
    fake = FakeSFTP(content, reverse=reverse, short=short)
    out = bytearray(len(content))
    moved: list[int] = []

    def sink(offset: int, data: bytes) -> None:
        out[offset : offset + len(data)] = data

    read_range(_pipe(fake), len(content), sink, request_size=1024, moved=moved.append)
    assert out == content and sum(moved) == len(content)


@pytest.mark.parametrize("reverse", [False, True])
def test_pipeline_writes_whatever_the_answer_order(reverse: bool) -> None:
    content = os.urandom(10_000)
    fake = FakeSFTP(content[:3000], reverse=reverse)
    moved: list[int] = []
    source = lambda off, n: content[off : off + n]  # noqa: E731
    write_range(_pipe(fake), source, 3000, len(content), request_size=1024, moved=moved.append)
    assert fake.content == content and sum(moved) == 7000


def test_pipeline_sees_every_refused_write_and_drains_the_rest() -> None:
    fake = FakeSFTP()
    fake.deny_from = 5000
    moved: list[int] = []
    source = lambda off, n: bytes(n)  # noqa: E731
    with pytest.raises(SFTPStatusError, match="over the cap") as e:
        write_range(_pipe(fake), source, 0, 10_000, request_size=1024, moved=moved.append)
    assert e.value.code == SFTP_PERMISSION_DENIED
    assert sum(moved) == 4096 and not fake.queue  # nothing left unanswered


def test_pipeline_refuses_answers_that_do_not_fit() -> None:
    fake = FakeSFTP(b"x" * 100)
    fake.overlong = True
    with pytest.raises(SFTPProtocolError, match="asked for 64 bytes, got 65"):
        read_range(_pipe(fake), 100, lambda o, d: None, request_size=64, moved=lambda n: None)
    with pytest.raises(SFTPProtocolError, match="file ended at byte 100, before 200"):
        read_range(
            _pipe(FakeSFTP(b"x" * 100)),
            200,
            lambda o, d: None,
            request_size=100,
            moved=lambda n: None,
        )


def test_the_paramiko_internals_the_pipeline_drives_are_there() -> None:
    """sftppipe.py drives two internal methods of paramiko's SFTPClient: pin them."""
    for name in ("_async_request", "_read_response"):
        assert callable(getattr(paramiko.SFTPClient, name, None)), f"paramiko lost {name}"


# -- a real relay on loopback ---------------------------------------------------------------

# A short window, so that B9 tests end in about a second (a 300 B/s trickle is far below).
FAST = TransportOptions(connect_timeout=5.0, min_rate=20_000, rate_window=1.0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RelayPKI:
    pki = RelayPKI.create(tmp_path_factory.mktemp("pki"))
    pki.enroll(Role.EDGE, "stranger")  # certified, but never in any relay's nodes_dir
    return pki


@pytest.fixture
def relay(pki: RelayPKI, tmp_path: Path) -> Iterator[RunningRelay]:
    allowed = tuple(s for s in pki.nodes if s != "stranger")
    with running_relay(pki, tmp_path / "relay", allowed=allowed) as r:
        yield r


def _big_bundle(pki: RelayPKI, size: int) -> bytes:
    return pki.seal("plant-a", "hq", seq=1, payload=os.urandom(size))


def test_upload_release_download_delete(relay: RunningRelay, pki: RelayPKI) -> None:
    bundle = _big_bundle(pki, 3 * 1024 * 1024)
    seen: list[tuple[int, int]] = []
    with relay.client("plant-a") as a, relay.client("hq") as hq:
        result = a.upload("plant-a.events.1", bundle, progress=lambda d, t: seen.append((d, t)))
        assert (result.size, result.sent, result.resumed_from) == (len(bundle), len(bundle), 0)
        assert seen[-1] == (len(bundle), len(bundle))
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        [f] = relay.wait_for_inbox(hq)
        assert f.size == len(bundle)
        got: list[int] = []
        assert hq.download(f.name, progress=lambda d, t: got.append(d)) == bundle
        assert got[-1] == len(bundle)
        assert hq.delete(f.name) is True
        assert hq.delete(f.name) is False  # a retried delete is harmless
        assert hq.inbox() == []
        assert a.rejections() == []
        assert a.inbox() == []  # the sender's own inbox never saw it


def test_download_to_a_file(relay: RunningRelay, pki: RelayPKI, tmp_path: Path) -> None:
    bundle = _big_bundle(pki, 300_000)
    source = tmp_path / "outgoing.bundle"
    source.write_bytes(bundle)
    with relay.client("plant-a") as a, relay.client("hq") as hq:
        a.upload("b1", source)
        [f] = relay.wait_for_inbox(hq)
        assert hq.download_to(f.name, tmp_path / "in.bundle") == len(bundle)
        assert (tmp_path / "in.bundle").read_bytes() == bundle
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
        with pytest.raises(NoSuchFileError, match="no such file"):
            hq.download_to("missing.bundle", tmp_path / "x")
        assert not (tmp_path / "x").exists()


def test_rejections_are_readable_and_clearable(relay: RunningRelay, pki: RelayPKI) -> None:
    bundle = pki.seal("plant-a", "hq", seq=1)
    with relay.client("plant-a") as a, relay.client("hq") as hq:
        a.upload("first", bundle)
        relay.wait_for_inbox(hq)
        a.upload("again", bundle)  # a replay (B3): the guard refuses it
        [r] = eventually(a.rejections)
        assert r.name == "again" and "replay" in r.reason
        assert a.clear_rejection("again") is True
        assert a.clear_rejection("again") is False
        assert a.rejections() == []


@pytest.mark.parametrize("how", ["callback raises", "connection dropped"])
def test_interrupted_upload_resumes_and_is_released_once(
    relay: RunningRelay, pki: RelayPKI, how: str
) -> None:
    """B13: only the remainder is sent the second time; one release, no rejection."""
    bundle = _big_bundle(pki, 4 * 1024 * 1024)
    total = len(bundle)

    class StopUploadError(Exception):
        pass

    # Little in flight, so that the interruption comes well before the end.
    small = TransportOptions(request_size=32 * 1024, pipeline_depth=4)
    in_flight = small.request_size * small.pipeline_depth
    with relay.client("plant-a", options=small) as a, relay.client("hq") as hq:
        done_first = 0

        def interrupt(done: int, _total: int) -> None:
            nonlocal done_first
            done_first = done
            if done >= total // 3:
                if how == "callback raises":
                    raise StopUploadError
                a._conn.transport.close()  # type: ignore[union-attr]

        expected = StopUploadError if how == "callback raises" else ConnectionLostError
        with pytest.raises(expected):
            a.upload("plant-a.events.1", bundle, progress=interrupt)
        assert hq.inbox() == []

        sent_again: list[int] = []
        result = a.upload("plant-a.events.1", bundle, progress=lambda d, t: sent_again.append(d))
        assert 0 < result.resumed_from < total
        assert result.resumed_from + result.sent == total
        if how == "callback raises":  # what was acknowledged, and what was in flight, was kept
            assert done_first <= result.resumed_from <= done_first + in_flight
        assert sent_again[0] > result.resumed_from and sent_again[-1] == total

        [f] = relay.wait_for_inbox(hq)
        assert hq.download(f.name) == bundle
        time.sleep(0.2)  # let the guard finish anything else it might have been given
        assert a.rejections() == [] and len(hq.inbox()) == 1


def test_a_larger_stale_partial_is_restarted_from_zero(relay: RunningRelay, pki: RelayPKI) -> None:
    bundle = pki.seal("plant-a", "hq", seq=1)
    with relay.client("plant-a") as a, relay.client("hq") as hq:
        a.connect()  # the relay makes the site's directories
        stale = relay.paths.upload("plant-a") / "b1.partial"
        stale.write_bytes(os.urandom(len(bundle) + 1000))
        result = a.upload("b1", bundle)
        assert (result.resumed_from, result.sent) == (0, len(bundle))
        [f] = relay.wait_for_inbox(hq)
        assert hq.download(f.name) == bundle


def test_download_cap_refuses_before_reading(relay: RunningRelay, pki: RelayPKI) -> None:
    """B8: a file over the caller's maximum is not read; it stays in the inbox."""
    bundle = _big_bundle(pki, 100_000)
    small = TransportOptions(max_download_bytes=50_000)
    with relay.client("plant-a") as a, relay.client("hq", options=small) as hq:
        a.upload("b1", bundle)
        [f] = relay.wait_for_inbox(hq)
        with pytest.raises(DownloadTooLargeError, match="over the limit of 50000") as e:
            hq.download(f.name)
        assert (e.value.size, e.value.limit) == (len(bundle), 50_000)
        with pytest.raises(DownloadTooLargeError):
            hq.download(f.name, max_size=len(bundle) - 1)
        assert hq.inbox() == [f]  # still there, and the connection still works
        assert hq.download(f.name, max_size=len(bundle)) == bundle


def test_relay_upload_cap_is_a_refusal_not_a_retry(pki: RelayPKI, tmp_path: Path) -> None:
    """B8 at the relay: a write past its cap is refused; the pipeline does not lose that."""
    with running_relay(pki, tmp_path, limits=Limits(max_bundle_bytes=256 * 1024)) as relay:
        slept: list[float] = []
        with relay.client("plant-a", sleep=slept.append) as a:
            big = _big_bundle(pki, 1024 * 1024)
            with pytest.raises(RequestRefusedError, match="permission denied"):
                a.with_retries(lambda: a.upload("b1", big))
            assert slept == []
            a.upload("b2", pki.seal("plant-a", "hq", seq=1))  # the connection is still fine
            assert a.connected


def test_wrong_relay_host_key_is_refused(pki: RelayPKI, tmp_path: Path) -> None:
    other = pki.enroll(Role.RELAY, "dmz-2")  # a valid relay, but not the one we expect
    with running_relay(pki, tmp_path, identity=other) as relay:
        slept: list[float] = []
        a = relay.client("plant-a", certificate=pki.relay.tls_chain[0], sleep=slept.append)
        with pytest.raises(RelayIdentityError, match="host key that is not the key of the relay"):
            a.with_retries(a.inbox)
        assert slept == [] and not a.connected
        assert not relay.paths.upload("plant-a").exists()  # never logged in


def test_untrusted_relay_certificate_is_refused_before_connecting(pki: RelayPKI) -> None:
    with socket.socket() as s:  # a port nobody listens on: the check comes first
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    not_a_relay = pki.nodes["plant-b"].tls_chain[0]
    a = RelayClient("127.0.0.1", port, pki.nodes["plant-a"], not_a_relay)
    with pytest.raises(RelayIdentityError, match="relay certificate refused.*role mismatch"):
        a.inbox()


def test_node_not_in_nodes_dir_is_refused_without_retry(relay: RunningRelay) -> None:
    slept: list[float] = []
    calls = []
    with relay.client("stranger", sleep=slept.append) as c:

        def op() -> object:
            calls.append(1)
            return c.inbox()

        with pytest.raises(AuthenticationRefusedError, match="relay refused our key: is this"):
            c.with_retries(op)
    assert calls == [1] and slept == []


def test_unreachable_relay_is_retried_then_reported(pki: RelayPKI, relay: RunningRelay) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    retry = RetryPolicy(max_attempts=3, base_delay=1, jitter=0)
    options = TransportOptions(connect_timeout=2, retry=retry)
    c = relay.client("plant-a", port=port, options=options, sleep=slept.append)
    with pytest.raises(RelayUnreachableError, match=rf"relay 127.0.0.1:{port} unreachable: "):
        c.with_retries(c.inbox)
    assert slept == [1, 2]


# -- B9: a trickling relay, a trickling client -----------------------------------------------


@pytest.fixture
def proxy(relay: RunningRelay) -> Iterator[TrickleProxy]:
    with TrickleProxy((relay.host, relay.port)) as p:
        yield p


def test_trickling_download_is_cut_then_retried(
    relay: RunningRelay, pki: RelayPKI, proxy: TrickleProxy
) -> None:
    """B9: the relay (here, a proxy in front of it) trickles; the client cuts and retries."""
    bundle = _big_bundle(pki, 200_000)
    with relay.client("plant-a") as a:
        a.upload("b1", bundle)
    slept: list[float] = []

    def pause(seconds: float) -> None:
        slept.append(seconds)
        proxy.throttle(None)  # the trickle ends while we wait

    hq = relay.client("hq", port=proxy.port, options=FAST, sleep=pause, random=lambda: 0.0)
    [f] = relay.wait_for_inbox(hq)  # connected, at full speed
    proxy.throttle(300)
    errors: list[Exception] = []
    got = hq.with_retries(lambda: hq.download(f.name), on_retry=lambda k, e, d: errors.append(e))
    assert got == bundle
    [e] = errors
    assert isinstance(e, SlowTransferError)
    assert "too slow" in str(e) and "below the minimum of 20000 bytes/s" in str(e)
    assert e.moved < FAST.min_rate * FAST.rate_window
    assert slept == [FAST.retry.delay(1, 0.0)]


def test_trickling_upload_is_cut_then_resumed(
    relay: RunningRelay, pki: RelayPKI, proxy: TrickleProxy
) -> None:
    bundle = _big_bundle(pki, 1024 * 1024)
    a = relay.client("plant-a", port=proxy.port, options=FAST)
    a.connect()
    proxy.throttle(300)
    with pytest.raises(SlowTransferError, match="upload of b1 via relay .* too slow"):
        a.upload("b1", bundle)
    assert not a.connected
    proxy.throttle(None)
    result = a.upload("b1", bundle)
    assert result.resumed_from + result.sent == len(bundle)
    with relay.client("hq") as hq:
        [f] = relay.wait_for_inbox(hq)
        assert hq.download(f.name) == bundle


def test_relay_watchdog_cuts_a_trickling_client(
    pki: RelayPKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """B9, the other way: the relay cuts a client that sends below its minimum rate."""
    caplog.set_level(logging.WARNING, logger="zastava.relay")
    limits = Limits(bundles_per_minute=100_000, min_rate_window_seconds=2)
    allowed = tuple(s for s in pki.nodes if s != "stranger")
    with (
        running_relay(pki, tmp_path / "relay", allowed=allowed, limits=limits) as relay,
        TrickleProxy((relay.host, relay.port)) as proxy,
    ):
        # This client would wait 30 s before cutting anything itself: the relay must act first.
        patient = TransportOptions(connect_timeout=5, min_rate=1, rate_window=30)
        a = relay.client("plant-a", port=proxy.port, options=patient)
        a.connect()
        proxy.throttle(300)
        with pytest.raises(ConnectionLostError, match="lost during upload of b1"):
            a.upload("b1", _big_bundle(pki, 256 * 1024))
    assert "plant-a: transfer slower than 4096 B/s; disconnecting" in caplog.text


# -- batches: many bundles, many requests in flight -----------------------------------------


def _names(files: list[RemoteFile]) -> list[str]:
    return [f.name for f in files]


def test_batches_release_everything_once_in_order(relay: RunningRelay, pki: RelayPKI) -> None:
    bundles = pki.seal_stream("plant-a", "hq", (b"event %d" % i for i in range(30)))
    items = [(f"plant-a.events.{i + 1}", b) for i, b in enumerate(bundles)]
    seen: list[tuple[int, int]] = []
    with relay.client("plant-a") as a, relay.client("hq") as hq:
        results = a.upload_many(items, progress=lambda d, t: seen.append((d, t)))
        assert [r.name for r in results] == [n for n, _ in items] and all(r.ok for r in results)
        total = sum(len(b) for b in bundles)
        assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        files = relay.wait_for_inbox(hq, 30)
        # Released in name order? The inbox lists by name; fetch_many keeps the order asked.
        asked = sorted(_names(files), key=lambda n: int(n.split(".")[-2]))
        got = hq.fetch_many(asked)
        assert [n for n, _ in got] == asked and [d for _, d in got] == bundles
        assert hq.delete_many(asked) == [True] * 30
        assert hq.delete_many(asked[:2]) == [False, False]  # a retried delete is harmless
        assert hq.inbox() == [] and a.rejections() == []
        with pytest.raises(ValueError, match="the same name twice"):
            a.upload_many([items[0], items[0]])


def test_a_refused_item_is_reported_for_that_item_only(pki: RelayPKI, tmp_path: Path) -> None:
    """B8 at the relay, in a batch: the item over the cap is refused; the others pass."""
    with running_relay(pki, tmp_path, limits=Limits(max_bundle_bytes=256 * 1024)) as relay:
        small = pki.seal_stream("plant-a", "hq", [b"one", b"two"])
        big = pki.seal("plant-a", "hq", seq=1, stream="other", payload=os.urandom(1024 * 1024))
        with relay.client("plant-a") as a, relay.client("hq") as hq:
            r1, r2, r3 = a.upload_many([("s1", small[0]), ("big", big), ("s2", small[1])])
            assert r1.ok and r3.ok
            assert isinstance(r2.error, RequestRefusedError)
            assert "upload of big" in str(r2.error) and "permission denied" in str(r2.error)
            assert a.connected  # a refusal keeps the connection
            files = relay.wait_for_inbox(hq, 2)
            assert [d for _, d in hq.fetch_many(_names(files))] == small
            assert os.listdir(relay.paths.upload("plant-a")) == ["big.partial"]  # held, capped


def test_fetch_many_leaves_a_file_over_the_cap_and_reports_it(
    relay: RunningRelay, pki: RelayPKI
) -> None:
    """B8 at the client, in a batch: the large file is not read, the others are."""
    bundles = [
        pki.seal("plant-a", "hq", seq=1, stream="s1"),
        pki.seal("plant-a", "hq", seq=1, stream="s2", payload=os.urandom(100_000)),
        pki.seal("plant-a", "hq", seq=1, stream="s3"),
    ]
    with relay.client("plant-a") as a, relay.client("hq") as hq:
        assert all(r.ok for r in a.upload_many([(f"b{i}", b) for i, b in enumerate(bundles)]))
        names = _names(relay.wait_for_inbox(hq, 3))
        errors: list[tuple[str, Exception]] = []
        got = hq.fetch_many(
            [*names, "gone.bundle"], max_size=50_000, on_error=lambda n, e: errors.append((n, e))
        )
        assert [d for _, d in got] == [bundles[0], bundles[2]]
        [(large, e), (gone, missing)] = errors
        assert large == "plant-a.s2.1.bundle" and isinstance(e, DownloadTooLargeError)
        assert (e.size, e.limit) == (len(bundles[1]), 50_000)
        assert gone == "gone.bundle" and isinstance(missing, NoSuchFileError)
        assert _names(hq.inbox()) == names  # nothing deleted; the large one still there


def test_a_batch_cut_mid_way_is_retried_without_duplicates(
    relay: RunningRelay, pki: RelayPKI
) -> None:
    """B13 in a batch: the connection drops while writing; the retry completes it, and each
    bundle is released exactly once (resumed where the relay held part of it)."""
    bundles = [
        *pki.seal_stream("plant-a", "hq", (b"x%d" % i for i in range(10))),
        pki.seal("plant-a", "hq", seq=1, stream="large", payload=os.urandom(3 * 1024 * 1024)),
    ]
    items = [(f"b{i}", b) for i, b in enumerate(bundles)]
    total = sum(len(b) for b in bundles)
    small = TransportOptions(request_size=32 * 1024, pipeline_depth=4)
    with relay.client("plant-a", options=small) as a, relay.client("hq") as hq:

        def cut(done: int, _total: int) -> None:
            if done >= total // 2:
                a._conn.transport.close()  # type: ignore[union-attr]

        with pytest.raises(ConnectionLostError, match="lost during upload of 11 bundles"):
            a.upload_many(items, progress=cut)
        assert not a.connected and hq.inbox() == []
        results = a.with_retries(lambda: a.upload_many(items))
        assert all(r.ok for r in results)
        assert 0 < results[-1].resumed_from < len(bundles[-1])  # the large one resumed
        files = relay.wait_for_inbox(hq, 11)
        time.sleep(0.2)  # let the guard finish anything else it might have been given
        assert len(hq.inbox()) == 11 and a.rejections() == []
        assert sorted(d for _, d in hq.fetch_many(_names(files))) == sorted(bundles)
