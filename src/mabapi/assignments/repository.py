"""Every SQL statement of real-time mode. No FastAPI, no maths."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.assignments.models import Assignment, ConversionEvent
from mabapi.counts.models import LIVE_SHARDS, LIVE_SOURCE, LiveMetric, VariantTotal
from mabapi.counts.repository import (
    COUNTERS,
    add_to_totals,
    counts,
    increment,
    increment_many,
)
from mabapi.db.dialect import insert_for
from mabapi.experiments.models import Experiment

# Units per IN list: far below the databases' parameter limits.
_ROWS_PER_STATEMENT = 1_000

# The group commits' statements, built once on the tables (Core, no ORM objects): the
# per-batch cost of building and compiling them showed in profiles of the hot paths.
_assignments: Table = Assignment.__table__  # type: ignore[assignment]
_experiments: Table = Experiment.__table__  # type: ignore[assignment]
_STATES = select(
    _experiments.c.id,
    _experiments.c.status,
    _experiments.c.winner_variant_id,
    _experiments.c.archived_at,
    _experiments.c.metric_kind,
).where(_experiments.c.id.in_(bindparam("ids", expanding=True)))
_STORED = select(
    _assignments.c.unit_id, _assignments.c.variant_id, _assignments.c.probability
).where(
    _assignments.c.experiment_id == bindparam("experiment_id"),
    _assignments.c.unit_id.in_(bindparam("units", expanding=True)),
)
_CONVERT = (
    update(_assignments)
    .where(
        _assignments.c.experiment_id == bindparam("in_experiment"),
        _assignments.c.unit_id.in_(bindparam("units", expanding=True)),
        _assignments.c.converted_at.is_(None),
    )
    .values(converted_at=bindparam("now", type_=_assignments.c.converted_at.type))
    .returning(_assignments.c.unit_id, _assignments.c.variant_id, _assignments.c.assigned_date)
)


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
class StoredAssignment:
    variant_id: str
    probability: float


async def find_assignments(
    session: AsyncSession, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], StoredAssignment]:
    """The stored variant of each (experiment, unit) that has one: one query per
    experiment, plain rows (no ORM objects: group commits read thousands)."""
    by_experiment: dict[str, list[str]] = {}
    for experiment_id, unit_id in set(keys):
        by_experiment.setdefault(experiment_id, []).append(unit_id)
    found: dict[tuple[str, str], StoredAssignment] = {}
    for experiment_id, units in sorted(by_experiment.items()):
        for start in range(0, len(units), _ROWS_PER_STATEMENT):
            rows = await session.execute(
                _STORED,
                {
                    "experiment_id": experiment_id,
                    "units": units[start : start + _ROWS_PER_STATEMENT],
                },
            )
            for unit_id, variant_id, probability in rows:
                found[(experiment_id, unit_id)] = StoredAssignment(variant_id, probability)
    return found


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
    await increment(
        session,
        LiveMetric,
        {"experiment_id": experiment_id, "variant_id": variant_id, "date": day, "shard": shard},
        counts(impressions, successes, value_sum, value_sum_squares),
    )


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


# --- Many requests at once (group commit, POST /assign/batch, POST /conversions/batch) ---


@dataclass(frozen=True, slots=True)
class ExperimentState:
    status: str
    winner_variant_id: str | None
    archived: bool
    metric_kind: str


async def experiment_states(
    session: AsyncSession, experiment_ids: Iterable[str]
) -> dict[str, ExperimentState]:
    """What assigning and converting need to know of each experiment, in one query."""
    rows = await session.execute(_STATES, {"ids": sorted(set(experiment_ids))})
    return {
        row[0]: ExperimentState(
            status=_plain(row[1]),
            winner_variant_id=row[2],
            archived=row[3] is not None,
            metric_kind=_plain(row[4]),
        )
        for row in rows
    }


def _plain(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


async def insert_assignments_if_new(
    session: AsyncSession, rows: Sequence[dict[str, Any]]
) -> set[tuple[str, str]]:
    """Insert each (experiment, unit) that has no assignment yet; returns those created.

    Multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING: the unique key decides races
    with other processes exactly as for one row. Rows are sorted by key so two batches
    take their index locks in the same order. One row per key (the caller's rule)."""
    created: set[tuple[str, str]] = set()
    ordered = sorted(rows, key=lambda row: (row["experiment_id"], row["unit_id"]))
    if ordered:
        result = await session.execute(_new_assignments(session), ordered)
        created.update((row[0], row[1]) for row in result)
    return created


@dataclass(frozen=True, slots=True)
class Converted:
    variant_id: str
    assigned_date: date


async def mark_converted_many(
    session: AsyncSession, experiment_id: str, unit_ids: Iterable[str], now: datetime
) -> dict[str, Converted]:
    """Set the first conversion time of every listed unit that has none yet (one UPDATE
    ... RETURNING); returns the units this call converted, with their variant and day."""
    converted: dict[str, Converted] = {}
    units = sorted(set(unit_ids))
    for start in range(0, len(units), _ROWS_PER_STATEMENT):
        rows = await session.execute(
            _CONVERT,
            {"in_experiment": experiment_id, "now": now,
             "units": units[start : start + _ROWS_PER_STATEMENT]},
        )  # fmt: skip
        for unit_id, variant_id, assigned_date in rows:
            converted[unit_id] = Converted(variant_id, assigned_date)
    return converted


async def add_live_many(
    session: AsyncSession, counts: dict[tuple[str, str, date], tuple[int, int]]
) -> None:
    """Add (impressions, successes) per (experiment, variant, day) to the live counters
    and the running totals: two multi-row upserts (SET n = n + excluded.n) on one random
    shard, keys sorted so concurrent batches lock rows in the same order."""
    if not counts:
        return
    shard = random.randrange(LIVE_SHARDS)  # noqa: S311 - load spreading, not security
    totals: dict[tuple[str, str], list[int]] = {}
    for (experiment_id, variant_id, _day), (impressions, successes) in counts.items():
        total = totals.setdefault((experiment_id, variant_id), [0, 0])
        total[0] += impressions
        total[1] += successes
    await increment_many(
        session,
        VariantTotal,
        ["experiment_id", "variant_id", "source", "shard"],
        [
            {"experiment_id": e, "variant_id": v, "source": LIVE_SOURCE, "shard": shard,
             "impressions": n, "successes": s}
            for (e, v), (n, s) in sorted(totals.items())
        ],
    )  # fmt: skip
    await increment_many(
        session,
        LiveMetric,
        ["experiment_id", "variant_id", "date", "shard"],
        [
            {"experiment_id": e, "variant_id": v, "date": day, "shard": shard,
             "impressions": n, "successes": s}
            for (e, v, day), (n, s) in sorted(counts.items())
        ],
    )  # fmt: skip


async def add_live_values(
    session: AsyncSession, deltas: dict[tuple[str, str, date], tuple[int, int, float, float]]
) -> None:
    """`add_live_many` with value sums: (impressions, successes, value_sum,
    value_sum_squares) per (experiment, variant, day), one random shard, keys sorted so
    concurrent transactions lock the counter rows in the same order (no deadlock)."""
    if not deltas:
        return
    shard = random.randrange(LIVE_SHARDS)  # noqa: S311 - load spreading, not security
    totals: dict[tuple[str, str], tuple[int, int, float, float]] = {}
    for (experiment_id, variant_id, _day), (n, s, v, v2) in deltas.items():
        tn, ts, tv, tv2 = totals.get((experiment_id, variant_id), (0, 0, 0.0, 0.0))
        totals[(experiment_id, variant_id)] = (tn + n, ts + s, tv + v, tv2 + v2)
    await increment_many(
        session,
        VariantTotal,
        ["experiment_id", "variant_id", "source", "shard"],
        [
            {"experiment_id": e, "variant_id": v, "source": LIVE_SOURCE, "shard": shard,
             **counts(*amounts)}
            for (e, v), amounts in sorted(totals.items())
        ],
        COUNTERS,
    )  # fmt: skip
    await increment_many(
        session,
        LiveMetric,
        ["experiment_id", "variant_id", "date", "shard"],
        [
            {"experiment_id": e, "variant_id": v, "date": day, "shard": shard,
             **counts(*amounts)}
            for (e, v, day), amounts in sorted(deltas.items())
        ],
        COUNTERS,
    )  # fmt: skip


_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _new_assignments(session: AsyncSession) -> Any:
    """INSERT INTO assignments ... ON CONFLICT DO NOTHING RETURNING (experiment, unit)."""
    cache_key = ("assign", session.get_bind().dialect.name)
    statement = _STATEMENTS.get(cache_key)
    if statement is None:
        table = Assignment.__table__
        statement = (
            insert_for(session, table)
            .on_conflict_do_nothing(index_elements=["experiment_id", "unit_id"])
            .returning(table.c.experiment_id, table.c.unit_id)
        )
        _STATEMENTS[cache_key] = statement
    return statement
