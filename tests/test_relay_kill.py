"""``zastava relay serve`` killed with SIGKILL mid-upload and mid-flow, then restarted: no
bundle lost, none delivered twice (THREATS B13), at the process level."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.transport import RelayClient, TransportError, TransportOptions
from tests.relayfixture import RelayPKI, eventually


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RelayPKI:
    return RelayPKI.create(tmp_path_factory.mktemp("pki"))


class RelayProcess:
    """The real command in its own process; ``kill()`` is kill -9."""

    def __init__(self, pki: RelayPKI, base: Path) -> None:
        pki.nodes_dir(base / "nodes")
        self.base, self.pki, self.port = base, pki, 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        (self.base / "relay.toml").write_text(
            f'data_dir = "{self.base / "data"}"\n'
            f'node_dir = "{self.pki.relay.directory}"\n'
            f'nodes_dir = "{self.base / "nodes"}"\n'
            f'listen = "127.0.0.1:{self.port}"\n'
            "[limits]\nbundles_per_minute = 100000\n"
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "installer.cli",
                "relay",
                "serve",
                "--config",
                str(self.base / "relay.toml"),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("relay serving on "):
                self.port = int(line.split(":")[-1].split(";")[0])
                return
        raise AssertionError("the relay did not start")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None

    def client(self, site: str) -> RelayClient:
        return RelayClient(
            "127.0.0.1",
            self.port,
            self.pki.nodes[site],
            self.pki.relay.tls_chain[0],
            options=TransportOptions(connect_timeout=5.0),
        )


@pytest.fixture
def relay(pki: RelayPKI, tmp_path: Path) -> Iterator[RelayProcess]:
    r = RelayProcess(pki, tmp_path)
    r.start()
    yield r
    r.stop()


def test_killed_mid_upload_then_resumed_and_released_once(
    relay: RelayProcess, pki: RelayPKI
) -> None:
    bundle = pki.seal("plant-a", "hq", seq=1, payload=os.urandom(16 * 2**20))

    def kill_halfway(done: int, total: int) -> None:
        if done > 2**20 and relay.proc is not None:
            relay.kill()

    a = relay.client("plant-a")
    with pytest.raises(TransportError):
        a.upload("big", bundle, progress=kill_halfway)
    a.close()
    partial = relay.base / "data" / "sites" / "plant-a" / "upload" / "big.partial"
    # What arrived before the kill is kept (all of it, if the pipeline had already sent
    # everything when the signal landed; never more).
    assert 0 < partial.stat().st_size <= len(bundle)
    relay.start()
    with relay.client("plant-a") as a2, relay.client("hq") as hq:
        result = a2.upload("big", bundle)
        assert result.resumed_from > 0  # only the rest was sent again
        files = eventually(lambda: hq.inbox())
        assert [f.name for f in files] == ["plant-a.events.1.bundle"]
        assert hq.download(files[0].name, max_size=2**25) == bundle


def test_killed_after_release_and_mid_delete(relay: RelayProcess, pki: RelayPKI) -> None:
    bundles = pki.seal_stream("plant-a", "hq", [b"one", b"two", b"three"])
    with relay.client("plant-a") as a:
        for i, b in enumerate(bundles):
            a.upload(f"b{i}", b)
    with relay.client("hq") as hq:
        eventually(lambda: len(hq.inbox()) == 3)
        first = hq.download("plant-a.events.1.bundle")
        hq.delete("plant-a.events.1.bundle")
    relay.kill()  # right after a delete, with guard work possibly still queued
    relay.start()
    with relay.client("hq") as hq, relay.client("plant-a") as a:
        names = sorted(f.name for f in hq.inbox())
        assert names == ["plant-a.events.2.bundle", "plant-a.events.3.bundle"]
        got = [first] + [hq.download(n) for n in names]
        assert got == bundles  # each once, none lost, none back
        # Re-sending after the restart is refused as a replay, not delivered twice.
        a.upload("again", bundles[0])
        eventually(lambda: any(r.name == "again" for r in a.rejections()))
        assert sorted(f.name for f in hq.inbox()) == names
