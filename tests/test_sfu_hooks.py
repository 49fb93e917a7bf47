"""The aiortc internals the SFU hooks are where edge.sfu.hooks says, in the pinned version."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport
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
