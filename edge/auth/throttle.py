"""Throttling and lockout of login attempts, per account and per source address (A1, A3).

Theory of operation
-------------------
Sans-IO: a :class:`ThrottleState` (failure count, last failure, blocked-until) goes in with
``now``, a verdict or a new state comes out; ``store`` persists the states, so a restart
resets nothing. Two counters apply to every attempt: one keyed by the submitted login (whether
or not such an account exists, so throttling does not reveal which logins exist) and one keyed
by the source address (an IPv6 address counts as its /64, which one host usually owns).

A failure is any refused proof: wrong password, wrong, reused or malformed TOTP code, wrong
recovery code, refused certificate (address only). A login that fails on both password and
code is one failure. TOTP guesses are therefore counted with password guesses (A3).

Rules, with :data:`ACCOUNT` and :data:`ADDRESS` as the numbers:

1. The first ``free_failures`` failures cost nothing.
2. Each further failure blocks the key for ``base_delay × 2^k`` (k = 0, 1, 2, …), at most
   ``lockout``.
3. The ``lockout_failures``-th failure locks the key for ``lockout``; each failure after that
   (one is possible each time a lock ends) locks it again for twice as long, at most
   ``max_lockout``.
4. While blocked, an attempt is refused without being evaluated (no password is hashed, no
   code is checked) and is not counted: it costs the attacker a guess and the defender
   nothing, and it cannot lengthen the lock of a user being attacked.
5. Reset: a successful login resets the account counter (not the address counter: a valid
   account of one's own must not whitewash an address); an administrator can unlock; and a
   counter is forgotten after ``forget_after`` without failures, counted from the end of its
   last block.

For an account (:data:`ACCOUNT`: lockout at the 10th failure) that is at most 16 guesses in
the first 24 hours and one a day after that; NIST SP 800-63B's limit is 100 consecutive
failures. The caller shows the same generic failure whether a guess was wrong or not
evaluated (A1).
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from dataclasses import dataclass, replace
from typing import Final

_MAX_EXPONENT: Final = 20  # 15 min × 2^20 is 30 years: far past any cap, far from overflow


class ThrottleKind(enum.Enum):
    ACCOUNT = "account"
    ADDRESS = "address"


@dataclass(frozen=True)
class ThrottlePolicy:
    """The numbers of the rules above, for one kind of key."""

    free_failures: int
    base_delay: dt.timedelta
    lockout_failures: int
    lockout: dt.timedelta
    max_lockout: dt.timedelta
    forget_after: dt.timedelta
    reset_on_success: bool

    def __post_init__(self) -> None:
        if not 0 <= self.free_failures < self.lockout_failures:
            raise ValueError("free_failures must be below lockout_failures")
        if not dt.timedelta(0) < self.lockout <= self.max_lockout:
            raise ValueError("lockout must be positive and at most max_lockout")

    def block_after(self, failures: int) -> dt.timedelta | None:
        """How long the key is blocked after its ``failures``-th failure (None: not at all)."""
        if failures <= self.free_failures:
            return None
        if failures < self.lockout_failures:
            exponent = min(failures - self.free_failures - 1, _MAX_EXPONENT)
            return min(self.base_delay * (1 << exponent), self.lockout)
        exponent = min(failures - self.lockout_failures, _MAX_EXPONENT)
        return min(self.lockout * (1 << exponent), self.max_lockout)


ACCOUNT: Final = ThrottlePolicy(
    free_failures=3,
    base_delay=dt.timedelta(seconds=1),
    lockout_failures=10,
    lockout=dt.timedelta(minutes=15),
    max_lockout=dt.timedelta(hours=24),
    forget_after=dt.timedelta(hours=24),
    reset_on_success=True,
)
# An address may hide several users (a shared terminal in a control room): looser, and a
# success does not reset it.
ADDRESS: Final = ThrottlePolicy(
    free_failures=20,
    base_delay=dt.timedelta(seconds=1),
    lockout_failures=30,
    lockout=dt.timedelta(minutes=15),
    max_lockout=dt.timedelta(hours=24),
    forget_after=dt.timedelta(hours=1),
    reset_on_success=False,
)


@dataclass(frozen=True)
class ThrottleState:
    failures: int = 0
    last_failure: dt.datetime | None = None
    blocked_until: dt.datetime | None = None


class Verdict(enum.Enum):
    OPEN = "open"
    DELAYED = "delayed"  # blocked for an exponential delay
    LOCKED = "locked"  # blocked after lockout_failures failures


@dataclass(frozen=True)
class Gate:
    verdict: Verdict
    retry_after: dt.timedelta = dt.timedelta(0)

    @property
    def open(self) -> bool:
        return self.verdict is Verdict.OPEN


def current(policy: ThrottlePolicy, state: ThrottleState, now: dt.datetime) -> ThrottleState:
    """``state`` with rule 5's forgetting applied at ``now``."""
    if state.last_failure is None:
        return state
    quiet_since = max(state.last_failure, state.blocked_until or state.last_failure)
    if now >= quiet_since + policy.forget_after:
        return ThrottleState()
    return state


def gate(policy: ThrottlePolicy, state: ThrottleState, now: dt.datetime) -> Gate:
    """May an attempt on this key be evaluated at ``now``?"""
    state = current(policy, state, now)
    if state.blocked_until is None or now >= state.blocked_until:
        return Gate(Verdict.OPEN)
    verdict = Verdict.LOCKED if state.failures >= policy.lockout_failures else Verdict.DELAYED
    return Gate(verdict, state.blocked_until - now)


def after_failure(policy: ThrottlePolicy, state: ThrottleState, now: dt.datetime) -> ThrottleState:
    """The state after an evaluated attempt failed at ``now``."""
    failures = current(policy, state, now).failures + 1
    block = policy.block_after(failures)
    return ThrottleState(failures, now, None if block is None else now + block)


def after_success(policy: ThrottlePolicy, state: ThrottleState) -> ThrottleState:
    """The state after a successful login (rule 5)."""
    return ThrottleState() if policy.reset_on_success else state


def unlocked(state: ThrottleState) -> ThrottleState:
    """An administrator's unlock: the counter starts again."""
    return replace(state, failures=0, blocked_until=None)


def address_key(address: str) -> str:
    """The throttling key of a source address: IPv4 as is, IPv6 as its /64 network.

    An IPv4-mapped IPv6 address counts as its IPv4 address. Raises ``ValueError`` for
    anything that is not an IP address (the web layer always has the peer's address).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
