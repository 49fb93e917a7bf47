"""Throttle policy (sans-IO): exponential delay, lockout well under 100 failures (A1, A3)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.auth import throttle
from edge.auth.throttle import ACCOUNT, ADDRESS, ThrottleState, Verdict

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
MIN = dt.timedelta(minutes=1)
H = dt.timedelta(hours=1)


def test_account_schedule_free_then_doubling_delays_then_lockout() -> None:
    blocks = [ACCOUNT.block_after(n) for n in range(1, 19)]
    assert blocks[:3] == [None, None, None]
    assert blocks[3:9] == [S, 2 * S, 4 * S, 8 * S, 16 * S, 32 * S]
    assert blocks[9:] == [15 * MIN, 30 * MIN, H, 2 * H, 4 * H, 8 * H, 16 * H, 24 * H, 24 * H]


def test_block_sizes_never_overflow() -> None:
    assert ACCOUNT.block_after(10**6) == ACCOUNT.max_lockout
    assert ADDRESS.block_after(29) == 256 * S
    steep = throttle.ThrottlePolicy(0, S, 60, 15 * MIN, H, H, True)
    assert steep.block_after(59) == 15 * MIN  # a delay is capped at the lockout


def hammer(policy: throttle.ThrottlePolicy, duration: dt.timedelta) -> int:
    """An attacker who tries the moment each block ends; returns the guesses evaluated."""
    state, now, guesses = ThrottleState(), T0, 0
    while now < T0 + duration:
        gate = throttle.gate(policy, state, now)
        if gate.open:
            guesses += 1
            state = throttle.after_failure(policy, state, now)
        else:
            assert gate.retry_after > dt.timedelta(0)
            now += gate.retry_after
    return guesses


def test_a1_lockout_well_under_100_failures() -> None:
    assert hammer(ACCOUNT, dt.timedelta(minutes=2)) == 10  # locked at the 10th failure
    assert hammer(ACCOUNT, dt.timedelta(days=1)) == 16
    assert hammer(ACCOUNT, dt.timedelta(days=30)) < 50
    assert hammer(ADDRESS, dt.timedelta(days=1)) < 50


def test_blocked_verdicts_say_delayed_or_locked() -> None:
    state = ThrottleState()
    for _ in range(4):
        state = throttle.after_failure(ACCOUNT, state, T0)
    gate = throttle.gate(ACCOUNT, state, T0)
    assert gate.verdict is Verdict.DELAYED and gate.retry_after == S
    assert throttle.gate(ACCOUNT, state, T0 + S).open
    for _ in range(6):
        state = throttle.after_failure(ACCOUNT, state, T0)
    gate = throttle.gate(ACCOUNT, state, T0 + MIN)
    assert gate.verdict is Verdict.LOCKED and gate.retry_after == 14 * MIN


def test_success_resets_the_account_but_not_the_address() -> None:
    state = ThrottleState()
    for _ in range(5):
        state = throttle.after_failure(ADDRESS, state, T0)
    assert throttle.after_success(ACCOUNT, state) == ThrottleState()
    assert throttle.after_success(ADDRESS, state) == state


def test_counters_are_forgotten_after_a_quiet_period_counted_from_the_block_end() -> None:
    state = ThrottleState()
    for _ in range(10):
        state = throttle.after_failure(ACCOUNT, state, T0)
    assert state.blocked_until == T0 + 15 * MIN
    # 24 h after the last failure, but less than 24 h after the lock ended: still counted.
    assert throttle.current(ACCOUNT, state, T0 + 24 * H).failures == 10
    assert throttle.current(ACCOUNT, state, T0 + 24 * H + 15 * MIN) == ThrottleState()


def test_unlock_resets_the_counter() -> None:
    state = ThrottleState()
    for _ in range(12):
        state = throttle.after_failure(ACCOUNT, state, T0)
    assert throttle.gate(ACCOUNT, throttle.unlocked(state), T0).open
    assert throttle.unlocked(state).failures == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=40))
def test_property_failures_only_grow_and_blocks_only_lengthen(gaps: list[int]) -> None:
    state, now = ThrottleState(), T0
    for gap in gaps:
        now += dt.timedelta(seconds=gap)
        before = throttle.current(ACCOUNT, state, now)
        state = throttle.after_failure(ACCOUNT, state, now)
        assert state.failures == before.failures + 1
        block = ACCOUNT.block_after(state.failures)
        assert (state.blocked_until is None) == (block is None)
        if state.failures > 1 and before.failures > 0:
            prev = ACCOUNT.block_after(before.failures) or dt.timedelta(0)
            assert (block or dt.timedelta(0)) >= prev


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_address_keys(address: str, key: str) -> None:
    assert throttle.address_key(address) == key


@pytest.mark.parametrize("bad", ["", "localhost", "999.1.1.1", "1.2.3.4:80"])
def test_address_key_refuses_what_is_not_an_ip_address(bad: str) -> None:
    with pytest.raises(ValueError):
        throttle.address_key(bad)


def test_policy_checks_its_numbers() -> None:
    with pytest.raises(ValueError, match="below lockout_failures"):
        throttle.ThrottlePolicy(10, S, 10, MIN, H, H, True)
    with pytest.raises(ValueError, match="at most max_lockout"):
        throttle.ThrottlePolicy(1, S, 10, 2 * H, H, H, True)
