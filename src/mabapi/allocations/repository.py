"""Every SQL statement of allocations: snapshots (the allocation served for a day, stored
once per distinct answer, and the units it served), what late conversions read (recent
rows, revisions, conversion times) and segment sums."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Date, cast, func, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.counts.models import Assignment, LiveMetric
from mabapi.db.base import utcnow
from mabapi.db.dialect import insert_for
from mabapi.experiments.models import (
    AllocationSnapshot,
    ExperimentMetric,
    MetricRevision,
)


async def latest_snapshot_before(
    session: AsyncSession, experiment_id: str, for_date: date
) -> AllocationSnapshot | None:
    statement = (
        select(AllocationSnapshot)
        .where(
            AllocationSnapshot.experiment_id == experiment_id,
            AllocationSnapshot.for_date < for_date,
        )
        .order_by(AllocationSnapshot.for_date.desc(), AllocationSnapshot.id.desc())
        .limit(1)
    )
    result: AllocationSnapshot | None = await session.scalar(statement)
    return result


async def served_units(session: AsyncSession, experiment_id: str) -> dict[str, int]:
    """Impressions per variant that mabapi's allocation served: every real-time unit
    (assigned by it), and reported rows of the days an allocation was served for (an
    allocation snapshot exists). Imported history no allocation was served for is left
    out: it says nothing of what the bandit earned."""
    snapshot_days = (
        select(AllocationSnapshot.for_date)
        .where(AllocationSnapshot.experiment_id == experiment_id)
        .distinct()
    )
    reported = (
        select(ExperimentMetric.variant_id, func.sum(ExperimentMetric.impressions))
        .where(
            ExperimentMetric.experiment_id == experiment_id,
            ExperimentMetric.date.in_(snapshot_days),
        )
        .group_by(ExperimentMetric.variant_id)
    )
    live = (
        select(LiveMetric.variant_id, func.sum(LiveMetric.impressions))
        .where(LiveMetric.experiment_id == experiment_id)
        .group_by(LiveMetric.variant_id)
    )
    units: dict[str, int] = {}
    for statement in (reported, live):
        for variant_id, impressions in await session.execute(statement):
            units[variant_id] = units.get(variant_id, 0) + int(impressions or 0)
    return units


async def served_allocations(
    session: AsyncSession, experiment_id: str
) -> dict[date, dict[str, Any]]:
    """The last allocation served for each date (percentages per variant)."""
    rows = await session.execute(
        select(AllocationSnapshot.for_date, AllocationSnapshot.allocations)
        .where(AllocationSnapshot.experiment_id == experiment_id)
        .order_by(AllocationSnapshot.for_date, AllocationSnapshot.id)
    )
    served: dict[date, dict[str, Any]] = {}
    for for_date, allocations in rows:
        served[for_date] = allocations
    return served


async def insert_snapshot_if_new(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Record an allocation once per (experiment, date, inputs); True if it was new."""
    statement = (
        insert_for(session, AllocationSnapshot)
        .values(created_at=utcnow(), **values)
        .on_conflict_do_nothing(index_elements=["experiment_id", "for_date", "inputs_hash"])
    )
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


async def snapshot_exists(
    session: AsyncSession, experiment_id: str, for_date: date, inputs_hash: str
) -> bool:
    found = await session.scalar(
        select(AllocationSnapshot.id).where(
            AllocationSnapshot.experiment_id == experiment_id,
            AllocationSnapshot.for_date == for_date,
            AllocationSnapshot.inputs_hash == inputs_hash,
        )
    )
    return found is not None


async def count_snapshots(session: AsyncSession, experiment_id: str) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(AllocationSnapshot)
            .where(AllocationSnapshot.experiment_id == experiment_id)
        )
        or 0
    )


# --- What late conversions read (allocations/late_conversions.py) ---


@dataclass(frozen=True, slots=True)
class RecentRow:
    """A recent day's counts of one variant, and the day they are complete up to: for
    reported totals the day of their last post, for live counts None (they are counted
    as they happen: complete up to now)."""

    variant_id: str
    day: date
    impressions: int
    successes: int
    reported_on: date | None


async def recent_rows(session: AsyncSession, experiment_id: str, since: date) -> list[RecentRow]:
    """Reported and live rows dated on or after `since`, apart."""
    reported = await session.execute(
        select(
            ExperimentMetric.variant_id,
            ExperimentMetric.date,
            ExperimentMetric.impressions,
            ExperimentMetric.successes,
            ExperimentMetric.updated_at,
        ).where(ExperimentMetric.experiment_id == experiment_id, ExperimentMetric.date >= since)
    )
    live = await session.execute(
        select(
            LiveMetric.variant_id,
            LiveMetric.date,
            func.sum(LiveMetric.impressions),
            func.sum(LiveMetric.successes),
        )
        .where(LiveMetric.experiment_id == experiment_id, LiveMetric.date >= since)
        .group_by(LiveMetric.variant_id, LiveMetric.date)
    )
    rows = [RecentRow(r[0], r[1], int(r[2]), int(r[3]), r[4].date()) for r in reported]
    rows += [RecentRow(r[0], r[1], int(r[2]), int(r[3]), None) for r in live]
    return rows


async def revisions_since(
    session: AsyncSession, experiment_id: str, since: date
) -> list[tuple[str, date, date, int]]:
    """(variant, day, day it was posted, successes) of every revision of the days dated on
    or after `since`, in the order they arrived."""
    rows = await session.execute(
        select(
            MetricRevision.variant_id,
            MetricRevision.segment,
            MetricRevision.date,
            MetricRevision.recorded_at,
            MetricRevision.successes,
        )
        .where(MetricRevision.experiment_id == experiment_id, MetricRevision.date >= since)
        .order_by(MetricRevision.recorded_at, MetricRevision.id)
    )
    # Each segment's rows of a variant and day are their own history (keyed apart).
    return [(r[0] if not r[1] else f"{r[0]}\x00{r[1]}", r[2], r[3].date(), int(r[4])) for r in rows]


async def conversion_lags(
    session: AsyncSession, experiment_id: str, since: date
) -> list[tuple[date, date, int]]:
    """(exposure day, conversion day (UTC), conversions) of the real-time units exposed on
    or after `since`."""
    converted = Assignment.converted_at
    day = (
        func.date(converted)
        if session.get_bind().dialect.name == "sqlite"
        else cast(func.timezone("UTC", converted), Date)
    )
    rows = await session.execute(
        select(Assignment.assigned_date, day, func.count())
        .where(
            Assignment.experiment_id == experiment_id,
            Assignment.assigned_date >= since,
            converted.is_not(None),
        )
        .group_by(Assignment.assigned_date, day)
    )
    return [
        (r[0], r[1] if isinstance(r[1], date) else date.fromisoformat(str(r[1])), int(r[2]))
        for r in rows
    ]


# --- Segment sums (allocations/segments.py) ---


async def segment_sums(
    session: AsyncSession, experiment_id: str, *, before: date | None, by_day: bool
) -> list[Any]:
    """(segment, variant, day or None, last post or None, units, successes, value sum,
    sum of squares) of every named segment dated before `before`: reported rows, then
    real-time units (by day if `by_day`)."""
    a = Assignment
    m = ExperimentMetric
    value = func.coalesce(a.conversion_value, 0.0)
    reported = select(
        m.segment,
        m.variant_id,
        m.date if by_day else null(),
        func.max(m.updated_at) if by_day else null(),
        func.sum(m.impressions),
        func.sum(m.successes),
        func.sum(func.coalesce(m.value_sum, 0.0)),
        func.sum(func.coalesce(m.value_sum_squares, 0.0)),
    ).where(m.experiment_id == experiment_id, m.segment != "")
    live = select(
        a.segment,
        a.variant_id,
        a.assigned_date if by_day else null(),
        null(),
        func.count(),
        func.count(a.converted_at),
        func.sum(value),
        func.sum(value * value),
    ).where(a.experiment_id == experiment_id, a.segment.is_not(None))
    if before is not None:
        reported = reported.where(m.date < before)
        live = live.where(a.assigned_date < before)
    reported = reported.group_by(m.segment, m.variant_id, *([m.date] if by_day else []))
    live = live.group_by(a.segment, a.variant_id, *([a.assigned_date] if by_day else []))
    return [row for statement in (reported, live) for row in await session.execute(statement)]


async def segment_daily_rows(session: AsyncSession, experiment_id: str, segment: str) -> list[Any]:
    """(variant, day, units, successes, value sum, sum of squares) of one segment: reported
    rows, then real-time units by exposure day."""
    m = ExperimentMetric
    reported = select(
        m.variant_id,
        m.date,
        m.impressions,
        m.successes,
        func.coalesce(m.value_sum, 0.0),
        func.coalesce(m.value_sum_squares, 0.0),
    ).where(m.experiment_id == experiment_id, m.segment == segment)
    a = Assignment
    value = func.coalesce(a.conversion_value, 0.0)
    live = (
        select(
            a.variant_id,
            a.assigned_date,
            func.count(),
            func.count(a.converted_at),
            func.sum(value),
            func.sum(value * value),
        )
        .where(a.experiment_id == experiment_id, a.segment == segment)
        .group_by(a.variant_id, a.assigned_date)
    )
    return [row for statement in (reported, live) for row in await session.execute(statement)]


async def propensity_sums(
    session: AsyncSession, experiment_id: str
) -> dict[str, tuple[float, ...]]:
    """Per variant, of its real-time units: (units, sum 1/p, sum (1 - p)/p^2, max 1/p), p
    being the propensity stored with each (the sample-ratio check of real-time mode)."""
    p = Assignment.probability
    rows = await session.execute(
        select(
            Assignment.variant_id,
            func.count(),
            func.sum(1.0 / p),
            func.sum((1.0 - p) / (p * p)),
            func.min(p),
        )
        .where(Assignment.experiment_id == experiment_id, p > 0)
        .group_by(Assignment.variant_id)
    )
    return {
        str(r[0]): (float(r[1]), float(r[2] or 0.0), float(r[3] or 0.0), 1.0 / float(r[4]))
        for r in rows
    }
