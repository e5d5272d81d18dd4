"""HTTP routes of real-time mode: parse, call the service, return a schema."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request

from mabapi.access.models import Scope
from mabapi.access.service import Principal
from mabapi.assignments import service
from mabapi.assignments.cache import AllocationCache, CachedAllocation, UnitMemo
from mabapi.assignments.schemas import (
    AssignIn,
    AssignOut,
    BatchAssignIn,
    BatchAssignOut,
    BatchConversionIn,
    BatchConversionOut,
    ConcludeIn,
    ConversionIn,
    ConversionOut,
)
from mabapi.db.transactions import background_transaction
from mabapi.deps import ExperimentId, LazySessionDep, PrincipalDep, SessionDep, needs
from mabapi.errors import Responses, documented_error
from mabapi.experiments import lifecycle
from mabapi.experiments.schemas import ExperimentOut
from mabapi.hot_paths import hot_path
from mabapi.metrics import ingestion
from mabapi.observability import ASSIGNMENTS, CONVERSIONS
from mabapi.runtime import Runtime, runtime_of

RESPONSES: Responses = {
    404: documented_error("No such experiment (or variant)."),
    409: documented_error("The unit was never assigned, or the experiment takes no new units."),
    413: documented_error("The request body is larger than the configured limit."),
    422: documented_error("The request does not have the documented shape or values."),
    503: documented_error("The database is unreachable; retry after the given delay."),
}

router = APIRouter(tags=["real-time"], responses=RESPONSES)


async def get_cache(request: Request) -> AllocationCache:
    cache = runtime_of(request.app).allocation_cache
    return cache


CacheDep = Annotated[AllocationCache, Depends(get_cache)]


async def get_memo(request: Request) -> UnitMemo:
    memo = runtime_of(request.app).assignment_memo
    return memo


MemoDep = Annotated[UnitMemo, Depends(get_memo)]


_generators: dict[int, np.random.Generator] = {}


def _rng() -> np.random.Generator:
    """This process's generator, seeded from OS entropy on first use. Keyed by pid: a
    forked worker must not inherit its parent's stream (every worker would then draw the
    same variants in the same order). Seeding per request would cost more than a draw."""
    pid = os.getpid()
    generator = _generators.get(pid)
    if generator is None:
        generator = _generators[pid] = np.random.default_rng(secrets.randbits(128))
    return generator


def _assign_out(result: service.AssignResult, *, capped: bool = False) -> AssignOut:
    ASSIGNMENTS.labels("true" if result.new else "false").inc()
    return AssignOut(
        experiment_id=result.experiment_id,
        unit_id=result.unit_id,
        variant_id=result.variant_id,
        probability=result.probability,
        new=result.new,
        concluded=result.concluded,
        segment_capped=capped,
    )


def _stored_segment(segment: str | None, allocation: CachedAllocation) -> str | None:
    """The segment a new unit is stored in: none past the experiment's segment cap."""
    return None if allocation.segment_state == "capped" else segment


def _conversion_out(result: service.ConversionResult) -> ConversionOut:
    CONVERSIONS.labels("true" if result.counted else "false").inc()
    return ConversionOut(
        experiment_id=result.experiment_id,
        unit_id=result.unit_id,
        variant_id=result.variant_id,
        counted=result.counted,
    )


async def _assign_answer(
    request: Request, _principal: Principal, params: dict[str, str], body: AssignIn
) -> AssignOut:
    return await assign_unit(runtime_of(request.app), params["experiment_id"], body)


async def _convert_answer(
    request: Request, _principal: Principal, params: dict[str, str], body: ConversionIn
) -> ConversionOut:
    return await convert_unit(runtime_of(request.app), params["experiment_id"], body)


@router.post(
    "/experiments/{experiment_id}/assign",
    dependencies=[needs(Scope.CLIENT)],
    response_model=AssignOut,
)
@hot_path(_assign_answer, body=AssignIn)
async def assign(experiment_id: ExperimentId, body: AssignIn, request: Request) -> AssignOut:
    """The unit's variant: the same one on every call. The first call draws it by
    Thompson sampling from the current allocation and counts one impression."""
    return await assign_unit(runtime_of(request.app), experiment_id, body)


async def assign_unit(state: Runtime, experiment_id: str, body: AssignIn) -> AssignOut:
    """The assign route's answer; also called by the hot path (mabapi/hot_paths.py).
    A new unit's row is written by the process's group-commit writer."""
    cache: AllocationCache = state.allocation_cache
    allocation = await cache.get(experiment_id, body.segment)
    result = await service.assign(
        state.assign_writer,
        experiment_id=experiment_id,
        unit_id=body.unit_id,
        allocation=allocation,
        rng=_rng(),
        memo=state.assignment_memo,
        segment=_stored_segment(body.segment, allocation),
    )
    return _assign_out(result, capped=allocation.segment_state == "capped" and result.new)


@router.post("/assign/batch", dependencies=[needs(Scope.CLIENT)], response_model=BatchAssignOut)
async def assign_batch(
    body: BatchAssignIn,
    request: Request,
    session: LazySessionDep,
    cache: CacheDep,
    memo: MemoDep,
    principal: PrincipalDep,
) -> BatchAssignOut:
    """Assign up to 1,000 (experiment, unit) pairs in one transaction."""
    # Another project's ids are refused before any allocation is computed for them, in a
    # short transaction of its own: a cold allocation is computed in another one, which
    # on SQLite would wait for this request's (were it open) until the lock timed out.
    if principal.project_id is not None:
        async with background_transaction(runtime_of(request.app).sessionmaker) as check:
            await ingestion.check_experiments(
                check,
                principal=principal,
                experiment_ids={item.experiment_id for item in body.assignments},
                must_exist=True,
            )
    allocations: dict[tuple[str, str | None], CachedAllocation] = {}
    keys = {(item.experiment_id, item.segment) for item in body.assignments}
    for experiment_id, segment in sorted(keys, key=lambda key: (key[0], key[1] or "")):
        allocations[experiment_id, segment] = await cache.get(experiment_id, segment)
    stored = [
        (item.experiment_id, item.unit_id,
         _stored_segment(item.segment, allocations[item.experiment_id, item.segment]))
        for item in body.assignments
    ]  # fmt: skip
    for (experiment_id, _, segment), item in zip(stored, body.assignments, strict=True):
        allocations.setdefault((experiment_id, segment), allocations[experiment_id, item.segment])
    results = await service.assign_batch(
        session, stored, allocations=allocations, rng=_rng(), memo=memo
    )
    return BatchAssignOut(
        assignments=[
            _assign_out(
                result,
                capped=result.new
                and allocations[item.experiment_id, item.segment].segment_state == "capped",
            )
            for result, item in zip(results, body.assignments, strict=True)
        ]
    )


@router.post(
    "/experiments/{experiment_id}/conversions",
    dependencies=[needs(Scope.CLIENT)],
    response_model=ConversionOut,
)
@hot_path(_convert_answer, body=ConversionIn)
async def convert(
    experiment_id: ExperimentId, body: ConversionIn, request: Request
) -> ConversionOut:
    """Credit a conversion to the unit's variant: once per unit (conversion metrics) or
    once per event_id (value metrics). A unit never assigned is a 409."""
    return await convert_unit(runtime_of(request.app), experiment_id, body)


async def convert_unit(state: Runtime, experiment_id: str, body: ConversionIn) -> ConversionOut:
    """The conversion route's answer; also called by the hot path (mabapi/hot_paths.py).
    Written by the process's group-commit writer."""
    cache: AllocationCache = state.allocation_cache
    result = await service.convert(
        state.convert_writer,
        _conversion(experiment_id, body),
        allocation=await cache.get(experiment_id),
        memo=state.conversion_memo,
    )
    return _conversion_out(result)


def _conversion(experiment_id: str, body: ConversionIn) -> service.Conversion:
    return service.Conversion(
        experiment_id, body.unit_id, body.value, body.event_id, body.metric_id
    )


@router.post(
    "/conversions/batch", dependencies=[needs(Scope.CLIENT)], response_model=BatchConversionOut
)
async def convert_batch(
    body: BatchConversionIn, session: SessionDep, principal: PrincipalDep
) -> BatchConversionOut:
    """Up to 1,000 conversions in one transaction: all of them or none."""
    await ingestion.check_experiments(
        session,
        principal=principal,
        experiment_ids={item.experiment_id for item in body.conversions},
    )
    results = await service.convert_batch(
        session, [_conversion(item.experiment_id, item) for item in body.conversions]
    )
    return BatchConversionOut(conversions=[_conversion_out(result) for result in results])


@router.post(
    "/experiments/{experiment_id}/conclude",
    dependencies=[needs(Scope.ADMIN)],
    response_model=ExperimentOut,
)
async def conclude(
    experiment_id: ExperimentId, body: ConcludeIn, session: SessionDep, cache: CacheDep
) -> ExperimentOut:
    """End the test with a winner: from now on every unit is assigned the winner."""
    experiment = await lifecycle.conclude(session, experiment_id=experiment_id, winner=body.winner)
    cache.invalidate(experiment_id)
    return ExperimentOut.model_validate(await lifecycle.require_experiment(session, experiment.id))


@router.post(
    "/experiments/{experiment_id}/reset",
    dependencies=[needs(Scope.ADMIN)],
    response_model=ExperimentOut,
)
async def reset(experiment_id: ExperimentId, session: SessionDep, cache: CacheDep) -> ExperimentOut:
    """Start real-time data over (assignments, live counts, value events); reported daily
    totals are kept. The experiment runs again with no winner."""
    await service.reset(session, experiment_id=experiment_id)
    cache.invalidate(experiment_id)
    return ExperimentOut.model_validate(await lifecycle.require_experiment(session, experiment_id))
