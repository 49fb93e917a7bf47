"""Retry with exponential backoff and jitter; which errors are worth retrying.

Attempt ``k`` (1-based) that fails with a :class:`~sync.transport.errors.RetryableError` is
followed by a pause of ``min(max_delay, base_delay * factor ** (k - 1))``, shortened by a
random fraction of at most ``jitter`` (so that many nodes cut off by the same outage do not
come back in step), then attempt ``k + 1``, up to ``max_attempts``. Any other exception is
raised at once: an untrusted relay, a refused key or a refused request will not fix itself.
The pause and the randomness are injected, so tests never wait.
"""

from __future__ import annotations

import logging
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sync.transport.errors import RetryableError

log = logging.getLogger("zastava.transport")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.5  # each pause is cut by up to this fraction, at random

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("delays must not be negative and factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def delay(self, attempt: int, u: float) -> float:
        """The pause after failed attempt ``attempt`` (1-based), with ``u`` uniform in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * self.factor ** (attempt - 1))
        return ceiling * (1.0 - self.jitter * u)


OnRetry = Callable[[int, RetryableError, float], None]


def with_retries(
    op: Callable[[], T],
    *,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    random: Callable[[], float] = _random.random,
    on_retry: OnRetry | None = None,
) -> T:
    """Run ``op`` until it returns, retrying :class:`RetryableError` with backoff.

    ``on_retry(attempt, error, delay)`` is called before each pause. After the last attempt
    the last error is raised; errors that are not retryable are raised at once.
    """
    policy = policy or RetryPolicy()
    attempt = 1
    while True:
        try:
            return op()
        except RetryableError as e:
            if attempt >= policy.max_attempts:
                log.warning("giving up after %d attempts: %s", attempt, e)
                raise
            delay = policy.delay(attempt, random())
            log.info("attempt %d failed (%s); retrying in %.1f s", attempt, e, delay)
            if on_retry is not None:
                on_retry(attempt, e, delay)
            sleep(delay)
            attempt += 1
