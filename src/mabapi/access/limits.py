"""Per-key rate limits: a token bucket in this process, or a shared window in Redis.

In-process limits hold per worker (N workers let through up to N times the rate); with
several workers or replicas, set MABAPI_REDIS_URL and every process counts in one place.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

logger = logging.getLogger("mabapi.limits")


class RateLimiter(Protocol):
    async def wait_time(self, key: str) -> float:
        """0 if the request may go ahead (and count it), else seconds until it may."""
        ...

    async def close(self) -> None: ...


class LocalRateLimiter:
    """Token bucket per key: `rate` requests per second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    async def wait_time(self, key: str) -> float:
        now = time.monotonic()
        tokens, updated = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    """One-second windows counted in Redis (INCR + EXPIRE in one round trip): at most
    `burst` requests per key per second across every process. If Redis is unreachable
    the request goes ahead (a limit is not worth an outage) and a warning is logged."""

    def __init__(self, url: str, burst: int) -> None:
        import redis.asyncio as redis  # only needed when MABAPI_REDIS_URL is set

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._burst = burst

    async def wait_time(self, key: str) -> float:
        now = time.time()
        window = math.floor(now)
        name = f"mabapi:rate:{key}:{window}"
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, 2)
                count, _ = await pipe.execute()
        except Exception as error:
            logger.warning("rate limiter: redis unavailable (%s)", type(error).__name__)
            return 0.0
        if int(count) <= self._burst:
            return 0.0
        return window + 1 - now

    async def close(self) -> None:
        await self._client.aclose()
