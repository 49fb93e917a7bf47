"""The aiortc internals the SFU hooks are where edge.sfu.hooks says, in the pinned version."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from edge.sfu import hooks

ROOT = Path(__file__).resolve().parent.parent


def test_every_hooked_aiortc_internal_is_where_it_was() -> None:
    # On failure the message names the attribute, what the SFU uses it for, the pinned
    # and the installed version of aiortc.
    hooks.check_hooks(asyncio.run(hooks.sample_instances()))


@pytest.mark.parametrize("lock", ["runtime.lock", "dev.lock"])
def test_the_lock_pins_the_version_the_hooks_were_written_for(lock: str) -> None:
    text = (ROOT / "requirements" / lock).read_text()
    pinned = re.search(r"^aiortc==([^\s\\]+)", text, re.MULTILINE)
    assert pinned is not None, f"requirements/{lock} does not pin aiortc"
    assert pinned.group(1) == hooks.PINNED_AIORTC, (
        f"requirements/{lock} pins aiortc {pinned.group(1)} but edge/sfu/hooks.py was written "
        f"for {hooks.PINNED_AIORTC}: re-check every hook before moving the pin"
    )


def test_a_moved_method_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    instances = asyncio.run(hooks.sample_instances())
    monkeypatch.delattr(RTCRtpReceiver, "_handle_rtp_packet")
    with pytest.raises(hooks.HookError) as error:
        hooks.check_hooks(instances)
    message = str(error.value)
    assert "aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet is gone" in message
    assert f"written for aiortc {hooks.PINNED_AIORTC}" in message


def test_a_changed_signature_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    instances = asyncio.run(hooks.sample_instances())

    async def _send_rtp(self: object, data: bytes, extra: int) -> None:
        raise AssertionError

    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", _send_rtp)
    with pytest.raises(
        hooks.HookError, match=r"RTCDtlsTransport._send_rtp now takes \('data', 'extra'\)"
    ):
        hooks.check_hooks(instances)


def test_a_hook_run_at_once_that_starts_to_await_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instances = asyncio.run(hooks.sample_instances())

    async def _handle_rtcp_packet(self: object, packet: object) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtcp_packet", _handle_rtcp_packet)
    with pytest.raises(hooks.HookError, match=r"RTCRtpReceiver._handle_rtcp_packet awaits now"):
        hooks.check_hooks(instances)
    # and at run time: the coroutine is closed, the error says why
    with pytest.raises(hooks.HookError, match="suspended: it awaits something now"):
        hooks.run_now(_handle_rtcp_packet(None, None))


def test_a_swapped_name_no_longer_called_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    # the SFU's receivers get no REMB estimator by a stand-in for the name aiortc's receiver
    # calls: a receiver that makes its estimator another way would keep it unnoticed
    instances = asyncio.run(hooks.sample_instances())

    def init(self: object, kind: str, transport: object) -> None:
        self._estimator = object()  # type: ignore[attr-defined]

    monkeypatch.setattr(RTCRtpReceiver, "__init__", init)
    with pytest.raises(
        hooks.HookError,
        match=r"RTCRtpReceiver.__init__ no longer calls RemoteBitrateEstimator\(\): edge.sfu",
    ):
        hooks.check_hooks(instances)


def test_receivers_made_for_the_sfu_hold_no_estimator_and_others_do() -> None:
    async def receivers() -> tuple[object, object, object]:
        pc = RTCPeerConnection()
        try:
            with hooks.sfu_side():
                sfus = pc.addTransceiver("video").receiver
                await asyncio.sleep(0)  # across an await too
                sfus_after_await = pc.addTransceiver("video").receiver
            return sfus, sfus_after_await, pc.addTransceiver("video").receiver
        finally:
            await pc.close()

    sfus, after_await, clients = asyncio.run(receivers())
    assert sfus._RTCRtpReceiver__remote_bitrate_estimator is None  # type: ignore[attr-defined]
    assert after_await._RTCRtpReceiver__remote_bitrate_estimator is None  # type: ignore[attr-defined]
    assert clients._RTCRtpReceiver__remote_bitrate_estimator is not None  # type: ignore[attr-defined]


def test_the_sfus_connections_share_a_certificate_for_a_day_and_others_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def certificate(pc: RTCPeerConnection) -> RTCCertificate:
        made: RTCCertificate = pc._RTCPeerConnection__certificates[0]  # type: ignore[attr-defined]
        return made

    async def connections() -> None:
        with hooks.sfu_side():
            first, second = RTCPeerConnection(), RTCPeerConnection()
        client, other_client = RTCPeerConnection(), RTCPeerConnection()
        assert certificate(first) is certificate(second)
        assert len({id(certificate(p)) for p in (first, client, other_client)}) == 3
        # its fingerprints are aiortc's for it, hashed once
        shared = certificate(first)
        assert shared.getFingerprints() == RTCCertificate.getFingerprints(shared)
        # and in the SDP the SFU sends
        first.addTransceiver("video")
        await first.setLocalDescription(await first.createOffer())
        sha256 = next(f.value for f in shared.getFingerprints() if f.algorithm == "sha-256")
        assert f"a=fingerprint:sha-256 {sha256}" in first.localDescription.sdp
        # a day later a new one serves new connections
        monkeypatch.setattr(hooks, "CERTIFICATE_LIFE", 0.0)
        with hooks.sfu_side():
            later = RTCPeerConnection()
        assert certificate(later) is not shared
        for pc in (first, second, client, other_client, later):
            await pc.close()

    asyncio.run(connections())


def test_the_hooks_are_checked_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[object] = []
    monkeypatch.setattr(hooks, "_verified", False)
    monkeypatch.setattr(hooks, "check_hooks", checks.append)
    asyncio.run(hooks.verify_once())
    asyncio.run(hooks.verify_once())
    assert len(checks) == 1


def test_a_moved_instance_attribute_fails_loudly() -> None:
    instances = asyncio.run(hooks.sample_instances())
    receiver = instances[hooks.RECEIVER]
    del receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    with pytest.raises(
        hooks.HookError, match="RTCRtpReceiver._RTCRtpReceiver__remote_streams is gone"
    ):
        hooks.check_hooks(instances)


def test_a_different_installed_version_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "version", lambda name: "1.17.0")
    with pytest.raises(
        hooks.HookError, match="aiortc 1.17.0 is installed, but edge.sfu hooks aiortc 1.16.0"
    ):
        hooks.check_version()


# -- fast egress (edge.sfu.egress): aioice's nominated pair and pylibsrtp's libsrtp context --


def test_a_moved_aioice_internal_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from aioice.ice import CandidatePair

    instances = asyncio.run(hooks.sample_instances())
    monkeypatch.delattr(CandidatePair, "remote_addr")
    with pytest.raises(hooks.HookError, match=r"aioice.ice.CandidatePair.remote_addr is gone"):
        hooks.check_hooks(instances)


@pytest.mark.parametrize(
    ("owner", "attribute"),
    [
        (hooks.SRTP, "_srtp"),
        (hooks.DTLS, "_tx_srtp"),
        (hooks.DTLS, "_RTCDtlsTransport__tx_bytes"),
        (hooks.CONNECTION, "_nominated"),
        (hooks.STUN, "transport"),
    ],
)
def test_a_moved_fast_egress_instance_attribute_fails_loudly(owner: str, attribute: str) -> None:
    instances = asyncio.run(hooks.sample_instances())
    delattr(instances[owner], attribute)
    with pytest.raises(hooks.HookError, match=f"{owner}.{attribute} is gone"):
        hooks.check_hooks(instances)


def test_a_renamed_libsrtp_function_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    instances = asyncio.run(hooks.sample_instances())

    class Lib:  # pylibsrtp's cffi lib without srtp_protect_rtcp
        srtp_protect = object()

    monkeypatch.setattr("pylibsrtp._binding.lib", Lib())
    with pytest.raises(hooks.HookError, match=r"pylibsrtp._binding.lib.srtp_protect_rtcp is gone"):
        hooks.check_hooks(instances)


@pytest.mark.parametrize("package", ["aioice", "pylibsrtp"])
def test_another_aioice_or_pylibsrtp_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, package: str
) -> None:
    from importlib.metadata import version as real

    monkeypatch.setattr(hooks, "version", lambda name: "9.9.9" if name == package else real(name))
    with pytest.raises(hooks.HookError, match=f"{package} 9.9.9 is installed, but edge.sfu's"):
        hooks.check_version()


@pytest.mark.parametrize("lock", ["runtime.lock", "dev.lock"])
@pytest.mark.parametrize("package", ["aioice", "pylibsrtp"])
def test_the_lock_pins_aioice_and_pylibsrtp_as_the_hooks_expect(lock: str, package: str) -> None:
    text = (ROOT / "requirements" / lock).read_text()
    pinned = re.search(rf"^{package}==([^\s\\]+)", text, re.MULTILINE)
    assert pinned is not None, f"requirements/{lock} does not pin {package}"
    assert pinned.group(1) == hooks.PINNED_OTHERS[package]


def test_a_wrapped_send_rtp_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    assert hooks.send_rtp_is_aiortcs()
    original = RTCDtlsTransport._send_rtp

    async def _send_rtp(self: object, data: bytes) -> None:
        await original(self, data)  # type: ignore[arg-type]

    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", _send_rtp)
    assert not hooks.send_rtp_is_aiortcs()
