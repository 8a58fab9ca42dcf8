"""Per-key upload rate limits, shared by every API process through Redis.

A generic cell rate algorithm (GCRA) in one Lua script: one round trip per upload,
one small key per API key, and Redis's own clock, so API processes on different
machines agree. A key may send ``burst`` uploads at once, then one every
``1/rate`` seconds; a refused upload learns how long to wait.

When Redis does not answer, uploads are let through (and a warning is logged): the
upload path already accepts documents while Redis is down, leaving their messages to
the reconciler, and a Redis outage should not turn into an upload outage.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

MICROS: Final = 1_000_000
WARN_EVERY_S: Final = 30.0

# KEYS[1]: the key's theoretical arrival time (TAT), in microseconds of Redis's clock.
# ARGV[1]: microseconds between uploads at the sustained rate; ARGV[2]: the burst.
# Returns 0 when the upload is allowed, else the microseconds until it would be.
_GCRA: Final = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - now - burst * interval
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
           'PX', math.ceil((next_tat - now) / 1000) + 1000)
return 0
"""


class RateLimiter:
    """Decides whether a key may upload now; ``acquire`` answers the seconds to wait."""

    def __init__(self, client: aioredis.Redis, namespace: str, *, rate: float, burst: int) -> None:
        self.namespace = namespace
        self.default_rate = rate
        self.burst = burst
        self.script: Any = client.register_script(_GCRA)
        self._warned_at = -math.inf

    async def acquire(self, bucket: str, rate: float | None = None) -> int | None:
        """None if ``bucket`` may upload now, else whole seconds to wait (at least 1).

        ``rate`` is the key's own uploads per second (None: the default; 0: unlimited).
        """
        per_second = self.default_rate if rate is None else rate
        if per_second <= 0:
            return None
        interval = max(1, round(MICROS / per_second))
        try:
            wait_us = int(
                await self.script(
                    keys=[f"{self.namespace}:ratelimit:ingest:{bucket}"],
                    args=[interval, self.burst],
                )
            )
        except RedisError:
            self._warn_unlimited()
            return None
        if wait_us <= 0:
            return None
        return max(1, math.ceil(wait_us / MICROS))

    def _warn_unlimited(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "rate limit: Redis does not answer; uploads are not rate limited until it does",
                exc_info=True,
            )
