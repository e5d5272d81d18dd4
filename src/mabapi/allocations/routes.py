"""HTTP routes of allocations: the traffic split for a day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter

from mabapi.access.models import Scope
from mabapi.access.service import Principal
from mabapi.allocations import late_conversions
from mabapi.allocations import service as allocation_service
from mabapi.allocations.cache import AnswerCache
from mabapi.allocations.schemas import AllocationOut, DelayCurveOut
from mabapi.allocations.state import read_states
from mabapi.db.transactions import background_transaction
from mabapi.deps import (
    CONFLICT,
    INVALID,
    NOT_FOUND,
    UNAVAILABLE,
    ExperimentId,
    PrincipalDep,
    SegmentQuery,
    needs,
)
from mabapi.guardrails.schemas import BreachOut
from mabapi.hot_paths import hot_path
from mabapi.observability import observe_allocation
from mabapi.runtime import Runtime, runtime_of
from mabapi.schemas import IsoDate
from mabapi.settings import Settings

allocations_router = APIRouter(tags=["allocations"], responses={**UNAVAILABLE})


async def _allocation_answer(
    request: Request, principal: Principal, params: dict[str, str], for_date: date | None
) -> AllocationOut:
    return await allocation_answer(
        runtime_of(request.app), params["experiment_id"], for_date, record=principal.may_write
    )


@allocations_router.get(
    "/allocations/{experiment_id}",
    dependencies=[needs(Scope.READ)],
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
    """GET /allocations' answer; also called by the hot path (mabapi/hot_paths.py).

    `record`: store the answer as an allocation snapshot (the audit trail, the served
    history): for the callers that serve traffic with it (write keys, open instances),
    not for read keys, whose every distinct date asked about would add a row."""
    day = for_date or datetime.now(UTC).date()
    answers: AnswerCache[Any, Any] = state.answers
    settings: Settings = state.settings

    async def compute() -> allocation_service.Allocation:
        # Its own transaction: the cache may run this after the request has ended. The
        # split live assignment draws from (`live`, data before tomorrow) is read in the
        # same read when no process entry has it: the experiment, its curve and its
        # guardrail check once for both answers (one state when the day is tomorrow).
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        live = segment is None and not state.allocation_cache.holds(experiment_id)
        days = (day,) if not live or day == tomorrow else (day, tomorrow)
        async with background_transaction(state.sessionmaker) as session:
            read = await read_states(
                session,
                experiment_id=experiment_id,
                days=days,
                segment=segment,
                fits=state.segment_fits,
            )
            computed = allocation_service.decide(read[0])
            if record and read[0].segment is None:
                await allocation_service.record_snapshot(session, read[0], computed)
            if live:  # tomorrow's state, and its answer if that is the plan's
                await state.allocation_cache.get_within(
                    session, experiment_id, read[-1], computed if len(read) == 1 else None
                )
        observe_allocation(
            experiment_id,
            computed.variant_ids,
            computed.shares,
            cap=settings.metrics_max_experiments,
        )
        return computed

    key = ("allocation", experiment_id, day, record, segment)
    result = await answers.get(key, compute)
    live = await state.allocation_cache.get(experiment_id, segment)
    built = _BUILT.get(key)
    if built is not None and built[0] is result and built[1] is live:
        return built[2]  # the same two cached answers: the same response
    out = _allocation_out(result, live.live_percentages)
    if len(_BUILT) >= _BUILT_CAPACITY:
        _BUILT.clear()
    _BUILT[key] = (result, live, out)
    return out


# The last response built per (experiment, day, record, segment), with the two cached
# answers it was built from (held, and compared by identity): building the response
# model is most of a warm GET's own work, and under load most GETs repeat the last one.
_BUILT: dict[tuple[Any, ...], tuple[Any, Any, AllocationOut]] = {}
_BUILT_CAPACITY = 4096


def _allocation_out(result: allocation_service.Allocation, live: dict[str, float]) -> AllocationOut:
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
        live=live,
        guardrails={v: BreachOut.model_validate(b) for v, b in result.guardrails.items()},
        segment=result.segment,
        delay_curve=delay_curve_out(result.delay_curve),
    )


def delay_curve_out(choice: late_conversions.CurveChoice | None) -> DelayCurveOut | None:
    if choice is None:
        return None
    cdf = None if choice.curve is None else [float(x) for x in choice.curve.cdf]
    return DelayCurveOut(source=choice.source, days=choice.days, cdf=cdf, note=choice.note)


def _inputs_out(totals: allocation_service.Totals) -> dict[str, int | float]:
    def number(value: float) -> int | float:
        return int(value) if float(value).is_integer() else float(value)

    out = {"impressions": number(totals.impressions), "successes": number(totals.successes)}
    if totals.value_sum or totals.value_sum_squares:
        out["value_sum"] = totals.value_sum
        out["value_sum_squares"] = totals.value_sum_squares
    return out
