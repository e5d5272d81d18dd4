"""HTTP routes of guardrails: clearing a breach."""

from __future__ import annotations

from fastapi import APIRouter

from mabapi.access.models import Scope
from mabapi.deps import (
    INVALID,
    NOT_FOUND,
    UNAVAILABLE,
    ExperimentId,
    SessionDep,
    needs,
)
from mabapi.guardrails import service as guardrail_service
from mabapi.guardrails.schemas import ClearedOut

router = APIRouter(
    prefix="/experiments", tags=["experiments"], responses={**INVALID, **UNAVAILABLE}
)


@router.post(
    "/{experiment_id}/guardrails/{metric_id}/clear",
    dependencies=[needs(Scope.ADMIN)],
    response_model=ClearedOut,
    responses=NOT_FOUND,
)
async def clear_guardrail(
    experiment_id: ExperimentId, metric_id: ExperimentId, session: SessionDep
) -> ClearedOut:
    """Clear a guardrail's breaches: the variants it stopped or floored get traffic again
    (the breaches stay on record). A later check may breach again."""
    cleared = await guardrail_service.clear_guardrail(
        session, experiment_id=experiment_id, metric_id=metric_id
    )
    return ClearedOut(experiment_id=experiment_id, metric_id=metric_id, cleared=cleared)
