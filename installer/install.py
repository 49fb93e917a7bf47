"""``zastava install``: a node from offline media, on a host that may have no network at all.

Theory of operation. Steps, each shown as it starts and each safe to repeat:

1. verify: the release key is the trusted one (given with its fingerprint, or installed
   earlier); the manifest's signature verifies (I2); the media are fresh enough (I3, I4,
   overridable and then logged); every file is copied into ``versions/.staging`` while its
   length and SHA-256 are checked against the manifest (I1). Nothing is installed before
   this step has finished, and later steps read only the checked copy. (A rerun whose
   version directory is already complete, from the same signed manifest, uses no wheel: it
   still checks every file, but copies only the Debian packages.)
2. Debian packages for the role, from the media (``dpkg --install``, in passes: never a download).
3. the version's virtualenv ``versions/<v>/venv``: ``venv --without-pip``, then pip run from
   the media's own pip wheel with ``--no-index --require-hashes``, byte-compiled (unless
   ``--no-compile``: :func:`build_version`), the installed ``zastava`` run once as a check;
   ``COMPLETE`` last.
4. the role's configuration (kept if it exists); 5. the service user and the units (and,
   on a relay host, coturn's files: :mod:`installer.turn`);
6. the databases, created by the new version's own code; 7. the node's keys and its
   certificate request (generated into ``node.partial``, renamed when complete);
8. ``installation.json``, the trusted release key, then ``current`` switched by rename.

A run killed at any point leaves either no ``current`` link or a complete one; running the
same command again finishes the job.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from installer import systemd, turn
from installer.layout import COMPLETE, Installation, InstallError, Paths, log_event
from installer.manifest import MANIFEST_FILE, Manifest, check_fresh
from installer.media import SignedManifest, copy_verified, open_media
from installer.release_key import ReleaseKeyError, VerifyingKey
from installer.roleconfig import NodeSettings, config_text
from pki.enrollment import EnrollmentRequest, grouped
from pki.keyfile import write_public
from pki.names import Role
from sync.turn import DEFAULT_PORT

ROLE_NEEDS = {Role.RELAY: "coturn (for TURN)", Role.CORE: "python3", Role.EDGE: "python3"}


class Step(enum.Enum):
    VERIFY = "verify the media"
    DEBIAN = "Debian packages"
    VENV = "virtualenv"
    CONFIG = "configuration"
    SERVICE = "service user and units"
    DATABASE = "databases"
    KEYS = "node keys and certificate request"
    SWITCH = "switch to the new version"
    # upgrade only
    BACKUP = "back up the data"
    MIGRATE = "migrate the data"
    HEALTH = "health check"


class Progress:
    """Prints each step as ``[n/N] name: detail``, logs it, and (tests only) dies on cue."""

    def __init__(
        self, steps: list[Step], paths: Paths, now: Callable[[], dt.datetime], crash_at: str
    ) -> None:
        self.steps = steps
        self.paths = paths
        self.now = now
        self.crash_at = crash_at

    def step(self, step: Step, detail: str = "") -> None:
        n = self.steps.index(step) + 1
        print(f"[{n}/{len(self.steps)}] {step.value}{': ' + detail if detail else ''}", flush=True)
        if self.paths.prefix.is_dir():
            log_event(self.paths, self.now(), "step", step=step.name)
        if self.crash_at == step.name.lower():
            # For the interruption tests: die as a power cut would, with no clean-up.
            os.kill(os.getpid(), signal.SIGKILL)

    def note(self, text: str) -> None:
        print(f"      {text}", flush=True)


def trusted_key(paths: Paths, key_file: Path | None, fingerprint: str | None) -> VerifyingKey:
    """The release key to verify media with: given with its fingerprint, or installed."""
    if key_file is not None:
        if fingerprint is None:
            raise ReleaseKeyError(
                "--release-key needs --release-fingerprint: the fingerprint you were given "
                "out of band (a key file alone proves nothing)"
            )
        return VerifyingKey.load(key_file, fingerprint=fingerprint)
    if fingerprint is not None and not paths.trusted_key.exists():
        raise ReleaseKeyError("--release-fingerprint needs --release-key FILE")
    if paths.trusted_key.exists():
        return VerifyingKey.load(paths.trusted_key, fingerprint=fingerprint)
    raise ReleaseKeyError(
        f"no release key is trusted under {paths.prefix} yet: give --release-key FILE (e.g. "
        "MEDIA/release-key.pem) and --release-fingerprint with the fingerprint you were told"
    )


@dataclass(frozen=True)
class Verified:
    signed: SignedManifest
    staging: Path

    @property
    def manifest(self) -> Manifest:
        return self.signed.manifest


def verify_media(
    paths: Paths,
    media: Path,
    key: VerifyingKey,
    *,
    now: dt.datetime,
    allow_expired: bool,
    allow_downgrade: bool,
    progress: Progress,
) -> Verified:
    """Step 1 of install and upgrade: nothing is used from the media before this returns."""
    signed = open_media(media, key)
    m = signed.manifest
    progress.note(
        f"signature OK (release key {key.grouped[:19]}...): version {m.version}, "
        f"made {m.created:%Y-%m-%d}, expires {m.expires:%Y-%m-%d}"
    )
    installed = paths.linked(paths.current)
    for o in check_fresh(
        m,
        now=now,
        installed=installed,
        allow_expired=allow_expired,
        allow_downgrade=allow_downgrade,
    ):
        log_event(paths, now, "forced", refusal=o.what, detail=o.detail, media=str(media))
        print(f"WARNING: {o.detail}; installing anyway as forced (logged in {paths.log})")
    staging = paths.versions / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    # A rerun whose version is already built needs none of the wheels: check them, copy
    # only the Debian packages (installed again by every run).
    built = already_built(paths, signed)
    try:
        copy_verified(media, signed, staging, only=_is_deb if built else None)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if built:
        progress.note(
            f"all {len(m.files)} files match the manifest; {paths.version_dir(m.version)} is "
            f"already built, so only the Debian packages were copied, to {staging}"
        )
    else:
        progress.note(f"all {len(m.files)} files match the manifest; checked copy in {staging}")
    return Verified(signed, staging)


def _is_deb(path: str) -> bool:
    return path.startswith("debs/")


def already_built(paths: Paths, signed: SignedManifest) -> bool:
    """``versions/<v>`` is complete and was built from exactly these (signed) media."""
    vdir = paths.version_dir(signed.manifest.version)
    if not paths.is_complete(signed.manifest.version):
        return False
    try:
        return (vdir / MANIFEST_FILE).read_bytes() == signed.data
    except FileNotFoundError:
        return False


def install_debs(verified: Verified, role: Role, system: bool, media: Path, p: Progress) -> None:
    m = verified.manifest
    if m.debs is None:
        p.note(
            f"these media carry no Debian packages (built with --no-debs): the {role.value} "
            f"needs {ROLE_NEEDS[role]} installed by other means"
        )
        return
    debs = m.debs_for(role)
    if not system:
        p.note(f"not installing {len(debs)} Debian packages (--system no); as root, run:")
        p.note(DPKG_HINT.format(debs=" ".join(str(media / d) for d in debs)))
        return
    dpkg_install([verified.staging / d for d in debs])
    p.note(f"{len(debs)} Debian packages installed")


# dpkg --install orders the packages as given: one whose pre-dependency comes later on the
# line is refused in that pass and installed in the next; three passes cover python3's chain.
DPKG_PASSES: Final = 4
DPKG_HINT: Final = "for n in 1 2 3 4; do dpkg -i --skip-same-version {debs} && break; done"


def dpkg_install(debs: list[Path], root: Path | None = None) -> None:
    """Install ``debs`` with dpkg alone: it never downloads and never consults a repository,
    which is what an air-gapped host needs. (``apt-get install --no-download`` of the same
    files failed on a minimal Debian 12 with "Internal Error, Pathname to install is not
    absolute" for readline-common, and on a host with apt lists it wanted that package from
    the network: see docs/installing.md.) A dependency missing from the media fails every
    pass and is reported with dpkg's words. ``root``: another dpkg root (tests)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    where = [] if root is None else [f"--root={root}"]
    command = ["dpkg", *where, "--install", "--skip-same-version", *map(str, debs)]
    errors: list[str] = []
    for _ in range(DPKG_PASSES):
        r = subprocess.run(command, capture_output=True, text=True, env=env)
        if r.returncode == 0:
            break
        errors.append(r.stderr.strip())
    audit = subprocess.run(["dpkg", *where, "--audit"], capture_output=True, text=True, env=env)
    if r.returncode != 0 or audit.stdout.strip():
        # a package whose dependency is missing is unpacked, refused configuration, and
        # skipped by the next pass (same version): the first pass's words say why
        said = errors[0] if errors else audit.stdout.strip()
        raise InstallError(
            "dpkg could not install the media's Debian packages (nothing was downloaded); "
            f"a dependency may be missing from installer/debian-media.txt:\n{said}"
        )


def _pip_wheel(verified: Verified) -> Path:
    for f in verified.manifest.files:
        name = Path(f.path).name
        if f.path.startswith("wheels/") and name.startswith("pip-") and name.endswith(".whl"):
            return verified.staging / f.path
    raise InstallError("the media hold no pip wheel (pip is pinned in runtime.lock)")


def build_version(
    paths: Paths, verified: Verified, python: str, p: Progress, *, byte_compile: bool = True
) -> None:
    """``versions/<v>/venv`` from the checked copy only; reused if already complete.

    pip installs without byte-compiling; then, unless ``byte_compile`` is false, ``compileall``
    compiles the whole virtualenv on every CPU (pip compiles one file after another). The
    installed ``zastava`` is run once as a check, writing the bytecode of what it imports to
    start (whatever ``PYTHONDONTWRITEBYTECODE`` says): without ``byte_compile``, that is all
    is compiled. The service cannot write ``__pycache__`` there (``ProtectSystem=strict``), so
    it compiles anything else it imports in memory, at every start.
    """
    m = verified.manifest
    vdir = paths.version_dir(m.version)
    if paths.is_complete(m.version):
        if not already_built(paths, verified.signed):
            raise InstallError(
                f"{vdir} holds a different build of version {m.version}; remove it (it is not "
                "current) or use media with a new version"
            )
        p.note(f"{vdir} is already complete; reusing it")
        return
    if vdir.exists():
        p.note(f"removing the unfinished {vdir} from an interrupted run")
        shutil.rmtree(vdir)
    vdir.mkdir(parents=True)
    venv = vdir / "venv"
    _run([python, "-m", "venv", "--without-pip", str(venv)], "creating the virtualenv")
    p.note(f"pip install --no-index --require-hashes from the media into {venv}")
    _run(
        [str(venv / "bin" / "python"), str(_pip_wheel(verified) / "pip"), "install"]
        + ["--quiet", "--disable-pip-version-check", "--no-index", "--require-hashes"]
        + ["--no-compile", "--find-links", str(verified.staging / "wheels")]
        + ["-r", str(verified.staging / "requirements.txt")],
        "pip install from the media",
    )
    if byte_compile:
        p.note("byte-compiling the virtualenv (compileall, one process per CPU)")
        r = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", str(venv / "lib")],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if r.returncode != 0:
            # As pip does: a file that does not compile is left as source (it fails, if it
            # is ever imported, with its own error); the install goes on.
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
            p.note(f"WARNING: some files did not byte-compile (left as source):\n{tail}")
    else:
        p.note("not byte-compiled (--no-compile) but for what 'zastava' imports to start")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    _run([str(venv / "bin" / "zastava"), "--help"], "running the installed zastava", env=env)
    write_public(vdir / MANIFEST_FILE, verified.signed.data)
    write_public(vdir / COMPLETE, f"{m.version}\n".encode())


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-12:])
        raise InstallError(f"{what} failed (exit {r.returncode}):\n{tail}")
    return r.stdout


def migrate(paths: Paths, inst: Installation, verified: Manifest) -> str:
    return _run(
        [str(paths.python(verified.version)), "-m", "installer.nodedata", "migrate"]
        + ["--role", inst.role.value, "--config", str(inst.config)],
        "creating or migrating the databases",
    ).strip()


@dataclass(frozen=True)
class InstallRequest:
    media: Path
    paths: Paths
    settings: NodeSettings
    unit_dir: Path
    user: str
    python: str
    system: bool
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    release_key: Path | None
    release_fingerprint: str | None
    allow_expired: bool = False
    byte_compile: bool = True
    crash_at: str = ""
    turn_listen: tuple[str, ...] = ()
    turn_port: int = DEFAULT_PORT


INSTALL_STEPS = [
    Step.VERIFY,
    Step.DEBIAN,
    Step.VENV,
    Step.CONFIG,
    Step.SERVICE,
    Step.DATABASE,
    Step.KEYS,
    Step.SWITCH,
]


def install(req: InstallRequest, now: Callable[[], dt.datetime]) -> Installation:
    paths, s = req.paths, req.settings
    existing = paths.linked(paths.current)
    if existing is not None:
        raise InstallError(
            f"Zastava {existing} is already installed under {paths.prefix}: use "
            "'zastava upgrade --media ...' (or 'zastava rollback')"
        )
    if paths.record.exists():
        old = Installation.load(paths)
        if (old.role, old.site) != (s.role, s.site):
            raise InstallError(
                f"an interrupted install of {old.role.value} {old.site} is under "
                f"{paths.prefix}: rerun it with those values, or remove {paths.prefix}"
            )
    if s.role is Role.RELAY:
        # Refuse bad TURN settings now rather than after the virtualenv is built.
        listen, _ = turn.listen_addresses(s, req.turn_listen, req.ips)
        turn.initial_config(s, listen, req.turn_port)
    p = Progress(INSTALL_STEPS, paths, now, req.crash_at)
    p.step(Step.VERIFY, str(req.media))
    key = trusted_key(paths, req.release_key, req.release_fingerprint)
    verified = verify_media(
        paths,
        req.media,
        key,
        now=now(),
        allow_expired=req.allow_expired,
        allow_downgrade=False,
        progress=p,
    )
    inst = Installation(
        role=s.role,
        site=s.site,
        config=s.config_file,
        data_dir=s.data_dir,
        unit_dir=req.unit_dir,
        user=req.user,
        python=req.python,
        system=req.system,
    )
    try:
        _install_steps(req, inst, key, verified, p, now)
    finally:
        shutil.rmtree(verified.staging, ignore_errors=True)
    return inst


def _install_steps(
    req: InstallRequest,
    inst: Installation,
    key: VerifyingKey,
    verified: Verified,
    p: Progress,
    now: Callable[[], dt.datetime],
) -> None:
    paths, s, m = req.paths, req.settings, verified.manifest
    p.step(Step.DEBIAN)
    if s.role is Role.RELAY and systemd.managed(inst):
        # Debian's coturn.service starts as the package is installed, with a configuration
        # that asks for no credentials: masked first, it never starts.
        systemd.systemctl("mask", systemd.DEBIAN_TURN_UNIT)
        p.note(f"masked {systemd.DEBIAN_TURN_UNIT} (Debian's, open to anyone) before installing")
    install_debs(verified, s.role, req.system, req.media, p)
    p.step(Step.VENV, str(paths.version_dir(m.version)))
    build_version(paths, verified, req.python, p, byte_compile=req.byte_compile)

    p.step(Step.CONFIG, str(s.config_file))
    if s.config_file.exists():
        p.note("kept the existing file")
    else:
        write_public(s.config_file, config_text(s).encode())
    if s.role is Role.RELAY:
        (s.config_dir / "nodes").mkdir(parents=True, exist_ok=True)

    p.step(Step.SERVICE, ", ".join(systemd.unit_names(inst)))
    if req.system:
        if systemd.ensure_user(inst):
            p.note(
                f"created the system user {inst.user} (home {inst.data_dir}, shell "
                f"{systemd.NOLOGIN}, no password)"
            )
        else:
            p.note(f"the service user {inst.user} exists already; kept")
        systemd.check_runs_as(inst, paths.zastava(m.version))
        p.note(f"{inst.user} can run {paths.zastava(m.version)}")
    else:
        p.note("no service user created, nothing given to one (--system no)")
    turn_files = None
    if s.role is Role.RELAY:
        p.note("TURN (coturn) for inter-site call legs:")
        for line in turn.install(
            inst,
            s,
            turn_listen=req.turn_listen,
            turn_port=req.turn_port,
            ips=req.ips,
            now=now(),
        ):
            p.note("  " + line)
        tc = turn.load(inst)
        turn_files = (tc.conf_file, tc.state_dir)
    for unit in systemd.write_units(inst, paths, turn_files):
        p.note(f"unit written to {unit}")

    p.step(Step.DATABASE)
    p.note(migrate(paths, inst, m))

    p.step(Step.KEYS, str(inst.node_dir))
    request = _node_keys(paths, inst, m, req.dns, req.ips, p)
    if req.system:
        systemd.own_data(inst)

    p.step(Step.SWITCH, f"{paths.current} -> versions/{m.version}")
    inst.save(paths)
    if not paths.trusted_key.exists() or paths.trusted_key.read_bytes() != key.pem():
        write_public(paths.trusted_key, key.pem())
    paths.switch(paths.current, m.version)
    _enable(inst, p)
    log_event(paths, now(), "installed", version=str(m.version), role=s.role.value, site=s.site)
    _next_steps(inst, m, request, paths.current / "venv" / "bin" / "zastava")


def _enable(inst: Installation, p: Progress) -> None:
    """Enable the units where systemd runs; elsewhere say what was not done."""
    commands = systemd.enable_commands(inst)
    if systemd.managed(inst):
        for command in systemd.enable(inst):
            p.note(f"ran: {command}")
        p.note("enabled, not started: the node has no certificate yet")
        return
    if inst.system:
        why = "systemd is not running on this host (no /run/systemd/system)"
    else:
        why = "--system no"
    p.note(f"{why}: the units were written, but none was enabled or started.")
    p.note("Once systemd runs this host, as root:")
    for command in commands:
        p.note(f"  {command}")


def _node_keys(
    paths: Paths,
    inst: Installation,
    m: Manifest,
    dns: tuple[str, ...],
    ips: tuple[str, ...],
    p: Progress,
) -> EnrollmentRequest:
    node = inst.node_dir
    if (node / "request.pem").exists():
        p.note("the node already has its keys and request; kept")
    else:
        if node.exists():
            raise InstallError(
                f"{node} exists without request.pem: move it aside (it may hold keys) and rerun"
            )
        partial = node.with_name(node.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        argv = [str(paths.zastava(m.version)), "pki", "request", "--node-dir", str(partial)]
        argv += ["--site", inst.site, "--role", inst.role.value]
        for d in dns:
            argv += ["--dns", d]
        for ip in ips:
            argv += ["--ip", ip]
        _run(argv, "generating the node's keys")
        os.replace(partial, node)
    request = EnrollmentRequest.parse((node / "request.pem").read_bytes())
    p.note(f"request {node / 'request.pem'}, fingerprint {grouped(request.fingerprint)}")
    return request


def _next_steps(inst: Installation, m: Manifest, request: EnrollmentRequest, zastava: Path) -> None:
    node = inst.node_dir
    # With a service user, the import runs as that user: the node's files are its own.
    as_service = f"runuser -u {inst.user} -- " if inst.system else ""
    print(
        f"""
Zastava {m.version} is installed as {inst.role.value} {inst.site}. Next:
  1. carry {node / "request.pem"} to the CA; read this fingerprint to the CA's admin:
       {grouped(request.fingerprint)}
     there: zastava pki sign request.pem --ca-dir ... --site {inst.site} --role {inst.role.value} \\
                --out {inst.site}-{inst.role.value}.certs.pem
  2. carry the certificate bundle back and import it, checking the root fingerprint:
       {as_service}{zastava} pki import \\
           {inst.site}-{inst.role.value}.certs.pem --node-dir {node} \\
           --root-fingerprint "<root CA fingerprint>"
  3. review {inst.config}, then start the service:
       systemctl start {systemd.unit_name(inst)}""",
        flush=True,
    )
    if inst.role is Role.RELAY:
        print(f"     (copy each node's TLS certificate into {inst.config.parent / 'nodes'};")
        print(f"      then '{zastava} turn config' makes the edges TURN peers,")
        print(f"      and: systemctl start {systemd.TURN_UNIT})")
    elif inst.role is Role.CORE:
        print(f"     (copy the relay's TLS certificate to {inst.config.parent / 'relay-tls.pem'})")
    sys.stdout.flush()
