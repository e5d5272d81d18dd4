"""Every SQL statement of the experiments domain. No FastAPI, no maths."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import (
    Select,
    func,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from mabapi.counts.models import LiveMetric, VariantTotal
from mabapi.db.base import utcnow
from mabapi.db.dialect import insert_for
from mabapi.experiments.models import (
    Experiment,
    ExperimentMetric,
    ExperimentStatus,
    MetricRevision,
    Variant,
)
from mabapi.stats.sums import Sums

# asyncpg allows 32,767 bind parameters per statement; keep multi-row inserts below it.
_ROWS_PER_STATEMENT = 2_000


def chunks(rows: Sequence[dict[str, Any]]) -> Iterable[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        yield rows[start : start + _ROWS_PER_STATEMENT]


# A variant's totals: the one sums type (stats/sums.py).
VariantTotals = Sums


@dataclass(frozen=True, slots=True)
class DailyRow:
    variant_id: str
    date: date
    impressions: int
    successes: int
    value_sum: float
    value_sum_squares: float


async def get_experiment(
    session: AsyncSession, experiment_id: str, *, with_variants: bool = True
) -> Experiment | None:
    statement = select(Experiment).where(Experiment.id == experiment_id)
    if with_variants:
        statement = statement.options(selectinload(Experiment.variants))
    result: Experiment | None = await session.scalar(statement)
    return result


async def existing_experiment_ids(session: AsyncSession, ids: Iterable[str]) -> set[str]:
    rows = await session.scalars(select(Experiment.id).where(Experiment.id.in_(set(ids))))
    return set(rows)


async def existing_variant_keys(
    session: AsyncSession, keys: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    wanted = set(keys)
    experiment_ids = {experiment_id for experiment_id, _ in wanted}
    rows = await session.execute(
        select(Variant.experiment_id, Variant.id).where(Variant.experiment_id.in_(experiment_ids))
    )
    return {(row[0], row[1]) for row in rows} & wanted


@dataclass(frozen=True, slots=True)
class ExperimentFacts:
    archived: bool
    metric_kind: str
    variants: int
    guarded: bool = False  # has guardrails: new data is checked against them


async def experiment_facts(
    session: AsyncSession, experiment_ids: Iterable[str]
) -> dict[str, ExperimentFacts]:
    """What ingesting daily totals checks of each experiment, in one query (a round trip
    per check made up most of a POST /metrics/ under load)."""
    variants = (
        select(func.count())
        .where(Variant.experiment_id == Experiment.id)
        .correlate(Experiment)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            Experiment.id, Experiment.archived_at, Experiment.metric_kind, variants,
            Experiment.guardrails,
        ).where(Experiment.id.in_(set(experiment_ids)))
    )  # fmt: skip
    return {
        str(row[0]): ExperimentFacts(
            row[1] is not None, str(getattr(row[2], "value", row[2])), int(row[3]), bool(row[4])
        )
        for row in rows
    }


async def insert_experiments_if_missing(
    session: AsyncSession, ids: Iterable[str], project_id: str
) -> None:
    """Register experiments first seen in metrics; concurrent callers are safe."""
    now = utcnow()
    rows = [
        {
            "id": experiment_id,
            "project_id": project_id,
            "name": experiment_id,
            "description": "",
            "status": ExperimentStatus.RUNNING,
            "algorithm": "thompson",
            "metric_kind": "conversion",
            "higher_is_better": True,
            "settings": {},
            "live_generation": 0,
            "created_at": now,
            "updated_at": now,
        }
        for experiment_id in sorted(set(ids))
    ]
    for chunk in chunks(rows):
        await session.execute(
            insert_for(session, Experiment).values(list(chunk)).on_conflict_do_nothing()
        )


async def insert_variants_if_missing(
    session: AsyncSession, keys: Iterable[tuple[str, str]]
) -> None:
    """Register variants first seen in metrics. A variant named `control` is the control."""
    now = utcnow()
    rows = [
        {
            "experiment_id": experiment_id,
            "id": variant_id,
            "name": variant_id,
            "is_control": variant_id.lower() == "control",
            "active": True,
            "position": 0,
            "created_at": now,
        }
        for experiment_id, variant_id in sorted(set(keys))
    ]
    for chunk in chunks(rows):
        await session.execute(
            insert_for(session, Variant).values(list(chunk)).on_conflict_do_nothing()
        )


def _all_rows(experiment_id: str) -> Any:
    """Reported daily totals and live counts as one row source (UNION ALL): the two are
    stored apart (a re-post replaces reported totals, live counts only grow) and added
    up when read, so neither ever overwrites the other."""
    reported = select(
        ExperimentMetric.variant_id.label("variant_id"),
        ExperimentMetric.date.label("date"),
        ExperimentMetric.impressions.label("impressions"),
        ExperimentMetric.successes.label("successes"),
        func.coalesce(ExperimentMetric.value_sum, 0.0).label("value_sum"),
        func.coalesce(ExperimentMetric.value_sum_squares, 0.0).label("value_sum_squares"),
    ).where(ExperimentMetric.experiment_id == experiment_id)
    live = select(
        LiveMetric.variant_id,
        LiveMetric.date,
        LiveMetric.impressions,
        LiveMetric.successes,
        LiveMetric.value_sum,
        LiveMetric.value_sum_squares,
    ).where(LiveMetric.experiment_id == experiment_id)
    return union_all(reported, live).subquery("all_rows")


async def metric_totals(
    session: AsyncSession, experiment_id: str, *, before: date | None = None
) -> dict[str, VariantTotals]:
    """Impressions, successes and value sums per variant, reported plus live, over the days
    strictly before `before` (all days if None).

    Read from the running totals, minus the (few, for a recent `before`) rows dated on or
    after `before`: an experiment with years of history costs what a new one does. Both
    are read by ONE statement, so from one snapshot: read in two, a write committed
    between them was subtracted without having been added (negative or too-small totals
    under live traffic).
    """
    running = select(
        VariantTotal.variant_id.label("variant_id"),
        VariantTotal.impressions.label("impressions"),
        VariantTotal.successes.label("successes"),
        func.coalesce(VariantTotal.value_sum, 0.0).label("value_sum"),
        func.coalesce(VariantTotal.value_sum_squares, 0.0).label("value_sum_squares"),
    ).where(VariantTotal.experiment_id == experiment_id)
    parts: list[Any] = [running]
    if before is not None:
        rows_source = _all_rows(experiment_id)
        parts.append(
            select(
                rows_source.c.variant_id,
                -rows_source.c.impressions,
                -rows_source.c.successes,
                -rows_source.c.value_sum,
                -rows_source.c.value_sum_squares,
            ).where(rows_source.c.date >= before)
        )
    combined = union_all(*parts).subquery("signed") if len(parts) > 1 else running.subquery()
    statement = select(
        combined.c.variant_id,
        func.sum(combined.c.impressions),
        func.sum(combined.c.successes),
        func.sum(combined.c.value_sum),
        func.sum(combined.c.value_sum_squares),
    ).group_by(combined.c.variant_id)
    sums: dict[str, list[float]] = {
        row[0]: [row[1] or 0, row[2] or 0, row[3] or 0.0, row[4] or 0.0]
        for row in await session.execute(statement)
    }
    return {
        variant: VariantTotals(
            int(acc[0]), int(acc[1]), _clean(float(acc[2])), max(_clean(float(acc[3])), 0.0)
        )
        for variant, acc in sums.items()
        if acc[0] or acc[1] or acc[2] or acc[3]
    }


def _clean(value: float) -> float:
    """Totals kept by adding and subtracting floats drift by rounding: snap ~0 to 0."""
    return 0.0 if abs(value) < 1e-9 else value


async def daily_rows(
    session: AsyncSession,
    experiment_id: str,
    *,
    before: date | None = None,
    since: date | None = None,
) -> list[DailyRow]:
    """Per variant and day, reported plus live, in [since, before), oldest first."""
    rows_source = _all_rows(experiment_id)
    statement = select(
        rows_source.c.variant_id,
        rows_source.c.date,
        func.sum(rows_source.c.impressions),
        func.sum(rows_source.c.successes),
        func.sum(rows_source.c.value_sum),
        func.sum(rows_source.c.value_sum_squares),
    ).group_by(rows_source.c.variant_id, rows_source.c.date)
    if before is not None:
        statement = statement.where(rows_source.c.date < before)
    if since is not None:
        statement = statement.where(rows_source.c.date >= since)
    statement = statement.order_by(rows_source.c.date, rows_source.c.variant_id)
    rows = await session.execute(statement)
    return [
        DailyRow(row[0], row[1], int(row[2]), int(row[3]), float(row[4]), float(row[5]))
        for row in rows
    ]


async def days_with_data(
    session: AsyncSession,
    experiment_id: str,
    *,
    before: date | None = None,
    at_most: int | None = None,
) -> int:
    """Distinct days with data (strictly before `before`); with `at_most`, counting stops
    there, which keeps a burn-in check cheap however long the history."""
    rows_source = _all_rows(experiment_id)
    days = select(rows_source.c.date).where(rows_source.c.impressions > 0).distinct()
    if before is not None:
        days = days.where(rows_source.c.date < before)
    if at_most is not None:
        days = days.order_by(rows_source.c.date.desc()).limit(at_most)
    statement = select(func.count()).select_from(days.subquery())
    return int(await session.scalar(statement) or 0)


async def list_daily_metrics(
    session: AsyncSession,
    experiment_id: str,
    *,
    start: date | None = None,
    end: date | None = None,
    variant_id: str | None = None,
    after: tuple[date, str, str] | None = None,
    limit: int | None = None,
) -> Sequence[ExperimentMetric]:
    """Daily rows by (date, variant, segment); `after` such a key, at most `limit`."""
    statement = metric_filter(select(ExperimentMetric), ExperimentMetric, experiment_id,
                               start, end, variant_id)  # fmt: skip
    key = (ExperimentMetric.date, ExperimentMetric.variant_id, ExperimentMetric.segment)
    if after is not None:
        statement = statement.where(tuple_(*key) > tuple_(*after))
    statement = statement.order_by(*key)
    if limit is not None:
        statement = statement.limit(limit)
    return (await session.scalars(statement)).all()


def metric_filter(
    statement: Select[Any],
    model: type[ExperimentMetric] | type[MetricRevision],
    experiment_id: str,
    start: date | None,
    end: date | None,
    variant_id: str | None,
) -> Select[Any]:
    statement = statement.where(model.experiment_id == experiment_id)
    if start is not None:
        statement = statement.where(model.date >= start)
    if end is not None:
        statement = statement.where(model.date <= end)
    if variant_id is not None:
        statement = statement.where(model.variant_id == variant_id)
    return statement


def _experiment_filter(
    statement: Select[Any],
    *,
    project_id: str | None,
    status: ExperimentStatus | None,
    include_archived: bool,
) -> Select[Any]:
    if project_id is not None:
        statement = statement.where(Experiment.project_id == project_id)
    if status is not None:
        statement = statement.where(Experiment.status == status)
    if not include_archived:
        statement = statement.where(Experiment.archived_at.is_(None))
    return statement


async def list_experiments(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    project_id: str | None,
    status: ExperimentStatus | None,
    include_archived: bool,
    search: str = "",
) -> tuple[Sequence[Experiment], int]:
    page = _experiment_filter(
        select(Experiment),
        project_id=project_id,
        status=status,
        include_archived=include_archived,
    )
    needle = search.strip().lower()
    matches = func.lower(Experiment.id).contains(needle, autoescape=True) | func.lower(
        Experiment.name
    ).contains(needle, autoescape=True)
    if needle:
        page = page.where(matches)
    page = (
        page.options(selectinload(Experiment.variants))
        .order_by(Experiment.created_at.desc(), Experiment.id)
        .limit(limit)
        .offset(offset)
    )
    count = _experiment_filter(
        select(func.count()).select_from(Experiment),
        project_id=project_id,
        status=status,
        include_archived=include_archived,
    )
    if needle:
        count = count.where(matches)
    items = (await session.scalars(page)).all()
    total = int(await session.scalar(count) or 0)
    return items, total


async def add_experiment(session: AsyncSession, experiment: Experiment) -> None:
    session.add(experiment)
    await session.flush()


async def add_variant(session: AsyncSession, variant: Variant) -> None:
    session.add(variant)
    await session.flush()


async def next_variant_position(session: AsyncSession, experiment_id: str) -> int:
    highest = await session.scalar(
        select(func.max(Variant.position)).where(Variant.experiment_id == experiment_id)
    )
    return int(highest or 0) + 1


async def touch_experiment(session: AsyncSession, experiment_id: str) -> None:
    await session.execute(
        update(Experiment).where(Experiment.id == experiment_id).values(updated_at=utcnow())
    )


async def project_of(session: AsyncSession, experiment_id: str) -> str | None:
    statement = select(Experiment.project_id).where(Experiment.id == experiment_id)
    project: str | None = await session.scalar(statement)
    return project


async def projects_of(session: AsyncSession, experiment_ids: set[str]) -> dict[str, str]:
    rows = await session.execute(
        select(Experiment.id, Experiment.project_id).where(Experiment.id.in_(experiment_ids))
    )
    return {str(row[0]): str(row[1]) for row in rows}


async def flag_candidates(session: AsyncSession, project_id: str | None) -> list[tuple[str, Any]]:
    """(id, settings) of the experiments an OFREP bulk evaluation may include: the
    project's (every one on an open instance), not archived, running or stopped."""
    statement = select(Experiment.id, Experiment.settings).where(
        Experiment.archived_at.is_(None),
        Experiment.status.in_([ExperimentStatus.RUNNING, ExperimentStatus.STOPPED]),
    )
    if project_id is not None:
        statement = statement.where(Experiment.project_id == project_id)
    rows = await session.execute(statement.order_by(Experiment.id))
    return [(str(row[0]), row[1]) for row in rows]
