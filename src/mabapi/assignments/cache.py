"""Per-process cache of each experiment's current allocation.

Assignment reads the allocation on every request; computing it (a few SQL aggregates and
the quadrature) on every request would cost more than the request itself. Entries live
for `ttl` seconds; a stale entry is served while one background task recomputes it, so
the recomputation is off the request path. Nothing else depends on this process: another
worker simply has its own cache, at most `ttl` seconds apart.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.experiments import service as experiments


@dataclass(frozen=True, slots=True)
class CachedAllocation:
    variant_ids: tuple[str, ...]
    shares: tuple[float, ...]
    expires: float


class AllocationCache:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], ttl: float) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._entries: dict[str, CachedAllocation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _compute(self, experiment_id: str) -> CachedAllocation:
        # Real time: everything observed so far counts (the day being planned is today,
        # so "strictly before tomorrow"). Not recorded as a snapshot on every refresh.
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        async with self._sessionmaker() as session, session.begin():
            result = await experiments.compute_allocation(
                session, experiment_id=experiment_id, for_date=tomorrow, record=False
            )
        entry = CachedAllocation(result.variant_ids, result.shares, time.monotonic() + self._ttl)
        self._entries[experiment_id] = entry
        return entry

    async def get(self, experiment_id: str) -> CachedAllocation:
        entry = self._entries.get(experiment_id)
        now = time.monotonic()
        if entry is not None:
            if now >= entry.expires and experiment_id not in self._refreshing:
                self._refreshing.add(experiment_id)
                task = asyncio.create_task(self._refresh(experiment_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return entry
        lock = self._locks.setdefault(experiment_id, asyncio.Lock())
        async with lock:  # one computation per experiment, however many requests wait
            entry = self._entries.get(experiment_id)
            if entry is not None:
                return entry
            return await self._compute(experiment_id)

    async def _refresh(self, experiment_id: str) -> None:
        try:
            await self._compute(experiment_id)
        except Exception:  # keep serving the stale entry; the next request retries
            self._entries.pop(experiment_id, None)
        finally:
            self._refreshing.discard(experiment_id)

    def invalidate(self, experiment_id: str) -> None:
        self._entries.pop(experiment_id, None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
