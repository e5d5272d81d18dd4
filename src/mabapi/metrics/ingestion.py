"""Daily totals posted by clients: registering new names, checking ownership, the
idempotent upsert. Flushes, never commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.access import service as access
from mabapi.access.service import AuditEvent, Principal
from mabapi.db.base import utcnow
from mabapi.errors import (
    AppError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    no_such_experiment,
)
from mabapi.experiments import repository
from mabapi.experiments import segment_repository as segment_registry
from mabapi.experiments.lifecycle import require_experiment
from mabapi.experiments.models import (
    ExperimentMetric,
    MetricRevision,
)
from mabapi.experiments.schemas import MAX_VARIANTS
from mabapi.guardrails import service as guardrails
from mabapi.metrics import repository as reported
from mabapi.metrics.schemas import MetricIn

# Segments one experiment may have (MABAPI_SEGMENTS_MAX_PER_EXPERIMENT's default).
DEFAULT_MAX_SEGMENTS = 1000


async def ingest(
    session: AsyncSession,
    *,
    rows: Sequence[MetricIn],
    auto_create: bool,
    principal: Principal,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
) -> None:
    """Daily totals sent by `principal`: experiments of other projects are a 404, new
    ones are registered in the caller's project.

    Ownership is checked on the rows that exist after the registering insert, in the same
    transaction: when two projects create one new id at the same moment, the insert
    (ON CONFLICT DO NOTHING) waits for the other's to commit, and the check then sees the
    winner's project, so the loser gets 404 and writes nothing. Checking before the
    insert let the loser's rows land in the winner's experiment."""
    experiment_ids = {row.experiment_id for row in rows}
    if auto_create:
        await repository.insert_experiments_if_missing(
            session, experiment_ids, principal.home_project
        )
    await check_experiments(session, principal=principal, experiment_ids=experiment_ids)
    primary = [row for row in rows if row.metric_id is None]
    guarded: set[str] = set()
    if primary:
        facts = await record_metrics(
            session, rows=primary, auto_create=auto_create, max_segments=max_segments
        )
        guarded |= {experiment_id for experiment_id, fact in facts.items() if fact.guarded}
    if len(primary) < len(rows):
        guarded |= await _record_guardrail_rows(
            session, [row for row in rows if row.metric_id is not None]
        )
    if guarded:
        latest: dict[str, date] = {}
        for row in rows:
            if row.experiment_id in guarded:
                latest[row.experiment_id] = max(row.date, latest.get(row.experiment_id, row.date))
        await _check_guardrails(session, latest)


async def _check_guardrails(session: AsyncSession, latest: dict[str, date]) -> None:
    """New data may breach a guardrail. The check runs here, where the data is written, and
    records (and announces) a breach, so reads never write: on the data before the day
    after the latest day posted (today at most), the check that day would have made, so a
    backfill's breach is dated as it would have been found. (Real-time guardrail
    conversions are checked by the watcher; reads obey a breach the check finds before it
    is recorded: `guardrails.status`.)"""
    today = utcnow().date()
    for experiment_id, last in sorted(latest.items()):
        experiment = await require_experiment(session, experiment_id)
        day = guardrails.check_day(today, last + timedelta(days=1))
        await guardrails.enforce(session, experiment, day=day)


async def _record_guardrail_rows(session: AsyncSession, rows: Sequence[MetricIn]) -> set[str]:
    experiments = {}
    for experiment_id in sorted({row.experiment_id for row in rows}):
        experiment = await require_experiment(session, experiment_id)
        if experiment.archived:
            raise ConflictError(
                f"experiment {experiment_id!r} is archived and takes no new metrics; restore it "
                "with POST /experiments/{id}/restore"
            )
        experiments[experiment_id] = experiment
    await guardrails.record_rows(session, experiments, rows)
    return set(experiments)


async def check_experiments(
    session: AsyncSession,
    *,
    principal: Principal,
    experiment_ids: Iterable[str],
    must_exist: bool = False,
) -> None:
    """404 for any named experiment of another project, worded exactly as for one that
    does not exist, so a key learns nothing about other projects. `must_exist`: also for
    one that does not exist (where nothing would create it), so both end after the same
    work."""
    if principal.project_id is None:
        return
    wanted = set(experiment_ids)
    owners = await repository.projects_of(session, wanted)
    for experiment_id in sorted(wanted if must_exist else owners):
        if owners.get(experiment_id) != principal.project_id:
            raise no_such_experiment(experiment_id)


@dataclass(frozen=True, slots=True)
class Report:
    """One POST /metrics/: the row, who sent it, and its audit entry (if audited)."""

    row: MetricIn
    principal: Principal
    audit: AuditEvent | None = None


async def ingest_many(
    session: AsyncSession,
    reports: Sequence[Report],
    *,
    auto_create: bool,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
) -> list[AppError | None]:
    """Many single-row posts in one transaction (group commit): a few statements for the
    whole batch. A refusal (unknown or archived experiment, another project's...) is
    raised for the batch; the group commit then writes the batch one post per
    transaction, so only the refused post is refused.

    Two posts of the same (experiment, variant, day) in one batch were concurrent, so
    either order is a valid one: the later in the queue wins, as if it came second."""
    await _ingest_together(session, reports, auto_create=auto_create, max_segments=max_segments)
    return [None] * len(reports)


async def _ingest_together(
    session: AsyncSession,
    reports: Sequence[Report],
    *,
    auto_create: bool,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
) -> None:
    by_principal: dict[Principal, dict[tuple[str, ...], MetricIn]] = {}
    for report in reports:
        rows = by_principal.setdefault(report.principal, {})
        row = report.row
        key = (row.experiment_id, row.variant_id, row.date.isoformat(), row.metric_id or "",
               row.segment or "")  # fmt: skip
        rows.pop(key, None)
        rows[key] = report.row
    # The audit entries first: ingest ends holding the experiment's lock until COMMIT, and
    # every round trip made while holding it delays the other processes' batches.
    await access.record_many(session, [r.audit for r in reports if r.audit is not None])
    for principal, rows in by_principal.items():
        await ingest(
            session,
            rows=list(rows.values()),
            auto_create=auto_create,
            principal=principal,
            max_segments=max_segments,
        )


async def record_metrics(
    session: AsyncSession,
    *,
    rows: Sequence[MetricIn],
    auto_create: bool,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
) -> dict[str, repository.ExperimentFacts]:
    """Set daily totals (an idempotent upsert), registering unknown variants if allowed
    (`ingest` has registered the experiments and checked their owner). Returns what it
    checked of each experiment."""
    experiment_ids = {row.experiment_id for row in rows}
    variant_keys = {(row.experiment_id, row.variant_id) for row in rows}
    if auto_create:
        await repository.insert_variants_if_missing(session, variant_keys)
        facts = await repository.experiment_facts(session, experiment_ids)
        crowded = sorted(e for e, fact in facts.items() if fact.variants > MAX_VARIANTS)
        if crowded:  # the whole request rolls back, registrations included
            raise ConflictError(
                f"experiment(s) {', '.join(crowded)} would have more than {MAX_VARIANTS} "
                "variants; post metrics for fewer distinct variant ids"
            )
    else:
        missing_experiments = experiment_ids - await repository.existing_experiment_ids(
            session, experiment_ids
        )
        if missing_experiments:
            raise NotFoundError(
                f"unknown experiment(s): {', '.join(sorted(missing_experiments))}; create them "
                "first with POST /experiments (automatic creation is off)"
            )
        missing_variants = variant_keys - await repository.existing_variant_keys(
            session, variant_keys
        )
        if missing_variants:
            names = ", ".join(f"{e}/{v}" for e, v in sorted(missing_variants))
            raise NotFoundError(
                f"unknown variant(s): {names}; add them with POST /experiments/{{id}}/variants "
                "first (automatic creation is off)"
            )
        facts = await repository.experiment_facts(session, experiment_ids)
    archived = {e for e, fact in facts.items() if fact.archived}
    if archived:
        raise ConflictError(
            f"experiment(s) {', '.join(sorted(archived))} are archived and take no new "
            "metrics; restore them with POST /experiments/{id}/restore"
        )
    value_experiments = {e for e, fact in facts.items() if fact.metric_kind == "value"}
    missing_values = [
        index
        for index, row in enumerate(rows)
        if row.experiment_id in value_experiments and row.value_sum is None
    ]
    if missing_values:
        first = rows[missing_values[0]]
        raise InvalidInputError(
            f"experiment {first.experiment_id!r} measures values: every row needs value_sum and "
            f"value_sum_squares ({len(missing_values)} row(s) lack them, first at index "
            f"{missing_values[0]})"
        )
    wanted: dict[str, set[str]] = {}
    for row in rows:
        if row.segment:
            wanted.setdefault(row.experiment_id, set()).add(row.segment)
    await segment_registry.register_or_refuse(session, wanted, cap=max_segments)
    await reported.upsert_daily_metrics(
        session,
        [
            {
                "experiment_id": row.experiment_id,
                "variant_id": row.variant_id,
                "date": row.date,
                "segment": row.segment or "",
                "impressions": row.impressions,
                "successes": row.successes,
                "value_sum": row.value_sum,
                "value_sum_squares": row.value_sum_squares,
            }
            for row in rows
        ],
    )
    return facts


async def daily_metrics(
    session: AsyncSession,
    *,
    experiment_id: str,
    start: date | None,
    end: date | None,
    variant_id: str | None,
    after: tuple[date, str, str] | None = None,
    limit: int | None = None,
) -> Sequence[ExperimentMetric]:
    await require_experiment(session, experiment_id)
    return await repository.list_daily_metrics(
        session, experiment_id, start=start, end=end, variant_id=variant_id, after=after,
        limit=limit,
    )  # fmt: skip


async def revisions(
    session: AsyncSession,
    *,
    experiment_id: str,
    start: date | None,
    end: date | None,
    variant_id: str | None,
    after: tuple[date, str, int] | None = None,
    limit: int | None = None,
) -> Sequence[MetricRevision]:
    await require_experiment(session, experiment_id)
    return await reported.list_revisions(
        session, experiment_id, start=start, end=end, variant_id=variant_id, after=after,
        limit=limit,
    )  # fmt: skip
