"""Every SQL statement of real-time mode. No FastAPI, no maths."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.assignments.models import (
    LIVE_SHARDS,
    LIVE_SOURCE,
    Assignment,
    ConversionEvent,
    LiveMetric,
    VariantTotal,
)
from mabapi.db.dialect import insert_for
from mabapi.experiments.models import Experiment


async def find_assignment(
    session: AsyncSession, experiment_id: str, unit_id: str, *, for_update: bool = False
) -> Assignment | None:
    statement = select(Assignment).where(
        Assignment.experiment_id == experiment_id, Assignment.unit_id == unit_id
    )
    if for_update and session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    result: Assignment | None = await session.scalar(statement)
    return result


@dataclass(frozen=True, slots=True)
class AssignmentContext:
    """What assigning needs to know, read in one round trip."""

    status: str
    winner_variant_id: str | None
    archived: bool
    variant_id: str | None  # the unit's existing assignment, if any
    probability: float | None


async def assignment_context(
    session: AsyncSession, experiment_id: str, unit_id: str
) -> AssignmentContext | None:
    """The experiment's state and the unit's assignment (one LEFT JOIN); None if the
    experiment does not exist."""
    statement = (
        select(
            Experiment.status,
            Experiment.winner_variant_id,
            Experiment.archived_at,
            Assignment.variant_id,
            Assignment.probability,
        )
        .select_from(Experiment)
        .outerjoin(
            Assignment,
            (Assignment.experiment_id == Experiment.id) & (Assignment.unit_id == unit_id),
        )
        .where(Experiment.id == experiment_id)
    )
    row = (await session.execute(statement)).first()
    if row is None:
        return None
    return AssignmentContext(
        status=str(row[0].value if hasattr(row[0], "value") else row[0]),
        winner_variant_id=row[1],
        archived=row[2] is not None,
        variant_id=row[3],
        probability=row[4],
    )


async def find_assignments(
    session: AsyncSession, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Assignment]:
    wanted = set(keys)
    if not wanted:
        return {}
    found: dict[tuple[str, str], Assignment] = {}
    by_experiment: dict[str, list[str]] = {}
    for experiment_id, unit_id in wanted:
        by_experiment.setdefault(experiment_id, []).append(unit_id)
    for experiment_id, units in by_experiment.items():
        rows = await session.scalars(
            select(Assignment).where(
                Assignment.experiment_id == experiment_id, Assignment.unit_id.in_(units)
            )
        )
        for row in rows:
            found[(row.experiment_id, row.unit_id)] = row
    return found


async def insert_assignment_if_new(
    session: AsyncSession,
    *,
    experiment_id: str,
    unit_id: str,
    variant_id: str,
    probability: float,
    now: datetime,
) -> bool:
    """Insert unless the unit already has a variant; True if this call created it.

    ON CONFLICT DO NOTHING on the (experiment, unit) unique key: two processes racing
    on a new unit both try, exactly one row results, and the loser reads the winner's.
    """
    statement = (
        insert_for(session, Assignment)
        .values(
            experiment_id=experiment_id,
            unit_id=unit_id,
            variant_id=variant_id,
            probability=probability,
            assigned_at=now,
            assigned_date=now.date(),
        )
        .on_conflict_do_nothing(index_elements=["experiment_id", "unit_id"])
        .returning(Assignment.id)
    )
    created = await session.scalar(statement)
    return created is not None


async def add_live(
    session: AsyncSession,
    *,
    experiment_id: str,
    variant_id: str,
    day: date,
    impressions: int = 0,
    successes: int = 0,
    value_sum: float = 0.0,
    value_sum_squares: float = 0.0,
) -> None:
    """Atomically add to the live counters (INSERT ... ON CONFLICT DO UPDATE SET n = n +
    excluded.n) and to the running totals, on a random shard, so concurrent writers rarely
    share a row lock."""
    shard = random.randrange(LIVE_SHARDS)  # noqa: S311 - load spreading, not security
    await add_to_totals(
        session,
        experiment_id=experiment_id,
        variant_id=variant_id,
        source=LIVE_SOURCE,
        shard=shard,
        impressions=impressions,
        successes=successes,
        value_sum=value_sum,
        value_sum_squares=value_sum_squares,
    )
    await _increment(
        session,
        LiveMetric,
        {"experiment_id": experiment_id, "variant_id": variant_id, "date": day, "shard": shard},
        _counts(impressions, successes, value_sum, value_sum_squares),
    )


async def add_to_totals(
    session: AsyncSession,
    *,
    experiment_id: str,
    variant_id: str,
    source: int,
    shard: int,
    impressions: float = 0,
    successes: float = 0,
    value_sum: float = 0.0,
    value_sum_squares: float = 0.0,
) -> None:
    """Atomically add to a variant's running totals."""
    await _increment(
        session,
        VariantTotal,
        {"experiment_id": experiment_id, "variant_id": variant_id, "source": source,
         "shard": shard},
        _counts(impressions, successes, value_sum, value_sum_squares),
    )  # fmt: skip


_COUNTERS = ("impressions", "successes", "value_sum", "value_sum_squares")


def _counts(
    impressions: float, successes: float, value_sum: float, value_sum_squares: float
) -> dict[str, float]:
    return dict(zip(_COUNTERS, (impressions, successes, value_sum, value_sum_squares), strict=True))


async def _increment(
    session: AsyncSession, model: Any, key: dict[str, Any], amounts: dict[str, float]
) -> None:
    """INSERT the row, or on conflict with its unique key add to its counters in place
    (SET n = n + excluded.n): atomic, never read-modify-write in Python."""
    statement = insert_for(session, model).values(**key, **amounts)
    table = model.__table__
    statement = statement.on_conflict_do_update(
        index_elements=list(key),
        set_={name: table.c[name] + statement.excluded[name] for name in amounts},
    )
    await session.execute(statement)


async def mark_converted(session: AsyncSession, assignment_id: int, now: datetime) -> bool:
    """Set the unit's first conversion time; False if it had converted already."""
    result = await session.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id, Assignment.converted_at.is_(None))
        .values(converted_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


async def insert_event_if_new(
    session: AsyncSession,
    *,
    experiment_id: str,
    event_id: str,
    unit_id: str,
    value: float,
    now: datetime,
) -> bool:
    statement = (
        insert_for(session, ConversionEvent)
        .values(
            experiment_id=experiment_id,
            event_id=event_id,
            unit_id=unit_id,
            value=value,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["experiment_id", "event_id"])
        .returning(ConversionEvent.id)
    )
    return await session.scalar(statement) is not None


async def add_unit_value(
    session: AsyncSession, assignment_id: int, value: float, now: datetime
) -> tuple[float, bool]:
    """Add a value to the unit's running total; returns (new total, first conversion)."""
    row = (
        await session.execute(
            select(Assignment.conversion_value, Assignment.converted_at).where(
                Assignment.id == assignment_id
            )
        )
    ).one()
    previous = float(row[0] or 0.0)
    first = row[1] is None
    await session.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id)
        .values(
            conversion_value=previous + value,
            converted_at=row[1] if row[1] is not None else now,
        )
    )
    return previous + value, first


async def reset_live_data(session: AsyncSession, experiment_id: str) -> None:
    """Forget every assignment, live count and value event of an experiment."""
    for table in (ConversionEvent, LiveMetric, Assignment):
        await session.execute(delete(table).where(table.experiment_id == experiment_id))
    await session.execute(
        delete(VariantTotal).where(
            VariantTotal.experiment_id == experiment_id, VariantTotal.source == LIVE_SOURCE
        )
    )


async def count_assignments(session: AsyncSession, experiment_id: str) -> int:
    from sqlalchemy import func

    return int(
        await session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.experiment_id == experiment_id)
        )
        or 0
    )
