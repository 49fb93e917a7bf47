"""The configuration file each role starts with (``relay.toml``, ``core.toml``, ``edge.toml``).

Written once at install time with absolute paths into the data directory; never overwritten
afterwards (an admin's edits survive upgrades). Each text is read back with the role's own
loader by the installed version (``installer.nodedata``), so a file this module writes and a
loader refuses is caught at install time, not when the service first starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pki.names import Role

DEFAULT_LISTEN = {Role.RELAY: "0.0.0.0:2222", Role.EDGE: "0.0.0.0:8443", Role.CORE: ""}


@dataclass(frozen=True)
class NodeSettings:
    role: Role
    site: str
    config_dir: Path
    data_dir: Path
    listen: str
    relay: str | None  # HOST:PORT of the relay (core, edge)

    @property
    def config_file(self) -> Path:
        return self.config_dir / f"{self.role.value}.toml"


def _q(path: Path | str) -> str:
    text = str(path)
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError(f"path {text!r} cannot be written into the configuration")
    return f'"{text}"'


def config_text(s: NodeSettings) -> str:
    node = s.data_dir / "node"
    data = s.data_dir / s.role.value
    head = f"# Written by 'zastava install' for {s.role.value} {s.site}; edit freely.\n"
    if s.role is Role.RELAY:
        return head + (
            f"data_dir = {_q(data)}\n"
            f"node_dir = {_q(node)}\n"
            f"# TLS certificates (PEM) of the nodes allowed to connect, one file per node\n"
            f"nodes_dir = {_q(s.config_dir / 'nodes')}\n"
            f'listen = "{s.listen}"\n'
            "\n[turn]\n"
            "# the TURN server (coturn) the relay grants call legs on; written beside this file\n"
            f"config = {_q(s.config_dir / 'turn.toml')}\n"
            "\n[calls]\n"
            "# which plants may set up call legs with each other: [site, site] pairs (both\n"
            '# ways) or ["edge", "edge"] for every plant; none until you add them\n'
            "allow = []\n"
        )
    relay = ""
    if s.relay:
        relay = (
            "\n[relay]\n"
            f'address = "{s.relay}"\n'
            "# the relay's TLS certificate (pins its SSH host key): copy it here\n"
            f"certificate = {_q(s.config_dir / 'relay-tls.pem')}\n"
        )
    if s.role is Role.CORE:
        if not s.relay:
            raise ValueError("a core needs --relay HOST:PORT (the relay it federates through)")
        return head + (
            "[core]\n"
            f"db = {_q(data / 'directory.db')}\n"
            f"data_dir = {_q(data)}\n"
            f"node_dir = {_q(node)}\n" + relay
        )
    if relay:
        relay += (
            "# the core's receiving certificate: bundles to the core are sealed to it\n"
            f"core_certificate = {_q(s.config_dir / 'core-receiving.pem')}\n"
        )
    return head + (
        "[edge]\n"
        f'site = "{s.site}"\n'
        f"data_dir = {_q(data)}\n"
        f"node_dir = {_q(node)}\n"
        f'listen = "{s.listen}"\n' + relay
    )
