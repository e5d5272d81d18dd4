"""Segments: each segment's totals (reported rows naming it, and real-time units
assigned in it), its posteriors under the experiment's pooling, and the listing of every
segment with its leader. Reads only (the registry is `experiments.segment_repository`)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import repository
from mabapi.allocations.cache import KeyedLocks
from mabapi.experiments.models import MetricKind, Variant
from mabapi.stats.allocation import probability_best
from mabapi.stats.delay import DelayCurve, effective_units
from mabapi.stats.posterior import Posterior
from mabapi.stats.segments import (
    PooledSegments,
    PooledValueSegments,
    Pooling,
    all_value_variants,
    all_variants,
)


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """Units and successes per (segment, variant), segments in name order."""

    segments: tuple[str, ...]
    units: np.ndarray  # (segments, variants)
    successes: np.ndarray
    value_sum: np.ndarray
    value_sum_squares: np.ndarray

    def index(self, segment: str) -> int | None:
        try:
            return self.segments.index(segment)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class DayAdjustment:
    """How each day enters a segment's totals, as it enters the totals over all traffic:
    `weights`, each day's forgetting weight (a day not in it counts 0); `curve` with
    `now`, a conversion day's impressions replaced by its effective exposures at its age
    (late conversions; a reported row is aged to when it was last posted)."""

    weights: Mapping[date, float] | None = None
    curve: DelayCurve | None = None
    now: date | None = None

    def weight(self, day: date) -> float:
        return 1.0 if self.weights is None else self.weights.get(day, 0.0)

    def units(self, day: date, units: float, successes: float, reported_on: date | None) -> float:
        if self.curve is None or self.now is None:
            return units
        complete_on = self.now if reported_on is None else min(reported_on, self.now)
        share = self.curve.share(np.array([float((complete_on - day).days)]))
        return float(effective_units(np.array([units]), np.array([successes]), share)[0])


def _day(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


async def counts(
    session: AsyncSession,
    experiment_id: str,
    variant_ids: list[str],
    *,
    before: date | None,
    adjust: DayAdjustment | None = None,
) -> SegmentCounts:
    """Every named segment's totals dated before `before` (all data if None): reported
    rows naming it plus the real-time units assigned in it (and their conversions), each
    day adjusted by `adjust` if given (then read day by day)."""
    by_day = adjust is not None
    rows = await repository.segment_sums(session, experiment_id, before=before, by_day=by_day)
    totals: dict[tuple[str, str], list[float]] = {}
    for segment, variant, day, updated, *sums in rows:
        amounts = [float(amount or 0) for amount in sums]
        if adjust is not None:
            when = _day(day)
            weight = adjust.weight(when)
            posted = None if updated is None else _day(updated)
            amounts[0] = adjust.units(when, amounts[0], amounts[1], posted)
            amounts = [weight * amount for amount in amounts]
        acc = totals.setdefault((segment, variant), [0.0, 0.0, 0.0, 0.0])
        for position, amount in enumerate(amounts):
            acc[position] += amount
    segments = tuple(sorted({segment for segment, _ in totals}))
    column_of = {variant: k for k, variant in enumerate(variant_ids)}
    units = np.zeros((len(segments), len(variant_ids)))
    successes, value_sum, squares = (np.zeros_like(units) for _ in range(3))
    for (segment, variant), (n, s, v, q) in totals.items():
        if variant in column_of:
            i, k = segments.index(segment), column_of[variant]
            units[i, k] = max(n, s)  # corrected exposures never below the successes
            successes[i, k] = s
            value_sum[i, k] = v
            squares[i, k] = q
    return SegmentCounts(segments, units, successes, value_sum, squares)


Fit = tuple[SegmentCounts, "list[PooledSegments] | list[PooledValueSegments]"]


class SegmentFits:
    """Each experiment's segment counts and pooled model (`pooled`), computed once and
    reused by every segment's request for up to `ttl` seconds: the model is fitted over
    all segments, and refitting it per segment asked made S segments cost S fits.

    Keyed by what the fit depends on (experiment, variants, day planned, pooling, day
    adjustments) and by `epoch()` (the answer cache's: bumped by every write of reported
    data through this process, so a post is seen at once). Live exposures and conversions,
    and other processes' writes, show within `ttl`. Bounded (least recently used out)."""

    def __init__(
        self, ttl: float, *, epoch: Callable[[], int] = lambda: 0, capacity: int = 256
    ) -> None:
        self._ttl = ttl
        self._epoch = epoch
        self._capacity = capacity
        self._entries: OrderedDict[Hashable, tuple[float, Fit]] = OrderedDict()
        self._locks: KeyedLocks[Hashable] = KeyedLocks()
        self.computed = 0  # fits computed (tests and benchmarks read it)

    def _fresh(self, key: Hashable) -> Fit | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Fit]]) -> Fit:
        key = (key, self._epoch())
        if (found := self._fresh(key)) is not None:
            return found
        async with self._locks.hold(key):  # one computation per key; the others wait
            if (found := self._fresh(key)) is not None:
                return found
            value = await compute()
            self.computed += 1
            if self._ttl > 0:
                self._entries[key] = (time.monotonic() + self._ttl, value)
                while len(self._entries) > self._capacity:
                    self._entries.popitem(last=False)
            return value


async def fitted(
    session: AsyncSession,
    experiment_id: str,
    variant_ids: list[str],
    *,
    before: date | None,
    pooling: Pooling,
    kind: MetricKind,
    adjust: DayAdjustment | None = None,
    fits: SegmentFits | None = None,
) -> Fit:
    """Every segment's counts and pooled posteriors (`counts`, then `pooled`), from
    `fits` when it has them."""

    async def compute() -> Fit:
        found = await counts(session, experiment_id, variant_ids, before=before, adjust=adjust)
        return found, (pooled(found, pooling, kind) if found.segments else [])

    if fits is None:
        return await compute()
    adjusted: Any = None
    if adjust is not None:
        weights = None if adjust.weights is None else tuple(sorted(adjust.weights.items()))
        adjusted = (weights, adjust.curve, adjust.now)
    key = (experiment_id, tuple(variant_ids), before, pooling, kind.value, adjusted)
    return await fits.get(key, compute)


def pooled(
    found: SegmentCounts, pooling: Pooling, kind: MetricKind = MetricKind.CONVERSION
) -> list[PooledSegments] | list[PooledValueSegments]:
    """Every variant's segment posteriors (stats/segments.py): of rates for conversions,
    of means for values."""
    if kind is MetricKind.VALUE:
        return all_value_variants(
            found.units, found.value_sum, found.value_sum_squares, pooling=pooling
        )
    return all_variants(found.units, found.successes, pooling=pooling)


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    segment: str
    units: float
    leader: str | None
    leader_probability: float | None
    probability_best: dict[str, float]
    differs: bool  # its leader is not the overall leader


def leaders(
    found: SegmentCounts,
    by_variant: list[PooledSegments] | list[PooledValueSegments],
    variants: list[Variant],
    *,
    active: Sequence[bool],
    rows: Sequence[int],
    overall_leader: str | None,
    higher_is_better: bool,
) -> list[SegmentSummary]:
    """The segments at `rows` (of `found`): each one's P(best) of the `active` variants
    (those traffic can reach; exact, from its pooled posteriors `by_variant`, fitted on
    the counts as the posteriors use them), its units (from `found`: as posted), its
    leader and whether the leader differs from the overall one."""
    reachable = [k for k, on in enumerate(active) if on]
    result = []
    for i in rows:
        segment = found.segments[i]
        posteriors: list[Posterior] = [by_variant[k].posteriors[i] for k in reachable]
        probabilities: list[float] = (
            [float(p) for p in probability_best(posteriors, higher_is_better=higher_is_better)]
            if reachable
            else []
        )
        named = {variants[k].id: float(p) for k, p in zip(reachable, probabilities, strict=True)}
        leader = max(named, key=lambda v: named[v]) if named else None
        result.append(
            SegmentSummary(
                segment=segment,
                units=float(found.units[i].sum()),
                leader=leader,
                leader_probability=named.get(leader) if leader else None,
                probability_best=named,
                differs=leader is not None
                and overall_leader is not None
                and leader != overall_leader,
            )
        )
    return result


def totals_of(found: SegmentCounts, row: int, variants: int) -> list[tuple[float, ...]]:
    """(units, successes, value sum, sum of squares) of one segment, per variant."""
    return [
        (
            float(found.units[row, k]),
            float(found.successes[row, k]),
            float(found.value_sum[row, k]),
            float(found.value_sum_squares[row, k]),
        )
        for k in range(variants)
    ]


async def daily(
    session: AsyncSession, experiment_id: str, segment: str
) -> list[tuple[str, date, float, float, float, float]]:
    """(variant, day, units, successes, value sum, sum of squares) of one segment,
    reported plus real time, oldest first."""
    found = await repository.segment_daily_rows(session, experiment_id, segment)
    rows: dict[tuple[str, date], list[float]] = {}
    for variant, day, *sums in found:
        day = day if isinstance(day, date) else date.fromisoformat(str(day))
        acc = rows.setdefault((variant, day), [0.0, 0.0, 0.0, 0.0])
        for position, amount in enumerate(sums):
            acc[position] += float(amount or 0)
    ordered = sorted(rows.items(), key=lambda item: (item[0][1], item[0][0]))
    return [(v, d, n, s, x, q) for (v, d), (n, s, x, q) in ordered]
