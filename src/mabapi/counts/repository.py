"""Atomic additions to the counters of `counts.models` (INSERT ... ON CONFLICT DO UPDATE
SET n = n + excluded.n): never read-modify-write in Python."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.counts.models import VariantTotal
from mabapi.db.dialect import insert_for


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
    await increment(
        session,
        VariantTotal,
        {"experiment_id": experiment_id, "variant_id": variant_id, "source": source,
         "shard": shard},
        counts(impressions, successes, value_sum, value_sum_squares),
    )  # fmt: skip


COUNTERS = ("impressions", "successes", "value_sum", "value_sum_squares")


def counts(
    impressions: float, successes: float, value_sum: float, value_sum_squares: float
) -> dict[str, float]:
    return dict(zip(COUNTERS, (impressions, successes, value_sum, value_sum_squares), strict=True))


async def increment(
    session: AsyncSession, model: Any, key: dict[str, Any], amounts: dict[str, float]
) -> None:
    """INSERT the row, or on conflict with its unique key add to its counters in place
    (SET n = n + excluded.n): atomic, never read-modify-write in Python."""
    await increment_many(session, model, list(key), [{**key, **amounts}], list(amounts))


async def increment_many(
    session: AsyncSession,
    model: Any,
    key: list[str],
    rows: list[dict[str, Any]],
    counters: Sequence[str] = ("impressions", "successes"),
) -> None:
    """`increment` for many rows (one per key): one cached statement, executed with a
    list of parameter sets (SQLAlchemy's insertmanyvalues batching), so the SQL is compiled
    once per process instead of once per batch."""
    await session.execute(adding_upsert(session, model, tuple(key), tuple(counters)), rows)


_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def adding_upsert(
    session: AsyncSession, model: Any, key: tuple[str, ...], counters: tuple[str, ...]
) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET n = n + excluded.n, built once."""
    dialect = session.get_bind().dialect.name
    cache_key = ("upsert", dialect, model.__tablename__, key, counters)
    statement = _STATEMENTS.get(cache_key)
    if statement is None:
        table = model.__table__
        insert = insert_for(session, table)
        statement = insert.on_conflict_do_update(
            index_elements=list(key),
            set_={name: table.c[name] + insert.excluded[name] for name in counters},
        )
        _STATEMENTS[cache_key] = statement
    return statement
