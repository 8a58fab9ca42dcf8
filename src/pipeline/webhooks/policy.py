"""When a failed delivery is tried again: backoff with full jitter, or ``Retry-After``.

The ``n``-th retry waits a random time between the minimum backoff and a ceiling that
doubles with each attempt (``min * 2**(n-1)``, at most the maximum): "full jitter", so
that the deliveries an outage failed together do not all come back together. A
receiver's ``Retry-After`` (seconds or an HTTP date) replaces it, capped at the maximum
backoff (a receiver may not park a delivery for longer than the policy allows).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec


class RetryPolicy(msgspec.Struct, frozen=True):
    max_attempts: int
    min_backoff_ms: int
    max_backoff_ms: int

    def ceiling_ms(self, attempts: int) -> int:
        """The longest wait after the ``attempts``-th failed attempt (1, 2, ...)."""
        exponent = min(max(attempts - 1, 0), 40)
        ceiling: int = self.min_backoff_ms * 2**exponent
        return min(self.max_backoff_ms, ceiling)

    def delay_ms(
        self,
        attempts: int,
        retry_after_s: float | None = None,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> int:
        """How long to wait after the ``attempts``-th failed attempt."""
        if retry_after_s is not None:
            return min(self.max_backoff_ms, max(0, round(retry_after_s * 1000)))
        return round(uniform(self.min_backoff_ms, self.ceiling_ms(attempts)))

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
