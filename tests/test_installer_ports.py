"""The ports a federation layout gives its nodes (``installer.federation.free_port``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from installer import federation


class Drawn:
    """A stand-in for ``random.SystemRandom`` that draws these ports in turn."""

    def __init__(self, ports: list[int]) -> None:
        self._ports: Iterator[int] = iter(ports)

    def randrange(self, low: int, high: int) -> int:
        port = next(self._ports)
        assert low <= port < high
        return port


def a_free_port() -> int:
    port = federation.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free indeed
    return port


def test_a_port_chosen_for_a_node_that_has_not_bound_it_is_not_chosen_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI once gave two edges' device listeners one port: each was free when drawn, as no
    node binds its port before it starts, and the second edge did not start."""
    first, second = a_free_port(), a_free_port()
    while second == first:
        second = a_free_port()
    monkeypatch.setattr(federation.random, "SystemRandom", lambda: Drawn([first, first, second]))
    taken: set[int] = set()
    assert federation.free_port(taken) == first
    monkeypatch.setattr(federation.random, "SystemRandom", lambda: Drawn([first, first, second]))
    assert federation.free_port(taken) == second  # the same draw again is passed over
    assert taken == {first, second}
    monkeypatch.setattr(federation.random, "SystemRandom", lambda: Drawn([first]))
    assert federation.free_port() == first  # without ``taken``: free is all it checks
