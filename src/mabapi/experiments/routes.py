"""HTTP routes of the experiments domain: parse, call the service, return a schema."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter

from mabapi.access.service import AuditEvent, Principal
from mabapi.cache import AnswerCache
from mabapi.db.transactions import background_transaction
from mabapi.deps import ExperimentId, PrincipalDep, SessionDep, SettingsDep
from mabapi.errors import InvalidInputError, Responses, documented_error
from mabapi.experiments import service
from mabapi.experiments.models import Experiment, ExperimentStatus, MetricKind
from mabapi.experiments.schemas import (
    AllocationOut,
    BatchResultOut,
    BreachOut,
    ClearedOut,
    CredibleInterval,
    DelayCurveOut,
    ExperimentIn,
    ExperimentOut,
    ExperimentPage,
    ExperimentPatch,
    GainOut,
    GuardrailSummaryOut,
    GuardrailVariantOut,
    MetricIn,
    MetricRowOut,
    MetricRowsOut,
    MetricsBatchIn,
    RecommendationOut,
    RevisionOut,
    RevisionsOut,
    SampleRatioOut,
    SegmentOut,
    SegmentsOut,
    StatusOut,
    StratifiedOut,
    SummaryOut,
    UpliftOut,
    VariantIn,
    VariantPatch,
    VariantSummary,
)
from mabapi.hot_paths import hot_path
from mabapi.observability import ROWS_INGESTED, observe_allocation
from mabapi.runtime import Runtime, runtime_of
from mabapi.schemas import ID_PATTERN, Identifier, IsoDate
from mabapi.settings import Settings

INVALID: Responses = {
    422: documented_error("The request does not have the documented shape or values.")
}
NOT_FOUND: Responses = {404: documented_error("No such experiment (or variant).")}
CONFLICT: Responses = {
    409: documented_error("The request conflicts with the experiment's current state.")
}
TOO_LARGE: Responses = {
    413: documented_error("The request body is larger than the configured limit.")
}
UNAVAILABLE: Responses = {
    503: documented_error("The database is unreachable; retry after the given delay.")
}

SegmentQuery = Annotated[
    Identifier | None,
    Query(
        description="One segment (settings.segments.pooling). Allocations: a segment never "
        "seen gets the split over all traffic.",
    ),
]

metrics_router = APIRouter(tags=["metrics"], responses={**INVALID, **TOO_LARGE, **UNAVAILABLE})
allocations_router = APIRouter(tags=["allocations"], responses={**UNAVAILABLE})
experiments_router = APIRouter(
    prefix="/experiments", tags=["experiments"], responses={**INVALID, **UNAVAILABLE}
)


async def _metric_answer(
    request: Request, principal: Principal, _params: dict[str, str], metric: MetricIn
) -> StatusOut:
    return await record_metric(
        runtime_of(request.app), principal, metric, getattr(request.state, "audit", None)
    )


async def _allocation_answer(
    request: Request, principal: Principal, params: dict[str, str], for_date: date | None
) -> AllocationOut:
    return await allocation_answer(
        runtime_of(request.app), params["experiment_id"], for_date, record=principal.may_write
    )


@metrics_router.post("/metrics/", response_model=StatusOut, responses={**NOT_FOUND, **CONFLICT})
@hot_path(_metric_answer, body=MetricIn)
async def post_metric(metric: MetricIn, request: Request, principal: PrincipalDep) -> StatusOut:
    """Set one variant's totals for one day. Re-posting the same day replaces it."""
    return await record_metric(
        runtime_of(request.app), principal, metric, getattr(request.state, "audit", None)
    )


async def record_metric(
    state: Runtime, principal: Principal, metric: MetricIn, audit: AuditEvent | None
) -> StatusOut:
    """POST /metrics/' answer; also called by the hot path (mabapi/middleware.py). Written
    (with its audit entry) by the process's group-commit writer, answered once committed."""
    await state.ingest_writer.submit(service.Report(metric, principal, audit))
    ROWS_INGESTED.inc()
    return StatusOut()


async def _record(
    session: SessionDep, settings: Settings, principal: Principal, rows: list[MetricIn]
) -> None:
    await service.ingest(
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
)


@metrics_router.post(
    "/metrics/batch", response_model=BatchResultOut, responses={**NOT_FOUND, **CONFLICT}
)
async def post_metrics_batch(
    batch: MetricsBatchIn, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> BatchResultOut:
    """Set up to 10,000 daily rows in one transaction: all of them or none."""
    await _record(session, settings, principal, batch.metrics)
    return BatchResultOut(rows=len(batch.metrics))


@allocations_router.get(
    "/allocations/{experiment_id}",
    response_model=AllocationOut,
    responses={**NOT_FOUND, **CONFLICT, **INVALID},
)
@hot_path(_allocation_answer, query=("for_date", TypeAdapter(IsoDate)))
async def get_allocation(
    experiment_id: ExperimentId,
    request: Request,
    principal: PrincipalDep,
    for_date: Annotated[
        IsoDate | None,
        Query(description="Day being planned (YYYY-MM-DD, default today UTC); data before it."),
    ] = None,
    segment: SegmentQuery = None,
) -> AllocationOut:
    """Traffic split by Thompson sampling: each variant's probability of being best.

    An answer is reused for up to `MABAPI_ALLOCATION_CACHE_SECONDS` (a write through the
    same process drops it at once). Answers to a key that may write (or on an open
    instance) are kept in the audit trail; a read key's are computed, not stored."""
    return await allocation_answer(
        runtime_of(request.app),
        experiment_id,
        for_date,
        record=principal.may_write,
        segment=segment,
    )


async def allocation_answer(
    state: Runtime,
    experiment_id: str,
    for_date: date | None,
    *,
    record: bool,
    segment: str | None = None,
) -> AllocationOut:
    """GET /allocations' answer; also called by the hot path (mabapi/middleware.py).

    `record`: store the answer as an allocation snapshot (the audit trail, the served
    history): for the callers that serve traffic with it (write keys, open instances),
    not for read keys, whose every distinct date asked about would add a row."""
    day = for_date or datetime.now(UTC).date()
    answers: AnswerCache[Any, Any] = state.answers
    settings: Settings = state.settings

    async def compute() -> service.Allocation:
        # Its own transaction: the cache may run this after the request has ended.
        async with background_transaction(state.sessionmaker) as session:
            computed = await service.compute_allocation(
                session,
                experiment_id=experiment_id,
                for_date=day,
                record=record,
                segment=segment,
                fits=state.segment_fits,
            )
        observe_allocation(
            experiment_id,
            computed.variant_ids,
            computed.shares,
            cap=settings.metrics_max_experiments,
        )
        return computed

    result = await answers.get(("allocation", experiment_id, day, record, segment), compute)
    live = await state.allocation_cache.get(experiment_id, segment)
    return AllocationOut(
        experiment_id=result.experiment_id,
        date=result.for_date,
        allocations=dict(zip(result.variant_ids, result.percentages, strict=True)),
        probability_best=dict(zip(result.variant_ids, result.probability_best, strict=True)),
        algorithm=result.algorithm,
        algorithm_version=result.algorithm_version,
        inputs={
            variant_id: _inputs_out(totals)
            for variant_id, totals in zip(result.variant_ids, result.inputs, strict=True)
        },
        burned_in=result.burned_in,
        live=live.live_percentages,
        guardrails={v: BreachOut.model_validate(b) for v, b in result.guardrails.items()},
        segment=result.segment,
        delay_curve=delay_curve_out(result.delay_curve),
    )


def delay_curve_out(choice: service.CurveChoice | None) -> DelayCurveOut | None:
    if choice is None:
        return None
    cdf = None if choice.curve is None else [float(x) for x in choice.curve.cdf]
    return DelayCurveOut(source=choice.source, days=choice.days, cdf=cdf, note=choice.note)


def _inputs_out(totals: service.Totals) -> dict[str, int | float]:
    def number(value: float) -> int | float:
        return int(value) if float(value).is_integer() else float(value)

    out = {"impressions": number(totals.impressions), "successes": number(totals.successes)}
    if totals.value_sum or totals.value_sum_squares:
        out["value_sum"] = totals.value_sum
        out["value_sum_squares"] = totals.value_sum_squares
    return out


def _experiment_out(experiment: Experiment) -> ExperimentOut:
    return ExperimentOut.model_validate(experiment)


@experiments_router.post(
    "", status_code=201, response_model=ExperimentOut, responses={**CONFLICT, **TOO_LARGE}
)
async def create_experiment(
    payload: ExperimentIn, session: SessionDep, principal: PrincipalDep
) -> ExperimentOut:
    """Create an experiment with its variants (the first is the control unless one says so),
    in the key's project."""
    return _experiment_out(
        await service.create_experiment(session, payload=payload, project_id=principal.home_project)
    )


@experiments_router.get("", response_model=ExperimentPage)
async def list_experiments(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    status: ExperimentStatus | None = None,
    include_archived: bool = False,
) -> ExperimentPage:
    """Experiments, newest first, `limit` at a time."""
    items, total = await service.list_experiments(
        session,
        limit=limit,
        offset=offset,
        status=status,
        include_archived=include_archived,
        project_id=principal.project_id,
    )
    return ExperimentPage(
        items=[_experiment_out(item) for item in items], total=total, limit=limit, offset=offset
    )


@experiments_router.get("/{experiment_id}", response_model=ExperimentOut, responses=NOT_FOUND)
async def get_experiment(experiment_id: ExperimentId, session: SessionDep) -> ExperimentOut:
    return _experiment_out(await service.require_experiment(session, experiment_id))


@experiments_router.patch("/{experiment_id}", response_model=ExperimentOut, responses=NOT_FOUND)
async def patch_experiment(
    experiment_id: ExperimentId, patch: ExperimentPatch, session: SessionDep
) -> ExperimentOut:
    """Change the name, description or status (draft, running, paused, stopped)."""
    experiment = await service.update_experiment(session, experiment_id=experiment_id, patch=patch)
    return _experiment_out(experiment)


@experiments_router.post(
    "/{experiment_id}/guardrails/{metric_id}/clear",
    response_model=ClearedOut,
    responses=NOT_FOUND,
)
async def clear_guardrail(
    experiment_id: ExperimentId, metric_id: ExperimentId, session: SessionDep
) -> ClearedOut:
    """Clear a guardrail's breaches: the variants it stopped or floored get traffic again
    (the breaches stay on record). A later check may breach again."""
    cleared = await service.clear_guardrail(
        session, experiment_id=experiment_id, metric_id=metric_id
    )
    return ClearedOut(experiment_id=experiment_id, metric_id=metric_id, cleared=cleared)


@experiments_router.post(
    "/{experiment_id}/variants",
    status_code=201,
    response_model=ExperimentOut,
    responses={**NOT_FOUND, **CONFLICT},
)
async def add_variant(
    experiment_id: ExperimentId, payload: VariantIn, session: SessionDep
) -> ExperimentOut:
    """Add a variant; it enters the allocation from the next request on."""
    experiment = await service.add_variant(session, experiment_id=experiment_id, payload=payload)
    return _experiment_out(experiment)


@experiments_router.patch(
    "/{experiment_id}/variants/{variant_id}",
    response_model=ExperimentOut,
    responses={**NOT_FOUND, **CONFLICT},
)
async def patch_variant(
    experiment_id: ExperimentId,
    variant_id: ExperimentId,
    patch: VariantPatch,
    session: SessionDep,
) -> ExperimentOut:
    """Rename, pause (`{"active": false}`: share 0, given to the others), resume, or make
    a variant the control."""
    experiment = await service.update_variant(
        session, experiment_id=experiment_id, variant_id=variant_id, patch=patch
    )
    return _experiment_out(experiment)


@experiments_router.post(
    "/{experiment_id}/archive", response_model=ExperimentOut, responses=NOT_FOUND
)
async def archive_experiment(experiment_id: ExperimentId, session: SessionDep) -> ExperimentOut:
    """Hide from the default list and refuse new metrics; data and allocations stay."""
    experiment = await service.set_archived(session, experiment_id=experiment_id, archived=True)
    return _experiment_out(experiment)


@experiments_router.post(
    "/{experiment_id}/restore", response_model=ExperimentOut, responses=NOT_FOUND
)
async def restore_experiment(experiment_id: ExperimentId, session: SessionDep) -> ExperimentOut:
    """Undo an archive."""
    experiment = await service.set_archived(session, experiment_id=experiment_id, archived=False)
    return _experiment_out(experiment)


# The filters GET .../metrics and GET .../metrics/revisions share.
FromDay = Annotated[IsoDate | None, Query(alias="from", description="First day (inclusive).")]
ToDay = Annotated[IsoDate | None, Query(alias="to", description="Last day (inclusive).")]
VariantFilter = Annotated[str | None, Query(pattern=ID_PATTERN.pattern, max_length=128)]
# Pages: at most MAX_PAGE rows an answer (DEFAULT_PAGE unless `limit` says otherwise), and
# an opaque cursor to the next page (keyset paging: a page costs the same however deep).
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
PageLimit = Annotated[
    int, Query(ge=1, le=MAX_PAGE, description=f"Rows per page (at most {MAX_PAGE}).")
]
Cursor = Annotated[
    str | None,
    Query(max_length=600, pattern=r"^[A-Za-z0-9_-]+={0,2}$", description="`next_cursor` of "
          "the previous page."),
]  # fmt: skip


def _encode_cursor(key: Sequence[object]) -> str:
    text = json.dumps([str(part) if isinstance(part, date) else part for part in key])
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode_cursor(cursor: str, kinds: tuple[type, ...]) -> tuple[Any, ...]:
    """The key a cursor holds, checked part by part; a 422 for one this API did not give."""
    problem = InvalidInputError("cursor is not one this API gave: pass next_cursor as it came")
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise problem
        key: list[Any] = []
        for part, kind in zip(parts, kinds, strict=True):
            if kind is date:
                key.append(date.fromisoformat(part))
            elif not isinstance(part, kind) or isinstance(part, bool):
                raise problem
            else:
                key.append(part)
        return tuple(key)
    except (ValueError, TypeError, binascii.Error):
        raise problem from None


@experiments_router.get(
    "/{experiment_id}/metrics", response_model=MetricRowsOut, responses={**NOT_FOUND, **INVALID}
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
    after = None if cursor is None else _decode_cursor(cursor, (date, str, str))
    rows = await service.daily_metrics(
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
        else _encode_cursor((last.date, last.variant_id, last.segment)),
    )


@experiments_router.get(
    "/{experiment_id}/metrics/revisions",
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
    after = None if cursor is None else _decode_cursor(cursor, (date, str, int))
    rows = await service.revisions(
        session, experiment_id=experiment_id, start=start, end=end, variant_id=variant_id,
        after=after, limit=limit + 1,
    )  # fmt: skip
    page = rows[:limit]
    last = page[-1] if len(rows) > limit else None
    return RevisionsOut(
        experiment_id=experiment_id,
        revisions=[RevisionOut.model_validate(row) for row in page],
        next_cursor=None if last is None else _encode_cursor((last.date, last.variant_id, last.id)),
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


SEGMENT_PAGE = 100
MAX_SEGMENT_PAGE = 1000


@experiments_router.get(
    "/{experiment_id}/segments", response_model=SegmentsOut, responses={**NOT_FOUND, **INVALID}
)
async def get_segments(
    experiment_id: ExperimentId,
    session: SessionDep,
    request: Request,
    limit: Annotated[
        int, Query(ge=1, le=MAX_SEGMENT_PAGE, description="Segments per page (at most 1,000).")
    ] = SEGMENT_PAGE,
    cursor: Annotated[
        Identifier | None, Query(description="`next_cursor` of the previous page.")
    ] = None,
) -> SegmentsOut:
    """The segments seen (reported rows naming them, units assigned in them), in name
    order, a page at a time: each one's units, its leader and that leader's probability to
    be best under the experiment's pooling, and whether the leader differs from the leader
    over all traffic."""
    page = await service.list_segments(
        session,
        experiment_id=experiment_id,
        fits=runtime_of(request.app).segment_fits,
        after=cursor,
        limit=limit,
    )
    return SegmentsOut(
        experiment_id=experiment_id,
        pooling=page.pooling,
        overall_leader=page.overall_leader,
        segments=[
            SegmentOut(
                segment=item.segment,
                units=item.units,
                leader=item.leader,
                leader_probability_best=item.leader_probability,
                probability_best=item.probability_best,
                differs_from_overall=item.differs,
            )
            for item in page.segments
        ],
        total=page.total,
        next_cursor=page.next_after,
    )


@experiments_router.get("/{experiment_id}/summary", response_model=SummaryOut, responses=NOT_FOUND)
async def get_summary(
    experiment_id: ExperimentId, session: SessionDep, request: Request, segment: SegmentQuery = None
) -> SummaryOut:
    """Per variant, over all data: totals, posterior, 95% interval, probability to be best,
    expected loss, uplift and probability to beat the control, period-stratified means;
    then value remaining, the recommendation, the gain over an even split and an SRM check.
    With `segment`: that segment's (its posteriors are those its allocation uses; no SRM
    check; 404 for a segment never seen).
    """
    fits = runtime_of(request.app).segment_fits
    return summary_out(
        await service.summarize(session, experiment_id=experiment_id, segment=segment, fits=fits)
    )


def summary_out(summary: service.Summary) -> SummaryOut:
    """The summary as the API answers it (the dashboard shows exactly these numbers)."""
    experiment = summary.experiment
    settings = service.experiment_settings(experiment)
    kind = MetricKind(experiment.metric_kind)
    mass = service.CREDIBLE_MASS
    srm = summary.sample_ratio
    ids = [item.variant.id for item in summary.variants]
    return SummaryOut(
        experiment_id=experiment.id,
        segment=summary.segment,
        metric_kind=kind,
        higher_is_better=experiment.higher_is_better,
        algorithm=experiment.algorithm,
        prior=settings.prior.model_dump(),
        days_of_data=summary.days_of_data,
        variants=[_variant_summary(item, kind) for item in summary.variants],
        value_remaining=_finite(summary.value_remaining),
        recommendation=RecommendationOut(
            action=summary.recommendation.action.value,
            winner=summary.winner_id,
            claims_better=summary.recommendation.action.claims_better,
            reason=summary.recommendation.reason,
            days_to_decision=summary.days_to_decision,
        ),
        stop_rule=settings.stop_rule,
        gain_vs_even_split=GainOut(
            mean=summary.gain.mean,
            lower=summary.gain.lower,
            upper=summary.gain.upper,
            mass=mass,
            unit="value" if kind is MetricKind.VALUE else "conversions",
            units=dict(zip(ids, summary.served_units, strict=False)),
        ),
        sample_ratio_mismatch=(
            None
            if srm is None
            else SampleRatioOut(
                observed=dict(zip(ids, srm.observed.tolist(), strict=True)),
                expected=dict(zip(ids, srm.expected.tolist(), strict=True)),
                chi_square=_finite(srm.chi_square),
                p_value=srm.p_value,
                mismatch=srm.mismatch,
            )
        ),
        monte_carlo={"seed": summary.seed, "draws": summary.draws},
        guardrails=[_guardrail_out(item) for item in summary.guardrails],
        delay_curve=delay_curve_out(summary.delay_curve),
    )


def _guardrail_out(report: service.GuardrailReport) -> GuardrailSummaryOut:
    return GuardrailSummaryOut(
        guardrail=report.guardrail,
        control_id=report.reference,
        check=report.check,
        variants=[
            GuardrailVariantOut(
                variant_id=item.variant_id,
                units=item.units,
                successes=item.successes,
                mean=item.mean,
                relative_difference=(
                    None
                    if item.relative_difference is None
                    else UpliftOut(
                        mean=item.relative_difference[0],
                        lower=item.relative_difference[1],
                        upper=item.relative_difference[2],
                        mass=service.CREDIBLE_MASS,
                    )
                ),
                probability_harm=item.probability_harm,
                breach=None
                if item.breach is None
                else BreachOut.model_validate(service.breach_view(item.breach)),
            )
            for item in report.variants
        ],
    )


def _variant_summary(item: service.VariantStatistics, kind: MetricKind) -> VariantSummary:
    totals = item.totals
    mass = service.CREDIBLE_MASS
    observed = totals.value_sum if kind is MetricKind.VALUE else totals.successes
    return VariantSummary(
        variant_id=item.variant.id,
        is_control=item.variant.is_control,
        active=item.variant.active,
        impressions=int(totals.impressions),
        successes=int(totals.successes),
        value_sum=totals.value_sum,
        effective_impressions=item.effective_impressions,
        conversion_rate=(
            totals.successes / item.effective_impressions if item.effective_impressions else None
        ),
        mean=observed / item.effective_impressions if item.effective_impressions else None,
        posterior_mean=item.posterior.mean,
        credible_interval=CredibleInterval(
            lower=item.credible_interval[0], upper=item.credible_interval[1], mass=mass
        ),
        probability_best=item.probability_best,
        expected_loss=_finite(item.expected_loss),
        probability_beats_control=item.probability_beats_control,
        uplift=(
            # Undefined when the control's value can be 0 (a relative change of 0 is
            # infinite): then there is no uplift to report, rather than NaN.
            None
            if item.uplift is None
            or not all(map(math.isfinite, (item.uplift.mean, item.uplift.lower, item.uplift.upper)))
            else UpliftOut(
                mean=item.uplift.mean, lower=item.uplift.lower, upper=item.uplift.upper, mass=mass
            )
        ),
        stratified=StratifiedOut(
            mean=item.stratified.mean, standard_error=item.stratified.standard_error
        ),
    )
