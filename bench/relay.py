"""Benchmark of the relay and its transport client, against OpenSSH on the same machine.

    .venv/bin/python bench/relay.py [--size-mib 256] [--runs 3] [--small 3000]
                                    [--batch 250] [--no-openssh] [--dir DIR]

1. One large bundle (a real sealed bundle, plant-a -> hq, ``--size-mib`` of payload) is
   uploaded through the relay by ``RelayClient`` and downloaded by the recipient, for each
   SSH cipher the client may prefer; then the same file is moved by OpenSSH (a private
   ``sshd`` on a loopback port with its own host key and config, internal-sftp, a temporary
   user key) with ``sftp -b`` put and get. Prints MiB/s (median and best of ``--runs``) and
   the ratio relay / OpenSSH (goal: at least 0.5, issue 4).
2. ``--small`` real sealed bundles of 4 KiB (plant-a -> hq, sequential seqs) go through
   upload -> guard -> release -> fetch -> delete, with one upload client and one fetch client
   (two threads of this process), audit log included (goal: at least 300 bundles/s): first
   one by one (``upload``; ``download``, ``delete``), then ``--batch`` at a time
   (``upload_many``; ``fetch_many``, ``delete_many``), each on its own stream. The relay's
   audit log is then checked to hold one entry per transition per bundle.

The relay runs in its own process (as sshd does), started from a relay.toml. OpenSSH needs
``apt-get install -y openssh-server openssh-client``; without it, part 1 skips OpenSSH.
Needs root only for sshd (it must run as root to switch to the logged-in user).
"""

from __future__ import annotations

import argparse
import collections
import getpass
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync.relay.audit import AuditEntry  # noqa: E402
from sync.relay.auditstore import SqliteAuditStore  # noqa: E402
from sync.relay.config import RelayConfig  # noqa: E402
from sync.relay.server import RelayServer  # noqa: E402
from sync.transport import NoSuchFileError, RelayClient, TransportOptions  # noqa: E402
from tests.relayfixture import RelayPKI, eventually  # noqa: E402

MiB = 1024 * 1024
CIPHERS = ("aes128-ctr", "aes128-gcm@openssh.com")
OPENSSH_CIPHERS = ("default", "aes128-gcm@openssh.com", "aes128-ctr")


# -- the relay, in its own process -----------------------------------------------------------


def serve_relay(config_path: Path) -> None:
    """Child process: run the relay until stdin closes; print the port first."""
    server = RelayServer(RelayConfig.from_toml(config_path))
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()


class RelayProcess:
    def __init__(self, config_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-relay", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def write_relay_config(base: Path, pki: RelayPKI, max_bundle: int) -> Path:
    nodes = pki.nodes_dir(base / "nodes")
    path = base / "relay.toml"
    path.write_text(
        f'data_dir = "{base / "relay-data"}"\n'
        f'node_dir = "{pki.relay.directory}"\n'
        f'nodes_dir = "{nodes}"\n'
        'listen = "127.0.0.1:0"\n'
        "[limits]\n"
        f"max_bundle_bytes = {max_bundle}\n"
        f"quota_bytes = {8 * 1024 * MiB}\n"
        "quota_files = 100000\n"
        "bundles_per_minute = 1000000\n"
    )
    return path


# -- OpenSSH --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OpenSSH:
    """A private sshd on a loopback port (internal-sftp), and an sftp command line for it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir()
        for name in ("host_key", "user_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)],
                check=True,
            )
        shutil.copy(base / "user_key.pub", base / "authorized_keys")
        self.port = free_port()
        config = base / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\n"
            f"PidFile {base / 'sshd.pid'}\nAuthorizedKeysFile {base / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n"
            "StrictModes no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen(
            [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stderr=subprocess.DEVNULL,
        )
        eventually(lambda: _listening(self.port), timeout=10)

    def command(self, cipher: str) -> list[str]:
        cmd = ["sftp", "-q", "-i", str(self.base / "user_key"), "-P", str(self.port)]
        cmd += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        cmd += ["-o", "BatchMode=yes"]
        if cipher != "default":
            cmd += ["-c", cipher]
        return [*cmd, "-b", "-", f"{getpass.getuser()}@127.0.0.1"]

    def transfer(self, cipher: str, batch: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(
            self.command(cipher), input=batch, text=True, check=True, stdout=subprocess.DEVNULL
        )
        return time.perf_counter() - t0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


# -- part 1: one large bundle ---------------------------------------------------------------


def large_bundle(
    pki: RelayPKI, port: int, base: Path, size_mib: int, runs: int, openssh: bool
) -> list[tuple[str, str, list[float]]]:
    """Rows (who, direction, MiB/s per run)."""
    print(f"sealing a bundle with {size_mib} MiB of payload...", flush=True)
    bundle = pki.seal("plant-a", "hq", seq=1, stream="large", payload=os.urandom(size_mib * MiB))
    source = base / "large.bundle"
    source.write_bytes(bundle)
    mib = len(bundle) / MiB
    del bundle
    cert = pki.relay.tls_chain[0]
    rates: dict[tuple[str, str], list[float]] = {}
    uploads = 0
    dest = base / "downloaded.bundle"
    for _ in range(runs):  # runs interleave the ciphers, so that disk state affects both alike
        for cipher in CIPHERS:
            options = TransportOptions(ciphers=(cipher,))
            uploads += 1
            a = RelayClient("127.0.0.1", port, pki.nodes["plant-a"], cert, options=options)
            with a:
                t0 = time.perf_counter()
                a.upload(f"large-{uploads}", source)
                rates.setdefault((f"relay {cipher}", "upload"), []).append(
                    mib / (time.perf_counter() - t0)
                )
                # The guard's verdict: released the first time, then refused as a replay.
                if uploads > 1:
                    [r] = eventually(a.rejections, timeout=120)
                    a.clear_rejection(r.name)
            hq = RelayClient("127.0.0.1", port, pki.nodes["hq"], cert, options=options)
            with hq:
                [f] = eventually(hq.inbox, timeout=120)
                t0 = time.perf_counter()
                hq.download_to(f.name, dest, max_size=f.size)
                rates.setdefault((f"relay {cipher}", "download"), []).append(
                    mib / (time.perf_counter() - t0)
                )
    assert dest.read_bytes() == source.read_bytes()
    with RelayClient("127.0.0.1", port, pki.nodes["hq"], cert) as hq:
        hq.delete(f.name)
    if openssh:
        sshd = OpenSSH(base / "openssh")
        remote = base / "openssh-remote.bundle"
        back = base / "openssh-back.bundle"
        try:
            for _ in range(runs):
                for cipher in OPENSSH_CIPHERS:
                    who = f"OpenSSH {cipher}"
                    put = sshd.transfer(cipher, f"put {source} {remote}\n")
                    rates.setdefault((who, "upload"), []).append(mib / put)
                    get = sshd.transfer(cipher, f"get {remote} {back}\n")
                    rates.setdefault((who, "download"), []).append(mib / get)
        finally:
            sshd.stop()
    rows = [(who, direction, values) for (who, direction), values in rates.items()]
    for who, direction, values in rows:
        print(f"  {who} {direction}: {_fmt(values)} MiB/s", flush=True)
    return rows


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} (best {max(values):.0f})"


# -- part 2: small bundles ------------------------------------------------------------------


def small_bundles(pki: RelayPKI, port: int, count: int, batch: int) -> dict[str, float]:
    """Part 2, one way: ``batch`` 0 moves bundles one by one (``upload``, ``download``,
    ``delete``), otherwise ``batch`` at a time (``upload_many``, ``fetch_many``,
    ``delete_many``); each way its own stream."""
    sys.setswitchinterval(0.0005)  # as the relay does: short requests hop between threads
    how = f"batches of {batch}" if batch else "one by one"
    print(f"sealing {count} bundles of 4 KiB ({how})...", flush=True)
    stream = f"small-{batch}"
    bundles = pki.seal_stream(
        "plant-a", "hq", (os.urandom(4096) for _ in range(count)), stream=stream
    )
    names = [f"{stream}-{i + 1}" for i in range(count)]
    cert = pki.relay.tls_chain[0]
    sender = RelayClient("127.0.0.1", port, pki.nodes["plant-a"], cert)
    fetcher = RelayClient("127.0.0.1", port, pki.nodes["hq"], cert)
    sender.connect()
    fetcher.connect()
    fetched: list[bytes] = []
    spurious: list[int] = []
    times: dict[str, float] = {}
    failure: list[BaseException] = []

    def send_one_by_one() -> None:
        for i, b in enumerate(bundles):
            while True:
                try:
                    sender.upload(names[i], b)
                    break
                except NoSuchFileError:
                    # The relay's quota scan (before its usage was cached) raced with the
                    # guard moving files out of quarantine and answered the upload's open
                    # with "no such file": count it and try again.
                    spurious.append(i)

    def send_batches() -> None:
        for start in range(0, count, batch):
            end = start + batch
            todo = list(zip(names[start:end], bundles[start:end], strict=True))
            for _ in range(10):  # a refusal is retried, as one by one; a lasting one fails
                results = sender.upload_many(todo)
                refused = [r for r in results if not r.ok]
                if not refused:
                    break
                spurious.extend(range(len(refused)))
                todo = [(n, b) for n, b in todo if n in {r.name for r in refused}]
            else:
                assert refused[0].error is not None
                raise refused[0].error

    def send() -> None:
        try:
            send_batches() if batch else send_one_by_one()
            times["uploaded"] = time.perf_counter()
        except BaseException as e:
            failure.append(e)

    def fetch() -> None:
        try:
            deadline = time.monotonic() + 600
            while len(fetched) < count and time.monotonic() < deadline and not failure:
                files = fetcher.inbox()
                if not files:
                    time.sleep(0.002)
                if batch:
                    for start in range(0, len(files), batch):
                        group = [f.name for f in files[start : start + batch]]
                        got = fetcher.fetch_many(group)
                        fetched.extend(data for _, data in got)
                        fetcher.delete_many([name for name, _ in got])
                    continue
                for f in files:
                    fetched.append(fetcher.download(f.name))
                    fetcher.delete(f.name)
            times["fetched"] = time.perf_counter()
        except BaseException as e:
            failure.append(e)

    threads = [threading.Thread(target=send), threading.Thread(target=fetch)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sender.close()
    fetcher.close()
    if failure:
        raise failure[0]
    assert sorted(fetched) == sorted(bundles), "bundles lost, changed or duplicated"
    return {
        "bundles": count,
        "batch": batch,
        "upload_s": times["uploaded"] - start,
        "total_s": times["fetched"] - start,
        "spurious": len(spurious),
    }


def audit_counts(data_dir: Path) -> dict[str, int]:
    with SqliteAuditStore.open(data_dir / "audit.db", readonly=True) as store:
        events = (AuditEntry.parse(data).event.value for _, data in store.iter_entries())
        return dict(collections.Counter(events))


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=250, help="bundles per batch in part 2")
    ap.add_argument("--no-openssh", action="store_true")
    ap.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    ap.add_argument("--serve-relay", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_relay:
        serve_relay(args.serve_relay)
        return 0
    openssh = not args.no_openssh and shutil.which("sshd") is not None
    if not args.no_openssh and not openssh:
        print("sshd not found (apt-get install -y openssh-server): skipping OpenSSH")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        pki = RelayPKI.create(base / "pki")
        config = write_relay_config(base, pki, max_bundle=(args.size_mib + 16) * MiB)
        relay = RelayProcess(config)
        try:
            rows = large_bundle(pki, relay.port, base, args.size_mib, args.runs, openssh)
            small = []
            if args.small:
                for batch in (0, args.batch):
                    small.append(small_bundles(pki, relay.port, args.small, batch))
        finally:
            relay.stop()
        counts = audit_counts(base / "relay-data")
    print_report(args, rows, small, counts)
    return 0


def print_report(
    args: argparse.Namespace,
    rows: list[tuple[str, str, list[float]]],
    small: list[dict[str, float]],
    counts: dict[str, int],
) -> None:
    print(f"\n## One bundle of {args.size_mib} MiB payload, {args.runs} runs (MiB/s)\n")
    print("| path | direction | median | best |")
    print("|---|---|---:|---:|")
    for who, direction, values in rows:
        print(f"| {who} | {direction} | {statistics.median(values):.0f} | {max(values):.0f} |")
    medians = {(who, d): statistics.median(v) for who, d, v in rows}
    for direction in ("upload", "download"):
        relay = max(v for (who, d), v in medians.items() if d == direction and "relay" in who)
        ssh = {who: v for (who, d), v in medians.items() if d == direction and "OpenSSH" in who}
        if ssh:
            best_ssh = max(ssh.values())
            default_ssh = ssh.get("OpenSSH default", best_ssh)
            print(
                f"\nratio {direction}, relay's best median / OpenSSH's: {relay / best_ssh:.2f} "
                f"against its best cipher, {relay / default_ssh:.2f} against its default"
            )
    for run in small:
        n = run["bundles"]
        how = f"batches of {run['batch']:.0f}" if run["batch"] else "one by one"
        print(
            f"\n## {n:.0f} bundles of 4 KiB, {how}: upload -> guard -> release -> fetch -> delete\n"
        )
        print("| measure | value |")
        print("|---|---:|")
        print(f"| uploads done | {run['upload_s']:.2f} s ({n / run['upload_s']:.0f}/s) |")
        print(f"| all fetched and deleted | {run['total_s']:.2f} s |")
        print(f"| **bundles per second, end to end** | **{n / run['total_s']:.0f}** |")
        print(f"| uploads retried after a refusal | {run['spurious']:.0f} |")
    print(f"\naudit log entries by event: {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    raise SystemExit(main())
