"""HTTP routes of reports: the summary and the segments listing."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query, Request

from mabapi.access.models import Scope
from mabapi.allocations.routes import delay_curve_out
from mabapi.deps import (
    INVALID,
    NOT_FOUND,
    UNAVAILABLE,
    ExperimentId,
    ReadSessionDep,
    SegmentQuery,
    needs,
)
from mabapi.experiments import lifecycle
from mabapi.experiments.models import MetricKind
from mabapi.guardrails import service as guardrail_service
from mabapi.guardrails.schemas import BreachOut
from mabapi.reports import segments as segment_listing
from mabapi.reports import summary as summaries
from mabapi.reports.schemas import (
    CredibleInterval,
    GainOut,
    GuardrailSummaryOut,
    GuardrailVariantOut,
    RecommendationOut,
    SampleRatioOut,
    SegmentOut,
    SegmentsOut,
    StratifiedOut,
    SummaryOut,
    UpliftOut,
    VariantSummary,
)
from mabapi.runtime import runtime_of
from mabapi.schemas import Identifier

router = APIRouter(
    prefix="/experiments", tags=["experiments"], responses={**INVALID, **UNAVAILABLE}
)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


SEGMENT_PAGE = 100
MAX_SEGMENT_PAGE = 1000


@router.get(
    "/{experiment_id}/segments",
    dependencies=[needs(Scope.READ)],
    response_model=SegmentsOut,
    responses={**NOT_FOUND, **INVALID},
)
async def get_segments(
    experiment_id: ExperimentId,
    session: ReadSessionDep,
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
    page = await segment_listing.list_segments(
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


@router.get(
    "/{experiment_id}/summary",
    dependencies=[needs(Scope.READ)],
    response_model=SummaryOut,
    responses=NOT_FOUND,
)
async def get_summary(
    experiment_id: ExperimentId,
    session: ReadSessionDep,
    request: Request,
    segment: SegmentQuery = None,
) -> SummaryOut:
    """Per variant, over the data so far (what the live split counts): totals, posterior,
    95% interval, probability to be best, expected loss, uplift and probability to beat
    the control, period-stratified means;
    then value remaining, the recommendation, the gain over an even split and an SRM check.
    With `segment`: that segment's (its posteriors are those its allocation uses; no SRM
    check; 404 for a segment never seen).
    """
    fits = runtime_of(request.app).segment_fits
    return summary_out(
        await summaries.summarize(session, experiment_id=experiment_id, segment=segment, fits=fits)
    )


def summary_out(summary: summaries.Summary) -> SummaryOut:
    """The summary as the API answers it (the dashboard shows exactly these numbers)."""
    experiment = summary.experiment
    settings = lifecycle.experiment_settings(experiment)
    kind = MetricKind(experiment.metric_kind)
    mass = summaries.CREDIBLE_MASS
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


def _guardrail_out(report: guardrail_service.GuardrailReport) -> GuardrailSummaryOut:
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
                        mass=summaries.CREDIBLE_MASS,
                    )
                ),
                probability_harm=item.probability_harm,
                breach=None
                if item.breach is None
                else BreachOut.model_validate(guardrail_service.breach_view(item.breach)),
            )
            for item in report.variants
        ],
    )


def _variant_summary(item: summaries.VariantStatistics, kind: MetricKind) -> VariantSummary:
    totals = item.totals
    mass = summaries.CREDIBLE_MASS
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
