"""Every SQL statement of metrics: reported daily totals, their write path (upsert,
running totals, the revision history) and their pages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.counts.models import REPORTED_SOURCE
from mabapi.counts.repository import add_to_totals
from mabapi.db.base import utcnow
from mabapi.db.dialect import insert_for
from mabapi.experiments.models import ExperimentMetric, MetricRevision
from mabapi.experiments.repository import chunks, metric_filter

# Advisory-lock namespace for reported-metric writers (any constant shared by processes).
_TOTALS_LOCK_NAMESPACE = 0x6D62


async def _lock_experiments(session: AsyncSession, experiment_ids: Iterable[str]) -> None:
    """Serialise reported-metric writers per experiment (PostgreSQL advisory locks, taken
    in sorted order so two batches cannot deadlock; SQLite's BEGIN IMMEDIATE already
    serialises writers). Needed because totals are kept by adding new - old."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for experiment_id in sorted(set(experiment_ids)):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:experiment_id))"),
            {"namespace": _TOTALS_LOCK_NAMESPACE, "experiment_id": experiment_id},
        )


async def upsert_daily_metrics(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Set each (experiment, variant, date) row's totals: insert, or replace on conflict,
    and move the running totals by the difference (new - old).

    One statement per chunk (multi-row VALUES), so a 10,000-row batch is a handful of round
    trips. Callers guarantee one row per key (PostgreSQL refuses to update a row twice in
    one statement).
    """
    now = utcnow()
    await _lock_experiments(session, (row["experiment_id"] for row in rows))
    if session.get_bind().dialect.name == "postgresql":
        # One statement and one round trip under the lock instead of three or more: the
        # lock is held until COMMIT, so its round trips are what bound a busy experiment.
        for chunk in chunks(rows):
            await session.execute(_SET_REPORTED, _columns(chunk, now))
        return
    deltas, revised = await _deltas(session, rows)
    if revised:
        await session.execute(
            insert_for(session, MetricRevision), [{**row, "recorded_at": now} for row in revised]
        )
    values = [{**row, "created_at": now, "updated_at": now} for row in rows]
    for chunk in chunks(values):
        statement = insert_for(session, ExperimentMetric).values(list(chunk))
        statement = statement.on_conflict_do_update(
            index_elements=["experiment_id", "variant_id", "date", "segment"],
            set_={
                "impressions": statement.excluded.impressions,
                "successes": statement.excluded.successes,
                "value_sum": statement.excluded.value_sum,
                "value_sum_squares": statement.excluded.value_sum_squares,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await session.execute(statement)
    for (experiment_id, variant_id), delta in sorted(deltas.items()):
        if any(delta):
            await add_to_totals(
                session,
                experiment_id=experiment_id,
                variant_id=variant_id,
                source=REPORTED_SOURCE,
                shard=0,
                impressions=delta[0],
                successes=delta[1],
                value_sum=delta[2],
                value_sum_squares=delta[3],
            )


# PostgreSQL: the rows as arrays (unnest), the rows they replace (read from the
# statement's snapshot, taken after the experiment lock, so nothing can change them in
# between), the upsert, a revision for each row that is new or changes the stored one,
# and the running totals moved by new - old, all in one statement.
# Data-modifying CTEs all run, referenced or not; every part sees the same snapshot.
_SET_REPORTED = text(
    """
WITH new AS (
    SELECT * FROM unnest(
        CAST(:experiment_id AS VARCHAR[]), CAST(:variant_id AS VARCHAR[]),
        CAST(:date AS DATE[]), CAST(:segment AS VARCHAR[]), CAST(:impressions AS BIGINT[]),
        CAST(:successes AS BIGINT[]), CAST(:value_sum AS DOUBLE PRECISION[]),
        CAST(:value_sum_squares AS DOUBLE PRECISION[])
    ) AS t(experiment_id, variant_id, date, segment, impressions, successes, value_sum,
           value_sum_squares)
),
old AS (
    SELECT m.experiment_id, m.variant_id, m.date, m.segment, m.impressions, m.successes,
           m.value_sum, m.value_sum_squares
    FROM experiment_metrics AS m
    JOIN new ON new.experiment_id = m.experiment_id AND new.variant_id = m.variant_id
            AND new.date = m.date AND new.segment = m.segment
),
upserted AS (
    INSERT INTO experiment_metrics (experiment_id, variant_id, date, segment, impressions,
                                    successes, value_sum, value_sum_squares, created_at,
                                    updated_at)
    SELECT experiment_id, variant_id, date, segment, impressions, successes, value_sum,
           value_sum_squares, CAST(:now AS TIMESTAMPTZ), CAST(:now AS TIMESTAMPTZ)
    FROM new
    ON CONFLICT (experiment_id, variant_id, date, segment) DO UPDATE SET
        impressions = excluded.impressions, successes = excluded.successes,
        value_sum = excluded.value_sum, value_sum_squares = excluded.value_sum_squares,
        updated_at = excluded.updated_at
    RETURNING 1
),
revised AS (
    INSERT INTO metric_revisions (experiment_id, variant_id, date, segment, impressions,
                                  successes, value_sum, value_sum_squares, recorded_at)
    SELECT new.experiment_id, new.variant_id, new.date, new.segment, new.impressions,
           new.successes, new.value_sum, new.value_sum_squares, CAST(:now AS TIMESTAMPTZ)
    FROM new
    LEFT JOIN old ON old.experiment_id = new.experiment_id
                 AND old.variant_id = new.variant_id AND old.date = new.date
                 AND old.segment = new.segment
    WHERE old.date IS NULL
       OR (old.impressions, old.successes, old.value_sum, old.value_sum_squares)
          IS DISTINCT FROM (new.impressions, new.successes, new.value_sum,
                            new.value_sum_squares)
    RETURNING 1
),
moved AS (
    SELECT experiment_id, variant_id, sum(impressions) AS impressions,
           sum(successes) AS successes, sum(value_sum) AS value_sum,
           sum(value_sum_squares) AS value_sum_squares
    FROM (
        SELECT experiment_id, variant_id, impressions, successes,
               coalesce(value_sum, 0) AS value_sum,
               coalesce(value_sum_squares, 0) AS value_sum_squares
        FROM new
        UNION ALL
        SELECT experiment_id, variant_id, -impressions, -successes,
               -coalesce(value_sum, 0), -coalesce(value_sum_squares, 0)
        FROM old
    ) AS changes
    GROUP BY experiment_id, variant_id
)
INSERT INTO variant_totals (experiment_id, variant_id, source, shard, impressions, successes,
                            value_sum, value_sum_squares)
SELECT experiment_id, variant_id, CAST(:source AS SMALLINT), 0, impressions, successes, value_sum,
       value_sum_squares
FROM moved
WHERE impressions <> 0 OR successes <> 0 OR value_sum <> 0 OR value_sum_squares <> 0
ORDER BY experiment_id, variant_id
ON CONFLICT (experiment_id, variant_id, source, shard) DO UPDATE SET
    impressions = variant_totals.impressions + excluded.impressions,
    successes = variant_totals.successes + excluded.successes,
    value_sum = variant_totals.value_sum + excluded.value_sum,
    value_sum_squares = variant_totals.value_sum_squares + excluded.value_sum_squares
"""
)


def _columns(rows: Sequence[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Rows as one array per column, for `_SET_REPORTED`."""
    names = ("experiment_id", "variant_id", "date", "segment", "impressions", "successes",
             "value_sum", "value_sum_squares")  # fmt: skip
    columns: dict[str, Any] = {name: [row[name] for row in rows] for name in names}
    return {**columns, "now": now, "source": REPORTED_SOURCE}


async def _deltas(
    session: AsyncSession, rows: Sequence[dict[str, Any]]
) -> tuple[dict[tuple[str, str], list[float]], list[dict[str, Any]]]:
    """Per (experiment, variant): the new rows' sums minus the sums of the rows they
    replace; and the rows that are new or change what was stored (the revisions)."""
    deltas: dict[tuple[str, str], list[float]] = {}
    stored: dict[tuple[str, str, date, str], tuple[Any, ...]] = {}
    keys: dict[str, set[tuple[str, date, str]]] = {}
    for row in rows:
        delta = deltas.setdefault((row["experiment_id"], row["variant_id"]), [0, 0, 0.0, 0.0])
        delta[0] += row["impressions"]
        delta[1] += row["successes"]
        delta[2] += row["value_sum"] or 0.0
        delta[3] += row["value_sum_squares"] or 0.0
        keys.setdefault(row["experiment_id"], set()).add(
            (row["variant_id"], row["date"], row["segment"])
        )
    for experiment_id, wanted in keys.items():
        variants = {variant for variant, _, _ in wanted}
        days = {day for _, day, _ in wanted}
        existing = await session.execute(
            select(
                ExperimentMetric.variant_id,
                ExperimentMetric.date,
                ExperimentMetric.segment,
                ExperimentMetric.impressions,
                ExperimentMetric.successes,
                ExperimentMetric.value_sum,
                ExperimentMetric.value_sum_squares,
            ).where(
                ExperimentMetric.experiment_id == experiment_id,
                ExperimentMetric.variant_id.in_(variants),
                ExperimentMetric.date.in_(days),
            )
        )
        for variant_id, day, segment, impressions, successes, value_sum, squares in existing:
            if (variant_id, day, segment) in wanted:
                stored[experiment_id, variant_id, day, segment] = (
                    impressions, successes, value_sum, squares
                )  # fmt: skip
                delta = deltas[(experiment_id, variant_id)]
                delta[0] -= impressions
                delta[1] -= successes
                delta[2] -= value_sum or 0.0
                delta[3] -= squares or 0.0
    revised = [
        row
        for row in rows
        if stored.get((row["experiment_id"], row["variant_id"], row["date"], row["segment"]))
        != tuple(row[name] for name in _REVISED)
    ]
    return deltas, revised


_REVISED = ("impressions", "successes", "value_sum", "value_sum_squares")


async def list_revisions(
    session: AsyncSession,
    experiment_id: str,
    *,
    start: date | None = None,
    end: date | None = None,
    variant_id: str | None = None,
    after: tuple[date, str, int] | None = None,
    limit: int | None = None,
) -> Sequence[MetricRevision]:
    """Revisions by (date, variant, arrival); `after` a (date, variant, id) key."""
    statement = metric_filter(select(MetricRevision), MetricRevision, experiment_id,
                               start, end, variant_id)  # fmt: skip
    # Arrival order is the id's (ids grow as rows arrive): the key is unique.
    key = (MetricRevision.date, MetricRevision.variant_id, MetricRevision.id)
    if after is not None:
        statement = statement.where(tuple_(*key) > tuple_(*after))
    statement = statement.order_by(*key)
    if limit is not None:
        statement = statement.limit(limit)
    return (await session.scalars(statement)).all()
