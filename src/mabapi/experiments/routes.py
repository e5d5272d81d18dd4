"""HTTP routes of the experiments domain: parse, call the service, return a schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from mabapi.deps import SessionDep, SettingsDep
from mabapi.errors import error_body
from mabapi.experiments import service
from mabapi.experiments.models import Experiment, ExperimentStatus
from mabapi.experiments.schemas import (
    AllocationOut,
    BatchResultOut,
    CredibleInterval,
    ExperimentIn,
    ExperimentOut,
    ExperimentPage,
    ExperimentPatch,
    MetricIn,
    MetricRowOut,
    MetricRowsOut,
    MetricsBatchIn,
    StatusOut,
    SummaryOut,
    VariantIn,
    VariantSummary,
)
from mabapi.schemas import ID_PATTERN, IsoDate

ExperimentId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN.pattern,
        description="Experiment id: 1-128 of A-Z a-z 0-9 _ . : -",
    ),
]

Responses = dict[int | str, dict[str, Any]]


def _error(description: str) -> dict[str, Any]:
    example = error_body("code", "what went wrong and how to fix it")
    return {"description": description, "content": {"application/json": {"example": example}}}


INVALID: Responses = {422: _error("The request does not have the documented shape or values.")}
NOT_FOUND: Responses = {404: _error("No such experiment (or variant).")}
CONFLICT: Responses = {409: _error("The request conflicts with the experiment's current state.")}
TOO_LARGE: Responses = {413: _error("The request body is larger than the configured limit.")}
UNAVAILABLE: Responses = {503: _error("The database is unreachable; retry after the given delay.")}

metrics_router = APIRouter(tags=["metrics"], responses={**INVALID, **TOO_LARGE, **UNAVAILABLE})
allocations_router = APIRouter(tags=["allocations"], responses={**UNAVAILABLE})
experiments_router = APIRouter(
    prefix="/experiments", tags=["experiments"], responses={**INVALID, **UNAVAILABLE}
)


@metrics_router.post("/metrics/", response_model=StatusOut, responses={**NOT_FOUND, **CONFLICT})
async def post_metric(metric: MetricIn, session: SessionDep, settings: SettingsDep) -> StatusOut:
    """Set one variant's totals for one day. Re-posting the same day replaces it."""
    await service.record_metrics(session, rows=[metric], auto_create=settings.auto_create)
    return StatusOut()


@metrics_router.post(
    "/metrics/batch", response_model=BatchResultOut, responses={**NOT_FOUND, **CONFLICT}
)
async def post_metrics_batch(
    batch: MetricsBatchIn, session: SessionDep, settings: SettingsDep
) -> BatchResultOut:
    """Set up to 10,000 daily rows in one transaction: all of them or none."""
    await service.record_metrics(session, rows=batch.metrics, auto_create=settings.auto_create)
    return BatchResultOut(rows=len(batch.metrics))


@allocations_router.get(
    "/allocations/{experiment_id}",
    response_model=AllocationOut,
    responses={**NOT_FOUND, **CONFLICT, **INVALID},
)
async def get_allocation(
    experiment_id: ExperimentId,
    session: SessionDep,
    for_date: Annotated[
        IsoDate | None,
        Query(description="Day being planned (YYYY-MM-DD, default today UTC); data before it."),
    ] = None,
) -> AllocationOut:
    """Traffic split by Thompson sampling: each variant's probability of being best."""
    day = for_date or datetime.now(UTC).date()
    result = await service.compute_allocation(session, experiment_id=experiment_id, for_date=day)
    return AllocationOut(
        experiment_id=result.experiment_id,
        date=result.for_date,
        allocations=dict(zip(result.variant_ids, result.percentages, strict=True)),
        probability_best=dict(zip(result.variant_ids, result.probability_best, strict=True)),
        algorithm=result.algorithm,
        algorithm_version=result.algorithm_version,
        inputs={
            variant_id: {"impressions": totals.impressions, "successes": totals.successes}
            for variant_id, totals in zip(result.variant_ids, result.inputs, strict=True)
        },
    )


def _experiment_out(experiment: Experiment) -> ExperimentOut:
    return ExperimentOut.model_validate(experiment)


@experiments_router.post(
    "", status_code=201, response_model=ExperimentOut, responses={**CONFLICT, **TOO_LARGE}
)
async def create_experiment(payload: ExperimentIn, session: SessionDep) -> ExperimentOut:
    """Create an experiment with its variants (the first is the control unless one says so)."""
    return _experiment_out(await service.create_experiment(session, payload=payload))


@experiments_router.get("", response_model=ExperimentPage)
async def list_experiments(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    status: ExperimentStatus | None = None,
    include_archived: bool = False,
) -> ExperimentPage:
    """Experiments, newest first, `limit` at a time."""
    items, total = await service.list_experiments(
        session, limit=limit, offset=offset, status=status, include_archived=include_archived
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


@experiments_router.get(
    "/{experiment_id}/metrics", response_model=MetricRowsOut, responses=NOT_FOUND
)
async def get_metrics(
    experiment_id: ExperimentId,
    session: SessionDep,
    start: Annotated[
        IsoDate | None, Query(alias="from", description="First day (inclusive).")
    ] = None,
    end: Annotated[IsoDate | None, Query(alias="to", description="Last day (inclusive).")] = None,
    variant_id: Annotated[str | None, Query(pattern=ID_PATTERN.pattern, max_length=128)] = None,
) -> MetricRowsOut:
    """The daily rows, oldest first."""
    rows = await service.daily_metrics(
        session, experiment_id=experiment_id, start=start, end=end, variant_id=variant_id
    )
    return MetricRowsOut(
        experiment_id=experiment_id, metrics=[MetricRowOut.model_validate(row) for row in rows]
    )


@experiments_router.get("/{experiment_id}/summary", response_model=SummaryOut, responses=NOT_FOUND)
async def get_summary(experiment_id: ExperimentId, session: SessionDep) -> SummaryOut:
    """Per variant, over all data: totals, rate, posterior mean, 95% interval, P(best)."""
    experiment, stats = await service.variant_statistics(session, experiment_id=experiment_id)
    return SummaryOut(
        experiment_id=experiment.id,
        prior={"alpha": service.DEFAULT_PRIOR.alpha, "beta": service.DEFAULT_PRIOR.beta},
        algorithm=experiment.algorithm,
        variants=[
            VariantSummary(
                variant_id=item.variant.id,
                is_control=item.variant.is_control,
                active=item.variant.active,
                impressions=item.totals.impressions,
                successes=item.totals.successes,
                conversion_rate=(
                    item.totals.successes / item.totals.impressions
                    if item.totals.impressions
                    else None
                ),
                posterior_mean=item.posterior.mean,
                credible_interval=CredibleInterval(
                    lower=item.credible_interval[0],
                    upper=item.credible_interval[1],
                    mass=service.CREDIBLE_MASS,
                ),
                probability_best=item.probability_best,
            )
            for item in stats
        ],
    )
