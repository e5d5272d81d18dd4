"""Per-process memory of real-time mode: each experiment's current allocation, and the
units whose assignment (or counted conversion) this process has seen.

Assignment reads the allocation on every request; computing it (a few SQL aggregates and
the quadrature) on every request would cost more than the request itself, so it is kept
in the one answer cache (`mabapi.allocations.cache.AnswerCache`): up to `ttl` seconds, a stale entry
served while one background task recomputes it, dropped at once by a change to the
experiment through this process. Nothing else depends on this process: another worker
simply has its own, at most `ttl` seconds apart.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.allocations import service as allocation_service
from mabapi.allocations.cache import AnswerCache, KeyedLocks
from mabapi.allocations.segments import SegmentFits
from mabapi.allocations.state import AllocationState, read_state
from mabapi.db.transactions import background_transaction
from mabapi.experiments import segment_repository as segment_registry
from mabapi.experiments.models import MetricKind
from mabapi.stats.allocation import largest_remainder_percentages


@dataclass(frozen=True, slots=True)
class CachedAllocation:
    variant_ids: tuple[str, ...]
    shares: tuple[float, ...]
    # The experiment's state when computed (at most `ttl` seconds old).
    winner_variant_id: str | None = None
    live_generation: int = 0
    counts_conversions: bool = True  # conversion metric (once per unit), not values
    # Running sums of `shares` for `stats.policies.draw_cumulative`: computed once per
    # cached allocation, not once per new unit.
    cumulative_shares: tuple[float, ...] = field(init=False)
    # What assignment serves, in percent (GET /allocations' `live`): computed once too.
    live_percentages: dict[str, float] = field(init=False)
    # For a segment asked for: "own" (its split), "new" (no data yet: the split over all
    # traffic; its units are stored in it), "capped" (the experiment has its most
    # segments: the split over all traffic, and its units are stored without it).
    segment_state: str = "own"
    # What a flag evaluation (OpenFeature) needs: the experiment's status and policy, and
    # each variant's value (None: its id), in `variant_ids` order.
    status: str = "running"
    archived: bool = False
    algorithm: str = "thompson"
    values: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cumulative_shares", tuple(itertools.accumulate(self.shares)))
        object.__setattr__(self, "live_percentages", self._percentages())

    def _percentages(self) -> dict[str, float]:
        """What assignment serves now, in percent (a concluded experiment: its winner)."""
        if self.winner_variant_id is not None:
            return {v: 100.0 if v == self.winner_variant_id else 0.0 for v in self.variant_ids}
        rounded = largest_remainder_percentages(self.shares)
        return dict(zip(self.variant_ids, rounded, strict=True))


class UnitMemo:
    """Units this process has seen, keyed by (experiment, generation, unit): one instance
    for assignments, one for counted (once-per-unit) conversions.

    Neither changes until the experiment is reset, and a reset bumps the generation, so a
    remembered answer is the database's answer: returning units and retried conversions
    are answered without a round trip. Bounded: the oldest entries are dropped first.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, int, str], tuple[str, float]] = OrderedDict()

    def get(self, experiment_id: str, generation: int, unit_id: str) -> tuple[str, float] | None:
        return self._entries.get((experiment_id, generation, unit_id))

    def put(
        self, experiment_id: str, generation: int, unit_id: str, variant: tuple[str, float]
    ) -> None:
        self._entries[(experiment_id, generation, unit_id)] = variant
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


def entry_of(
    state: AllocationState, decided: allocation_service.Allocation | None = None
) -> CachedAllocation:
    """The entry assignment draws from, decided from `state` (tomorrow's), unless the
    caller has decided it already (`decided`)."""
    result = decided if decided is not None else allocation_service.decide(state)
    experiment = state.experiment
    values = {variant.id: variant.value for variant in experiment.variants}
    return CachedAllocation(
        result.variant_ids,
        result.shares,
        winner_variant_id=experiment.winner_variant_id,
        live_generation=experiment.live_generation,
        counts_conversions=experiment.metric_kind != MetricKind.VALUE,
        status=str(
            experiment.status.value if hasattr(experiment.status, "value") else experiment.status
        ),
        archived=experiment.archived,
        algorithm=result.algorithm,
        values=tuple(values.get(v) for v in result.variant_ids),
    )


class AllocationCache:
    """The allocation real-time assignment draws from, per experiment: the one cache
    (`mabapi.allocations.cache.AnswerCache`) keyed by experiment id, with a computation
    of its own."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        ttl: float,
        *,
        fits: SegmentFits | None = None,
        max_segments: int = 1000,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._cache: AnswerCache[tuple[str, str | None], CachedAllocation] = AnswerCache(ttl)
        self._segments: dict[str, set[str]] = {}  # per experiment, segments asked for
        self._fits = fits
        self._max_segments = max_segments

    @property
    def locks(self) -> KeyedLocks[tuple[str, str | None]]:
        return self._cache.locks

    async def _compute(self, experiment_id: str, segment: str | None) -> CachedAllocation:
        if segment is not None:
            # A segment never seen (one lookup) draws from the split over all traffic,
            # computed once for every such segment: no segment model is fitted for it.
            async with background_transaction(self._sessionmaker) as session:
                if await segment_registry.known(session, experiment_id, segment):
                    state = "own"
                elif await segment_registry.registered(session, experiment_id) < self._max_segments:
                    state = "new"
                else:
                    state = "capped"
            if state != "own":
                overall = await self.get(experiment_id, None)
                return replace(overall, segment_state=state)
        async with background_transaction(self._sessionmaker) as session:
            return await self.read(session, experiment_id, segment)

    async def read(
        self, session: AsyncSession, experiment_id: str, segment: str | None
    ) -> CachedAllocation:
        """The entry, read with `session`. Real time: everything observed so far counts
        (the day being planned is today, so "strictly before tomorrow"). Not recorded as
        a snapshot on every refresh."""
        state = await read_state(
            session,
            experiment_id=experiment_id,
            for_date=datetime.now(UTC).date() + timedelta(days=1),
            segment=segment,
            fits=self._fits,
        )
        return entry_of(state)

    async def get(self, experiment_id: str, segment: str | None = None) -> CachedAllocation:
        """The allocation assignment draws from (for units of `segment`, if given)."""
        if segment is not None:
            known = self._segments.setdefault(experiment_id, set())
            if len(known) < 10_000:  # bounded: the cache itself is too
                known.add(segment)
        return await self._cache.get(
            (experiment_id, segment), lambda: self._compute(experiment_id, segment)
        )

    def holds(self, experiment_id: str) -> bool:
        """Whether this process has the experiment's all-traffic entry (fresh, or stale
        and being refreshed)."""
        return self._cache.peek((experiment_id, None)) is not None

    async def get_within(
        self,
        session: AsyncSession,
        experiment_id: str,
        state: AllocationState | None = None,
        decided: allocation_service.Allocation | None = None,
    ) -> CachedAllocation:
        """The all-traffic entry; when there is none, from `state` (tomorrow's, read by
        the caller) or read with the caller's `session`, so a caller answering with it
        too (GET /allocations' `live`) reads once, in one transaction. An entry there
        (fresh, or stale and being refreshed) is used as is."""
        if self.holds(experiment_id):
            return await self.get(experiment_id)

        async def compute() -> CachedAllocation:
            if state is not None:
                return entry_of(state, decided)
            return await self.read(session, experiment_id, None)

        return await self._cache.get((experiment_id, None), compute)

    def invalidate(self, experiment_id: str) -> None:
        self._cache.invalidate((experiment_id, None))
        for segment in self._segments.get(experiment_id, ()):
            self._cache.invalidate((experiment_id, segment))

    async def close(self) -> None:
        await self._cache.close()
