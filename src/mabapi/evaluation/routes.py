"""HTTP route of off-policy evaluation."""

from __future__ import annotations

import math

from fastapi import APIRouter

from mabapi.access.models import Scope
from mabapi.deps import CONFLICT, INVALID, NOT_FOUND, UNAVAILABLE, ExperimentId, SessionDep, needs
from mabapi.evaluation import service
from mabapi.evaluation.schemas import (
    DiagnosticsOut,
    EstimateOut,
    EvaluateIn,
    EvaluationOut,
    LoggedOut,
)
from mabapi.experiments.models import MetricKind
from mabapi.stats.off_policy import Estimate

router = APIRouter(
    prefix="/experiments", tags=["experiments"], responses={**INVALID, **UNAVAILABLE}
)

ASSUMPTIONS = (
    "Real-time units: each unit's variant was drawn with the probability stored with it.",
    "Reported daily rows: each day's units were split by the allocation served for that "
    "day (days without one: by the shares observed that day).",
    "What a variant earns does not depend on which policy served it (no interference), "
    "and the rates the data show are those the policy would have met.",
)


def _estimate(estimate: Estimate | None) -> EstimateOut | None:
    if estimate is None:
        return None
    return EstimateOut(
        value=estimate.value,
        interval=(estimate.low, estimate.high),
        standard_error=estimate.standard_error,
    )


@router.post(
    "/{experiment_id}/evaluate",
    dependencies=[needs(Scope.READ)],
    response_model=EvaluationOut,
    responses={**NOT_FOUND, **CONFLICT},
)
async def evaluate(
    experiment_id: ExperimentId, body: EvaluateIn, session: SessionDep
) -> EvaluationOut:
    """What another allocation would have earned per unit on the units logged so far
    (off-policy evaluation): the chosen estimator's value and 95% interval, every
    estimator's, what was actually earned, and the diagnostics that say whether to trust
    it. 409 when nothing was logged in the range; 422 for a policy that names a
    variant the experiment does not have or does not add up to 1."""
    answer = await service.evaluate(session, experiment_id, body)
    result = answer.evaluation
    d = result.diagnostics
    chosen = result.estimates[body.estimator]
    return EvaluationOut(
        experiment_id=experiment_id,
        metric=answer.kind.value,
        estimator=body.estimator,
        value=None if chosen is None else chosen.value,
        interval=None if chosen is None else (chosen.low, chosen.high),
        trustworthy=answer.trustworthy and chosen is not None,
        reasons=answer.reasons
        + ([result.refused[body.estimator]] if body.estimator in result.refused else []),
        estimates={name: _estimate(e) for name, e in result.estimates.items()},
        refused=result.refused,
        logged=LoggedOut(
            value=result.logged,
            units=answer.real_time_units + answer.reported_units,
            real_time_units=answer.real_time_units,
            reported_units=answer.reported_units,
        ),
        diagnostics=DiagnosticsOut(
            effective_sample_size=d.effective_sample_size,
            max_weight=d.max_weight,
            mean_weight=d.mean_weight,
            clipped_weight_share=d.clipped_weight_share,
            switch_threshold=d.switch_threshold if math.isfinite(d.switch_threshold) else None,
            unsupported=list(d.unsupported),
            unsupported_share=d.unsupported_share,
            least_conversions=d.least_rewarded,
            days_without_served_allocation=answer.days_without_served_allocation,
        ),
        assumptions=list(ASSUMPTIONS)
        + (
            ["Value metric: a unit's reward is its summed value (0 without one)."]
            if answer.kind is MetricKind.VALUE
            else []
        ),
    )
