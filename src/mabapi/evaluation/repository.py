"""The logged data an evaluation reads, aggregated in SQL: real-time units by (segment,
variant, propensity) and reported rows by (day, segment, variant), never row by row."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Float, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.counts.models import Assignment
from mabapi.experiments.models import ExperimentMetric


async def unit_groups(
    session: AsyncSession,
    experiment_id: str,
    *,
    values: bool,
    by_segment: bool,
    start: date | None,
    end: date | None,
    segment: str | None,
    limit: int,
) -> list[Any]:
    """(segment or "", variant, propensity, units, reward sum, reward sum of squares,
    rewarded units) of the real-time units, at most `limit` groups (+1 to tell)."""
    a = Assignment
    converted = a.converted_at.is_not(None)
    reward = func.coalesce(a.conversion_value, 0.0) if values else case((converted, 1.0), else_=0.0)
    context = func.coalesce(a.segment, "") if by_segment else literal("")
    statement = (
        select(
            context,
            a.variant_id,
            a.probability,
            func.count(),
            func.sum(cast(reward, Float)),
            func.sum(cast(reward * reward, Float)),
            func.sum(case((converted, 1), else_=0)),
        )
        .where(a.experiment_id == experiment_id, a.probability > 0)
        .group_by(context, a.variant_id, a.probability)
        .limit(limit + 1)
    )
    if start is not None:
        statement = statement.where(a.assigned_date >= start)
    if end is not None:
        statement = statement.where(a.assigned_date <= end)
    if segment is not None:
        statement = statement.where(a.segment == segment)
    return list(await session.execute(statement))


async def reported_cells(
    session: AsyncSession,
    experiment_id: str,
    *,
    by_segment: bool,
    start: date | None,
    end: date | None,
    segment: str | None,
    limit: int,
) -> list[Any]:
    """(day, segment or "", variant, units, successes, value sum, sum of squares) of the
    reported daily rows, at most `limit` cells (+1 to tell)."""
    m = ExperimentMetric
    context = m.segment if by_segment else literal("")
    statement = (
        select(
            m.date,
            context,
            m.variant_id,
            func.sum(m.impressions),
            func.sum(m.successes),
            func.sum(func.coalesce(m.value_sum, 0.0)),
            func.sum(func.coalesce(m.value_sum_squares, 0.0)),
        )
        .where(m.experiment_id == experiment_id, m.impressions > 0)
        .group_by(m.date, context, m.variant_id)
        .order_by(m.date)
        .limit(limit + 1)
    )
    if start is not None:
        statement = statement.where(m.date >= start)
    if end is not None:
        statement = statement.where(m.date <= end)
    if segment is not None:
        statement = statement.where(m.segment == segment)
    return list(await session.execute(statement))


async def day_units(
    session: AsyncSession, experiment_id: str, *, start: date | None, end: date | None
) -> list[Any]:
    """(day, variant, units) over all segments: the observed shares a day without a
    served allocation stands in with."""
    m = ExperimentMetric
    statement = (
        select(m.date, m.variant_id, func.sum(m.impressions))
        .where(m.experiment_id == experiment_id)
        .group_by(m.date, m.variant_id)
    )
    if start is not None:
        statement = statement.where(m.date >= start)
    if end is not None:
        statement = statement.where(m.date <= end)
    return list(await session.execute(statement))
