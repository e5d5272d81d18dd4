"""Snapshots: the allocation served for a day, stored once per distinct answer, and the
units it served. Every SQL statement of allocations."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.counts.models import LiveMetric
from mabapi.db.base import utcnow
from mabapi.db.dialect import insert_for
from mabapi.experiments.models import (
    AllocationSnapshot,
    ExperimentMetric,
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
