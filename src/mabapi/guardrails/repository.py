"""Every SQL statement of guardrails: their daily rows (reported and live), the units
and events counted once, and the breaches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.counts.models import LiveMetric
from mabapi.counts.repository import increment
from mabapi.db.dialect import insert_for
from mabapi.experiments.models import (
    GUARDRAIL_LIVE,
    GuardrailBreach,
    GuardrailEvent,
    GuardrailMetric,
    GuardrailUnit,
)
from mabapi.experiments.repository import chunks


async def set_reported(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Reported guardrail totals: insert, or replace the day's row (idempotent)."""
    for chunk in chunks(rows):
        statement = insert_for(session, GuardrailMetric).values(list(chunk))
        statement = statement.on_conflict_do_update(
            index_elements=["experiment_id", "metric_id", "variant_id", "date", "source"],
            set_={
                "impressions": statement.excluded.impressions,
                "successes": statement.excluded.successes,
                "value_sum": statement.excluded.value_sum,
                "value_sum_squares": statement.excluded.value_sum_squares,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await session.execute(statement)


async def add_live(
    session: AsyncSession,
    *,
    experiment_id: str,
    metric_id: str,
    variant_id: str,
    day: date,
    successes: int,
    value_sum: float,
    value_sum_squares: float,
) -> None:
    await increment(
        session,
        GuardrailMetric,
        {"experiment_id": experiment_id, "metric_id": metric_id, "variant_id": variant_id,
         "date": day, "source": GUARDRAIL_LIVE},
        {"successes": successes, "value_sum": value_sum, "value_sum_squares": value_sum_squares},
    )  # fmt: skip


async def count_unit_once(
    session: AsyncSession, *, experiment_id: str, metric_id: str, unit_id: str, variant_id: str
) -> bool:
    """True when this call recorded the unit's first conversion on the metric."""
    statement = (
        insert_for(session, GuardrailUnit)
        .values(
            experiment_id=experiment_id,
            metric_id=metric_id,
            unit_id=unit_id,
            variant_id=variant_id,
            value_total=0.0,
        )
        .on_conflict_do_nothing()
        .returning(GuardrailUnit.id)
    )
    return (await session.execute(statement)).first() is not None


async def add_unit_value(
    session: AsyncSession, *, experiment_id: str, metric_id: str, unit_id: str, value: float
) -> float:
    """Add to the unit's value total on the metric; returns the new total."""
    statement = (
        update(GuardrailUnit)
        .where(
            GuardrailUnit.experiment_id == experiment_id,
            GuardrailUnit.metric_id == metric_id,
            GuardrailUnit.unit_id == unit_id,
        )
        .values(value_total=GuardrailUnit.value_total + value)
        .returning(GuardrailUnit.value_total)
    )
    total: float = (await session.execute(statement)).scalar_one()
    return total


async def event_is_new(
    session: AsyncSession, *, experiment_id: str, metric_id: str, event_id: str
) -> bool:
    statement = (
        insert_for(session, GuardrailEvent)
        .values(experiment_id=experiment_id, metric_id=metric_id, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(GuardrailEvent.id)
    )
    return (await session.execute(statement)).first() is not None


async def sums_between(
    session: AsyncSession, experiment_id: str, metric_id: str, since: date | None, before: date
) -> dict[str, tuple[float, float, float, float]]:
    """Per variant: units, successes, value sum and sum of squares of the guardrail's
    rows dated in [since, before) (reported units only: live units are the exposures)."""
    statement = (
        select(
            GuardrailMetric.variant_id,
            func.sum(GuardrailMetric.impressions),
            func.sum(GuardrailMetric.successes),
            func.sum(GuardrailMetric.value_sum),
            func.sum(GuardrailMetric.value_sum_squares),
        )
        .where(
            GuardrailMetric.experiment_id == experiment_id,
            GuardrailMetric.metric_id == metric_id,
            GuardrailMetric.date < before,
            GuardrailMetric.date >= (since or date.min),
        )
        .group_by(GuardrailMetric.variant_id)
    )
    rows = await session.execute(statement)
    return {
        variant: (float(n or 0), float(s or 0), float(v or 0.0), float(q or 0.0))
        for variant, n, s, v, q in rows
    }


async def first_day(
    session: AsyncSession, experiment_id: str, metric_id: str, since: date | None
) -> date | None:
    result: date | None = await session.scalar(
        select(func.min(GuardrailMetric.date)).where(
            GuardrailMetric.experiment_id == experiment_id,
            GuardrailMetric.metric_id == metric_id,
            GuardrailMetric.date >= (since or date.min),
        )
    )
    return result


async def restart_day(session: AsyncSession, experiment_id: str, metric_id: str) -> date | None:
    """The day of the metric's last clear: checks count only data from that day on."""
    cleared: datetime | None = await session.scalar(
        select(func.max(GuardrailBreach.cleared_at)).where(
            GuardrailBreach.experiment_id == experiment_id,
            GuardrailBreach.metric_id == metric_id,
        )
    )
    return None if cleared is None else cleared.date()


async def live_units_between(
    session: AsyncSession, experiment_id: str, since: date | None, before: date
) -> tuple[dict[str, float], date | None]:
    """Live exposures per variant dated in [since, before), and the first day with any."""
    rows = await session.execute(
        select(LiveMetric.variant_id, func.sum(LiveMetric.impressions), func.min(LiveMetric.date))
        .where(
            LiveMetric.experiment_id == experiment_id,
            LiveMetric.date < before,
            LiveMetric.date >= (since or date.min),
        )
        .group_by(LiveMetric.variant_id)
    )
    units: dict[str, float] = {}
    first: date | None = None
    for variant, impressions, day in rows:
        if impressions:
            units[variant] = float(impressions)
            first = day if first is None else min(first, day)
    return units, first


async def open_breaches(session: AsyncSession, experiment_id: str) -> list[GuardrailBreach]:
    rows = await session.scalars(
        select(GuardrailBreach)
        .where(GuardrailBreach.experiment_id == experiment_id, GuardrailBreach.cleared_at.is_(None))
        .order_by(GuardrailBreach.breached_at, GuardrailBreach.id)
    )
    return list(rows)


async def insert_breach(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Record a breach unless one is open for the variant and metric already (the
    partial unique index decides between two processes): True if this call did."""
    statement = (
        insert_for(session, GuardrailBreach)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=["experiment_id", "metric_id", "variant_id"],
            index_where=GuardrailBreach.cleared_at.is_(None),
        )
        .returning(GuardrailBreach.id)
    )
    return (await session.execute(statement)).first() is not None


async def clear_breaches(
    session: AsyncSession, experiment_id: str, metric_id: str | None, now: datetime
) -> int:
    """Close the open breaches of a metric (all metrics if None); returns how many."""
    statement = update(GuardrailBreach).where(
        GuardrailBreach.experiment_id == experiment_id, GuardrailBreach.cleared_at.is_(None)
    )
    if metric_id is not None:
        statement = statement.where(GuardrailBreach.metric_id == metric_id)
    result = await session.execute(statement.values(cleared_at=now))
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_live(session: AsyncSession, experiment_id: str) -> None:
    """A reset: live guardrail rows, counted units and events go with the live data."""
    await session.execute(
        delete(GuardrailMetric).where(
            GuardrailMetric.experiment_id == experiment_id,
            GuardrailMetric.source == GUARDRAIL_LIVE,
        )
    )
    await session.execute(delete(GuardrailUnit).where(GuardrailUnit.experiment_id == experiment_id))
    await session.execute(
        delete(GuardrailEvent).where(GuardrailEvent.experiment_id == experiment_id)
    )


async def daily_rows(
    session: AsyncSession, experiment_id: str, metric_id: str
) -> list[tuple[date, str, float, float, float]]:
    """Per day and variant: units (reported), successes, value sum; oldest first."""
    rows = await session.execute(
        select(
            GuardrailMetric.date,
            GuardrailMetric.variant_id,
            func.sum(GuardrailMetric.impressions),
            func.sum(GuardrailMetric.successes),
            func.sum(GuardrailMetric.value_sum),
        )
        .where(
            GuardrailMetric.experiment_id == experiment_id, GuardrailMetric.metric_id == metric_id
        )
        .group_by(GuardrailMetric.date, GuardrailMetric.variant_id)
        .order_by(GuardrailMetric.date, GuardrailMetric.variant_id)
    )
    return [(d, v, float(n or 0), float(s or 0), float(x or 0.0)) for d, v, n, s, x in rows]


async def live_units_by_day(
    session: AsyncSession, experiment_id: str
) -> dict[tuple[date, str], float]:
    rows = await session.execute(
        select(LiveMetric.date, LiveMetric.variant_id, func.sum(LiveMetric.impressions))
        .where(LiveMetric.experiment_id == experiment_id)
        .group_by(LiveMetric.date, LiveMetric.variant_id)
    )
    return {(day, variant): float(n or 0) for day, variant, n in rows}
