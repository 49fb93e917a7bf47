"""Running a federation's nodes as child processes, for the demo and the multi-process tests.

Theory of operation. Each node is one ``zastava ... serve`` process started with the same
Python interpreter, its output appended to a log file of its own. :meth:`Supervisor.start`
returns once the child printed its readiness line (the line every ``serve`` command prints
when it accepts work) or fails with the log's tail when the child exits or takes too long.
:meth:`Supervisor.stop` sends SIGTERM (each ``serve`` stops cleanly on it) and SIGKILL after a
grace period; :meth:`Supervisor.kill` is SIGKILL at once, for crash tests. Stopping the
supervisor stops every child, newest first.

A child may run in a network namespace: it is started as ``ip netns exec NS ...``, which
enters the namespace and executes the command in place (the process id is the node's own, so
signals reach it). A child may also be another program than ``zastava`` (the relay host's
coturn), and its readiness a check instead of a line (coturn logs to a file of its own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT = 60.0


class ChildFailedError(RuntimeError):
    """A node process exited or did not get ready; the message holds its log's tail."""


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    ready: str | Callable[[], bool]
    process: subprocess.Popen[bytes] | None = None
    _offset: int = field(default=0, repr=False)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    def __init__(self, log_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.children: dict[str, Child] = {}

    def add(
        self,
        name: str,
        args: list[str],
        *,
        ready: str | Callable[[], bool],
        netns: str | None = None,
        program: list[str] | None = None,
    ) -> Child:
        """Register a node: ``zastava ARGS`` (or ``PROGRAM ARGS``), in network namespace
        ``netns`` if given, ready once it prints a line containing ``ready`` (or once the
        check ``ready()`` is true)."""
        argv = [*(program or [sys.executable, "-m", "installer.cli"]), *args]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        child = Child(name, argv, self.log_dir / f"{name}.log", ready)
        self.children[name] = child
        return child

    def start(self, name: str, timeout: float = READY_TIMEOUT) -> Child:
        child = self.children[name]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child._offset = child.log.stat().st_size if child.log.exists() else 0
        with child.log.open("ab") as out:
            child.process = subprocess.Popen(
                child.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while True:
            if callable(child.ready):
                if child.ready():
                    return child
            else:
                with child.log.open("rb") as f:
                    f.seek(child._offset)
                    if child.ready.encode() in f.read():
                        return child
            if child.process.poll() is not None:
                raise ChildFailedError(
                    f"{name} exited with status {child.process.returncode}; its log "
                    f"({child.log}) ends:\n{child.tail()}"
                )
            if time.monotonic() > deadline:
                self.kill(name)
                raise ChildFailedError(
                    f"{name} was not ready after {timeout:g} s; its log ({child.log}) ends:\n"
                    f"{child.tail()}"
                )
            time.sleep(0.05)

    def running(self, name: str) -> bool:
        p = self.children[name].process
        return p is not None and p.poll() is None

    def stop(self, name: str, grace: float = 15.0) -> int | None:
        p = self.children[name].process
        if p is None or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def kill(self, name: str) -> None:
        p = self.children[name].process
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.stop(name)
