"""HTTP routes of OFREP (`/ofrep/v1`): single and bulk flag evaluation, the provider
configuration. Client scope, like assignment: evaluating a flag is assigning the unit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from mabapi.access.models import Scope
from mabapi.access.service import Principal
from mabapi.assignments.routes import assign_unit
from mabapi.assignments.schemas import AssignIn
from mabapi.db.transactions import background_transaction
from mabapi.deps import ExperimentId, PrincipalDep, needs
from mabapi.errors import ConflictError, NotFoundError, Responses, documented_error
from mabapi.hot_paths import hot_path
from mabapi.ofrep import service
from mabapi.ofrep.schemas import (
    MAX_BULK_FLAGS,
    BulkFailureOut,
    EvaluationFailureOut,
    EvaluationIn,
    EvaluationOut,
    evaluation_json,
)
from mabapi.runtime import Runtime, runtime_of

router = APIRouter(prefix="/ofrep/v1", tags=["openfeature"])

FAILURES: Responses = {
    400: {"model": EvaluationFailureOut, "description": "PARSE_ERROR, TARGETING_KEY_MISSING, "
          "INVALID_CONTEXT or GENERAL"},
    404: {"model": EvaluationFailureOut, "description": "FLAG_NOT_FOUND"},
    429: documented_error("The key's rate limit is reached; retry after Retry-After seconds."),
}  # fmt: skip


async def evaluate(state: Runtime, experiment_id: str, body: EvaluationIn) -> EvaluationOut:
    """One flag for one unit. Also called by the hot path and by bulk evaluation."""
    unit, segment = body.context.targetingKey, body.context.segment
    try:
        allocation = await state.allocation_cache.get(experiment_id, segment)
    except NotFoundError as error:
        raise service.OfrepError(404, "FLAG_NOT_FOUND", error.message, experiment_id) from None
    except ConflictError:  # no active variant to draw from: nothing can be served
        return service.disabled(experiment_id, "no active variant")
    if allocation.winner_variant_id is None and (
        allocation.status != "running" or allocation.archived
    ):
        return service.disabled(
            experiment_id, "archived" if allocation.archived else allocation.status
        )
    try:
        out = await assign_unit(state, experiment_id, AssignIn(unit_id=unit, segment=segment))
    except ConflictError:  # it stopped taking units meanwhile
        return service.disabled(experiment_id, "not running")
    return service.evaluated(
        experiment_id,
        variant_id=out.variant_id,
        probability=out.probability,
        new=out.new,
        concluded=out.concluded,
        algorithm=allocation.algorithm,
        values=dict(zip(allocation.variant_ids, allocation.values, strict=False)),
    )


async def _hot_answer(
    request: Request, _principal: Principal, params: dict[str, str], body: EvaluationIn
) -> EvaluationOut:
    return await evaluate(runtime_of(request.app), params["experiment_id"], body)


@router.post(
    "/evaluate/flags/{experiment_id}",
    dependencies=[needs(Scope.CLIENT)],
    response_model=EvaluationOut,
    response_model_exclude_none=False,
    responses=FAILURES,
    summary="OFREP single flag evaluation",
)
@hot_path(_hot_answer, body=EvaluationIn)
async def evaluate_flag(
    experiment_id: ExperimentId, body: EvaluationIn, request: Request
) -> EvaluationOut:
    """Evaluate one flag (the experiment `experiment_id`, OFREP's `key`) for
    `context.targetingKey` (the unit): the unit's variant, sticky, counted once per unit,
    exactly as POST /experiments/{id}/assign. reason: SPLIT (a bandit draw), STATIC (a
    concluded experiment's winner), DISABLED (draft, paused, stopped without a winner or
    archived: no value, the code's default applies, nothing is assigned)."""
    return await evaluate(runtime_of(request.app), experiment_id, body)


@router.post(
    "/evaluate/flags",
    dependencies=[needs(Scope.CLIENT)],
    responses={200: {"description": "`{\"flags\": [...]}` with an ETag"},
               304: {"description": "Not modified (If-None-Match)"},
               400: {"model": BulkFailureOut, "description": "PARSE_ERROR, "
                     "TARGETING_KEY_MISSING or INVALID_CONTEXT"}, 429: FAILURES[429]},
    summary="OFREP bulk flag evaluation",
)  # fmt: skip
async def evaluate_flags(
    body: EvaluationIn,
    request: Request,
    principal: PrincipalDep,
    if_none_match: str | None = Header(default=None, max_length=1000),
) -> Response:
    """Evaluate several flags for one unit: those `context.flags` names (a list or a
    comma-separated string), else the project's experiments that opt in
    (`settings.openfeature.bulk`), at most 100. Each evaluated flag assigns the unit to
    that experiment (sticky, counted once). Answers an ETag; with a matching
    If-None-Match, 304."""
    state = runtime_of(request.app)
    named = service.flags_of(body.context)
    if named is None:
        async with background_transaction(state.sessionmaker) as session:
            keys = await service.bulk_flags(session, principal.project_id)
    else:
        keys = named[:MAX_BULK_FLAGS]
    flags: list[dict[str, Any]] = []
    for key in keys:
        owner, _ = await state.owners.owner(key)
        if owner is None or (principal.project_id is not None and owner != principal.project_id):
            flags.append({"key": key, "errorCode": "FLAG_NOT_FOUND",
                          "errorDetails": f"no flag {key!r} (no such experiment)"})  # fmt: skip
            continue
        try:
            flags.append(evaluation_json(await evaluate(state, key, body)))
        except service.OfrepError as error:
            flags.append({"key": key, "errorCode": error.error_code, "errorDetails": error.message})
    tag = service.etag(flags)
    if service.matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    return JSONResponse({"flags": flags}, headers={"ETag": tag})


@router.get("/configuration", dependencies=[needs(Scope.CLIENT)], summary="OFREP configuration")
async def configuration() -> dict[str, Any]:
    """What an OFREP provider may ask: no polling for changes (a unit's variant is sticky),
    every value type."""
    return {
        "name": "mabapi",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": False}},
            "flagEvaluation": {"supportedTypes": ["string", "boolean", "int", "float", "object"]},
        },
    }
