"""HTTP routes of metrics: post daily totals (one, or a batch); read them back, and
their revisions."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Request

from mabapi.access.models import Scope
from mabapi.access.service import AuditEvent, Principal
from mabapi.deps import (
    CONFLICT,
    DEFAULT_PAGE,
    INVALID,
    NOT_FOUND,
    TOO_LARGE,
    UNAVAILABLE,
    Cursor,
    ExperimentId,
    FromDay,
    PageLimit,
    PrincipalDep,
    SessionDep,
    SettingsDep,
    ToDay,
    VariantFilter,
    decode_cursor,
    encode_cursor,
    needs,
)
from mabapi.experiments.schemas import (
    StatusOut,
)
from mabapi.hot_paths import hot_path
from mabapi.metrics import ingestion
from mabapi.metrics.schemas import (
    BatchResultOut,
    MetricIn,
    MetricRowOut,
    MetricRowsOut,
    MetricsBatchIn,
    RevisionOut,
    RevisionsOut,
)
from mabapi.observability import ROWS_INGESTED
from mabapi.runtime import Runtime, runtime_of
from mabapi.settings import Settings

metrics_router = APIRouter(tags=["metrics"], responses={**INVALID, **TOO_LARGE, **UNAVAILABLE})


reads_router = APIRouter(
    prefix="/experiments", tags=["experiments"], responses={**INVALID, **UNAVAILABLE}
)


async def _metric_answer(
    request: Request, principal: Principal, _params: dict[str, str], metric: MetricIn
) -> StatusOut:
    return await record_metric(
        runtime_of(request.app), principal, metric, getattr(request.state, "audit", None)
    )


@metrics_router.post(
    "/metrics/",
    dependencies=[needs(Scope.WRITE)],
    response_model=StatusOut,
    responses={**NOT_FOUND, **CONFLICT},
)
@hot_path(_metric_answer, body=MetricIn)
async def post_metric(metric: MetricIn, request: Request, principal: PrincipalDep) -> StatusOut:
    """Set one variant's totals for one day. Re-posting the same day replaces it."""
    return await record_metric(
        runtime_of(request.app), principal, metric, getattr(request.state, "audit", None)
    )


async def record_metric(
    state: Runtime, principal: Principal, metric: MetricIn, audit: AuditEvent | None
) -> StatusOut:
    """POST /metrics/' answer; also called by the hot path (mabapi/hot_paths.py). Written
    (with its audit entry) by the process's group-commit writer, answered once committed."""
    await state.ingest_writer.submit(ingestion.Report(metric, principal, audit))
    ROWS_INGESTED.inc()
    return StatusOut()


async def _record(
    session: SessionDep, settings: Settings, principal: Principal, rows: list[MetricIn]
) -> None:
    await ingestion.ingest(
        session,
        rows=rows,
        auto_create=settings.auto_create,
        principal=principal,
        max_segments=settings.segments_max_per_experiment,
    )
    ROWS_INGESTED.inc(len(rows))


# The original README posted to /metrics/; a client that drops the slash is served too
# (GET /metrics, without it, is the Prometheus scrape path).
metrics_router.add_api_route(
    "/metrics",
    post_metric,
    methods=["POST"],
    response_model=StatusOut,
    responses={**NOT_FOUND, **CONFLICT},
    deprecated=True,
    summary="Post Metric (alias of POST /metrics/)",
    dependencies=[needs(Scope.WRITE)],
)


@metrics_router.post(
    "/metrics/batch",
    dependencies=[needs(Scope.WRITE)],
    response_model=BatchResultOut,
    responses={**NOT_FOUND, **CONFLICT},
)
async def post_metrics_batch(
    batch: MetricsBatchIn, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> BatchResultOut:
    """Set up to 10,000 daily rows in one transaction: all of them or none."""
    await _record(session, settings, principal, batch.metrics)
    return BatchResultOut(rows=len(batch.metrics))


@reads_router.get(
    "/{experiment_id}/metrics",
    dependencies=[needs(Scope.READ)],
    response_model=MetricRowsOut,
    responses={**NOT_FOUND, **INVALID},
)
async def get_metrics(
    experiment_id: ExperimentId,
    session: SessionDep,
    start: FromDay = None,
    end: ToDay = None,
    variant_id: VariantFilter = None,
    limit: PageLimit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> MetricRowsOut:
    """The daily rows, oldest first (by date, variant, segment), a page at a time."""
    after = None if cursor is None else decode_cursor(cursor, (date, str, str))
    rows = await ingestion.daily_metrics(
        session, experiment_id=experiment_id, start=start, end=end, variant_id=variant_id,
        after=after, limit=limit + 1,
    )  # fmt: skip
    page = rows[:limit]
    last = page[-1] if len(rows) > limit else None
    return MetricRowsOut(
        experiment_id=experiment_id,
        metrics=[MetricRowOut.model_validate(row) for row in page],
        next_cursor=None
        if last is None
        else encode_cursor((last.date, last.variant_id, last.segment)),
    )


@reads_router.get(
    "/{experiment_id}/metrics/revisions",
    dependencies=[needs(Scope.READ)],
    response_model=RevisionsOut,
    responses={**NOT_FOUND, **INVALID},
)
async def get_revisions(
    experiment_id: ExperimentId,
    session: SessionDep,
    start: FromDay = None,
    end: ToDay = None,
    variant_id: VariantFilter = None,
    limit: PageLimit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> RevisionsOut:
    """Every change of each day's reported totals, as it arrived (a re-post that changes
    nothing adds none): the audit trail of late data, and what conversion delays are
    learnt from. By day, variant, then arrival, a page at a time."""
    after = None if cursor is None else decode_cursor(cursor, (date, str, int))
    rows = await ingestion.revisions(
        session, experiment_id=experiment_id, start=start, end=end, variant_id=variant_id,
        after=after, limit=limit + 1,
    )  # fmt: skip
    page = rows[:limit]
    last = page[-1] if len(rows) > limit else None
    return RevisionsOut(
        experiment_id=experiment_id,
        revisions=[RevisionOut.model_validate(row) for row in page],
        next_cursor=None if last is None else encode_cursor((last.date, last.variant_id, last.id)),
    )
