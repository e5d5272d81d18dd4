"""Segments: each segment's totals (reported rows naming it, and real-time units
assigned in it), its posteriors under the experiment's pooling, and the listing of every
segment with its leader. Reads only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from sqlalchemy import Date, Float, String, column, func, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.base import UTCDateTime
from mabapi.experiments.models import ExperimentMetric, MetricKind, Variant
from mabapi.stats.allocation import probability_best
from mabapi.stats.posterior import BetaPosterior
from mabapi.stats.segments import PooledSegments, Pooling, all_variants

# The assignments table, named without importing the assignments package (above this
# one): what segment counts need.
_ASSIGNMENTS = table(
    "assignments",
    column("experiment_id", String),
    column("variant_id", String),
    column("segment", String),
    column("assigned_date", Date),
    column("converted_at", UTCDateTime),
    column("conversion_value", Float),
)


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """Units and successes per (segment, variant), segments in name order."""

    segments: tuple[str, ...]
    units: np.ndarray  # (segments, variants)
    successes: np.ndarray

    def index(self, segment: str) -> int | None:
        try:
            return self.segments.index(segment)
        except ValueError:
            return None


async def counts(
    session: AsyncSession, experiment_id: str, variant_ids: list[str], *, before: date | None
) -> SegmentCounts:
    """Every named segment's totals dated before `before` (all data if None): reported
    rows naming it plus the real-time units assigned in it (and their conversions)."""
    m = ExperimentMetric
    reported = select(m.segment, m.variant_id, func.sum(m.impressions), func.sum(m.successes))
    reported = reported.where(m.experiment_id == experiment_id, m.segment != "")
    a = _ASSIGNMENTS.c
    live = select(a.segment, a.variant_id, func.count(), func.count(a.converted_at))
    live = live.where(a.experiment_id == experiment_id, a.segment.is_not(None))
    if before is not None:
        reported = reported.where(m.date < before)
        live = live.where(a.assigned_date < before)
    totals: dict[tuple[str, str], list[float]] = {}
    for statement in (
        reported.group_by(m.segment, m.variant_id),
        live.group_by(a.segment, a.variant_id),
    ):
        for segment, variant, units, successes in await session.execute(statement):
            acc = totals.setdefault((segment, variant), [0.0, 0.0])
            acc[0] += float(units or 0)
            acc[1] += float(successes or 0)
    segments = tuple(sorted({segment for segment, _ in totals}))
    column_of = {variant: k for k, variant in enumerate(variant_ids)}
    units = np.zeros((len(segments), len(variant_ids)))
    successes = np.zeros_like(units)
    for (segment, variant), (n, s) in totals.items():
        if variant in column_of:
            i = segments.index(segment)
            units[i, column_of[variant]] = n
            successes[i, column_of[variant]] = min(s, n)
    return SegmentCounts(segments, units, successes)


def pooled(found: SegmentCounts, pooling: Pooling) -> list[PooledSegments]:
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
    variants: list[Variant],
    pooling: Pooling,
    *,
    overall_leader: str | None,
    higher_is_better: bool,
) -> list[SegmentSummary]:
    """Every segment's P(best) of the active variants (exact), its leader and whether
    the leader differs from the overall one."""
    active = [k for k, v in enumerate(variants) if v.active]
    by_variant = pooled(found, pooling) if len(found.segments) else []
    result = []
    for i, segment in enumerate(found.segments):
        posteriors: list[BetaPosterior] = [by_variant[k].posteriors[i] for k in active]
        probabilities: list[float] = (
            [float(p) for p in probability_best(posteriors, higher_is_better=higher_is_better)]
            if active
            else []
        )
        named = {variants[k].id: float(p) for k, p in zip(active, probabilities, strict=True)}
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


def supports(kind: MetricKind) -> bool:
    """Segment pooling models conversions (beta-binomial); value metrics are answered
    over all traffic."""
    return kind is MetricKind.CONVERSION


async def daily(
    session: AsyncSession, experiment_id: str, segment: str
) -> list[tuple[str, date, float, float]]:
    """(variant, day, units, successes) of one segment, reported plus real time, oldest
    first."""
    m = ExperimentMetric
    reported = select(m.variant_id, m.date, m.impressions, m.successes).where(
        m.experiment_id == experiment_id, m.segment == segment
    )
    a = _ASSIGNMENTS.c
    live = (
        select(a.variant_id, a.assigned_date, func.count(), func.count(a.converted_at))
        .where(a.experiment_id == experiment_id, a.segment == segment)
        .group_by(a.variant_id, a.assigned_date)
    )
    rows: dict[tuple[str, date], list[float]] = {}
    for statement in (reported, live):
        for variant, day, units, successes in await session.execute(statement):
            day = day if isinstance(day, date) else date.fromisoformat(str(day))
            acc = rows.setdefault((variant, day), [0.0, 0.0])
            acc[0] += float(units or 0)
            acc[1] += float(successes or 0)
    return [
        (v, d, n, s) for (v, d), (n, s) in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0]))
    ]
