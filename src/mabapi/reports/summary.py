"""How sure, and the story so far: the summary (intervals, P(best), stop advice, sample
ratio) and the day-by-day history. Reads only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import late_conversions, segments
from mabapi.allocations import repository as snapshots
from mabapi.allocations.state import AllocationState, read_state
from mabapi.db.base import utcnow
from mabapi.errors import NotFoundError
from mabapi.experiments import repository
from mabapi.experiments import segment_repository as segment_registry
from mabapi.experiments.models import (
    Experiment,
    MetricKind,
    Variant,
)
from mabapi.guardrails import service as guardrails
from mabapi.stats import decision
from mabapi.stats import sample_ratio as ratio_checks
from mabapi.stats.posterior import (
    Posterior,
)

CREDIBLE_MASS = 0.95


@dataclass(frozen=True, slots=True)
class VariantStatistics:
    variant: Variant
    totals: repository.VariantTotals
    posterior: Posterior
    credible_interval: tuple[float, float]
    probability_best: float
    expected_loss: float
    probability_beats_control: float | None
    uplift: decision.Interval | None
    stratified: decision.StratifiedEstimate
    # Impressions whose conversions should have been reported by now (late conversions);
    # the impressions themselves unless conversion_delay_days is set.
    effective_impressions: float


@dataclass(frozen=True, slots=True)
class Summary:
    experiment: Experiment
    variants: list[VariantStatistics]
    days_of_data: int
    value_remaining: float
    recommendation: decision.Recommendation
    gain: decision.Interval
    sample_ratio: ratio_checks.SampleRatioCheck | None
    stop_rule: decision.StopRule
    seed: int
    draws: int
    guardrails: list[guardrails.GuardrailReport] = field(default_factory=list)
    segment: str | None = None
    # Per variant (as `variants`), the units mabapi's allocation served: what `gain`
    # compares with an even split (imported history no allocation was served for is not).
    served_units: list[int] = field(default_factory=list)
    # About how many more days to advice other than "continue" (0: advice is here; None:
    # not within a year at today's traffic, or a person must act first).
    days_to_decision: int | None = 0
    # The variant the recommendation names (its `winner` indexes the decision's variants:
    # the active ones a guardrail has not stopped).
    winner_id: str | None = None
    delay_curve: late_conversions.CurveChoice | None = None
    # The state everything above derives from (what the live split rests on).
    state: AllocationState | None = None


async def summarize(
    session: AsyncSession,
    *,
    experiment_id: str,
    segment: str | None = None,
    fits: segments.SegmentFits | None = None,
) -> Summary:
    """Everything about how sure we are, over the data so far (dated up to today), of one
    segment if given: its totals and its own daily rows; no sample-ratio check, which is
    of all traffic.

    Derived from the experiment's state for tomorrow (`allocations.state.read_state`),
    the one the live split assignment draws from: the same posteriors (after forgetting
    and late conversions), the same variants traffic can reach (a variant a guardrail
    stopped is never advised), the same delay curve. What only a report shows (the sums
    as posted, the daily rows, the guardrail reports, the served units) is read beside it
    in the same transaction."""
    today = utcnow().date()
    state = await read_state(
        session,
        experiment_id=experiment_id,
        for_date=today + timedelta(days=1),
        segment=segment,
        fits=fits,
        report=True,
    )
    experiment = state.experiment
    settings = state.settings
    variants = list(experiment.variants)
    posteriors = [arm.posterior for arm in state.arms]
    counted = list(state.inputs)
    if segment is not None:
        inputs, effective, rows = await _segment_view(session, state, segment, fits)
        counted = counted if state.segment == segment else effective
        days_of_data = len({row.date for row in rows if row.impressions > 0})
    else:
        inputs = list(state.posted)
        days_of_data = state.days_of_data
        rows = await repository.daily_rows(session, experiment_id, before=state.for_date)
    rule = decision.StopRule(
        settings.stop_rule.probability_threshold,
        settings.stop_rule.value_remaining_threshold,
        settings.stop_rule.min_days,
        settings.stop_rule.equivalence_margin,
        settings.stop_rule.ship_loss_threshold,
    )
    # Every day so far, today's included, as the rest of the summary; the breach that
    # applies to each variant is the state's (what the allocation obeys).
    guardrail_reports = await guardrails.report(
        session,
        experiment,
        day=state.for_date,
        breach_day=guardrails.check_day(today),
        found=state.breaches,
    )
    # Decisions are among the variants traffic can reach: the state's active ones (not
    # paused, not stopped by a guardrail), as in the allocation.
    active = [i for i, on in enumerate(state.active) if on]
    control_positions = [k for k, i in enumerate(active) if variants[i].is_control]
    names = [variants[i].id for i in active]
    stratified = _stratified(state.kind, variants, rows)
    empty_decision = not active
    outcome = (
        None
        if empty_decision
        else decision.decide(
            [posteriors[i] for i in active],
            names=names,
            control=control_positions[0] if control_positions else None,
            days_of_data=days_of_data,
            rule=rule,
            higher_is_better=experiment.higher_is_better,
        )
    )
    stats: list[VariantStatistics] = []
    for i, variant in enumerate(variants):
        position = active.index(i) if i in active else None
        stats.append(
            VariantStatistics(
                variant=variant,
                totals=inputs[i],
                posterior=posteriors[i],
                credible_interval=posteriors[i].credible_interval(CREDIBLE_MASS),
                probability_best=(
                    float(outcome.probability_best[position])
                    if outcome is not None and position is not None
                    else 0.0
                ),
                expected_loss=(
                    float(outcome.expected_loss[position])
                    if outcome is not None and position is not None
                    else float("nan")
                ),
                probability_beats_control=_beats(outcome, position),
                uplift=outcome.uplift[position]
                if outcome is not None and position is not None
                else None,
                stratified=stratified[i],
                effective_impressions=float(counted[i].impressions),
            )
        )
    # What the bandit earned: over the units its allocation served (all of a segment's,
    # whose splits are not recorded day by day).
    served = (
        {variants[i].id: int(inputs[i].impressions) for i in range(len(variants))}
        if segment is not None
        else await snapshots.served_units(session, experiment_id)
    )
    served_units = [served.get(variant.id, 0) for variant in variants]
    gain = decision.gain_over_even_split(
        [posteriors[i] for i in active],
        np.array([float(served_units[i]) for i in active]),
        higher_is_better=experiment.higher_is_better,
    )
    recommendation = (
        outcome.recommendation
        if outcome is not None
        else decision.Recommendation(
            decision.Action.CONTINUE, None, "continue: no variant traffic can reach"
        )
    )
    days_ahead: int | None = 0
    if recommendation.winner is not None:
        leader = names[recommendation.winner]
        if state.floored[state.variant_ids.index(leader)]:  # it still gets some traffic
            recommendation = decision.Recommendation(
                decision.Action.CONTINUE,
                None,
                f"continue: the leader {leader} breached a guardrail (held at the floor); "
                "do not ship it: clear the breach if it was wrong, or stop it",
            )
            days_ahead = None  # a person decides this one, not more data
    if recommendation.action is decision.Action.CONTINUE and days_ahead == 0:
        days_ahead = (
            None
            if outcome is None
            else decision.days_to_decision(
                [posteriors[i] for i in active],
                np.array([float(counted[i].impressions) for i in active]),
                _recent_traffic([variants[i].id for i in active], rows),
                days_of_data=days_of_data,
                rule=rule,
                higher_is_better=experiment.higher_is_better,
            )
        )
        recommendation = decision.Recommendation(
            recommendation.action,
            recommendation.winner,
            recommendation.reason + _forecast_words(days_ahead),
        )
    return Summary(
        experiment=experiment,
        variants=stats,
        days_of_data=days_of_data,
        value_remaining=outcome.value_remaining if outcome is not None else float("nan"),
        recommendation=recommendation,
        gain=gain,
        served_units=served_units,
        sample_ratio=(
            None
            if segment is not None
            else await _sample_ratio(session, experiment_id, variants, rows)
        ),
        stop_rule=rule,
        seed=decision.DEFAULT_SEED,
        draws=decision.DEFAULT_DRAWS,
        guardrails=guardrail_reports,
        segment=segment,
        days_to_decision=days_ahead,
        delay_curve=state.delay_curve,
        state=state,
        winner_id=None if recommendation.winner is None else names[recommendation.winner],
    )


# Days of data "today's traffic" is averaged over.
RECENT_DAYS = 7


def _recent_traffic(variant_ids: Sequence[str], rows: Sequence[repository.DailyRow]) -> Any:
    """Units per day of each variant over the last RECENT_DAYS days with data."""
    dates = sorted({row.date for row in rows if row.impressions > 0})[-RECENT_DAYS:]
    recent = set(dates)
    per_variant = dict.fromkeys(variant_ids, 0.0)
    for row in rows:
        if row.date in recent and row.variant_id in per_variant:
            per_variant[row.variant_id] += row.impressions
    days = max(len(dates), 1)
    return np.array([per_variant[v] / days for v in variant_ids])


def _forecast_words(days_ahead: int | None) -> str:
    if days_ahead is None:
        return "; no decision in sight within a year at today's traffic"
    return f"; about {days_ahead} more day{'s' if days_ahead != 1 else ''} at today's traffic"


async def segment_fit(
    session: AsyncSession, state: AllocationState, fits: segments.SegmentFits | None
) -> tuple[segments.SegmentCounts, segments.SegmentCounts, Any]:
    """Every segment's counts before the state's day: as posted, and as the state counts
    them (`segment_days`: forgetting, late conversions), with the pooled posteriors of
    the latter (from `fits` when it has them): what each segment's split uses."""
    variant_ids = list(state.variant_ids)
    pooling = state.settings.segments.pooling
    found, by_variant = await segments.fitted(
        session, state.experiment_id, variant_ids, before=state.for_date, pooling=pooling,
        kind=state.kind, fits=fits,
    )  # fmt: skip
    if state.segment_days is None:
        return found, found, by_variant
    counted, by_variant = await segments.fitted(
        session, state.experiment_id, variant_ids, before=state.for_date, pooling=pooling,
        kind=state.kind, adjust=state.segment_days, fits=fits,
    )  # fmt: skip
    return found, counted, by_variant


async def _segment_view(
    session: AsyncSession,
    state: AllocationState,
    segment: str,
    fits: segments.SegmentFits | None = None,
) -> tuple[
    list[repository.VariantTotals], list[repository.VariantTotals], list[repository.DailyRow]
]:
    """One segment's totals (as posted, and as counted with late conversions) and daily
    rows (404 if never seen). Its posteriors are the state's: the segment's under partial
    or no pooling, all traffic's under full pooling (what its allocation uses)."""
    experiment = state.experiment
    if not await segment_registry.known(session, experiment.id, segment):
        raise NotFoundError(
            f"experiment {experiment.id!r} has no data for segment {segment!r}; "
            "GET /experiments/{id}/segments lists its segments"
        )
    found, counted, _ = await segment_fit(session, state, fits)
    row = found.index(segment)
    if row is None:
        raise NotFoundError(
            f"experiment {experiment.id!r} has no data for segment {segment!r} yet; "
            "GET /experiments/{id}/segments lists its segments"
        )
    inputs, effective = (
        [
            repository.VariantTotals(int(n), int(s), v, q)
            for n, s, v, q in segments.totals_of(counts, row, len(state.variant_ids))
        ]
        for counts in (found, counted)
    )
    rows = [
        repository.DailyRow(v, d, int(n), int(s), x, q)
        for v, d, n, s, x, q in await segments.daily(session, experiment.id, segment)
        if d < state.for_date
    ]
    return inputs, effective, rows


def _beats(outcome: decision.Decision | None, position: int | None) -> float | None:
    if outcome is None or position is None or outcome.probability_beats_control is None:
        return None
    value = float(outcome.probability_beats_control[position])
    return None if np.isnan(value) else value


def _period_arrays(
    variants: Sequence[Variant], rows: Sequence[repository.DailyRow]
) -> tuple[list[date], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    dates = sorted({row.date for row in rows})
    column = {day: k for k, day in enumerate(dates)}
    row_of = {variant.id: i for i, variant in enumerate(variants)}
    shape = (len(variants), len(dates))
    units, successes, sums, squares = (np.zeros(shape) for _ in range(4))
    for row in rows:
        if row.variant_id in row_of:
            i, k = row_of[row.variant_id], column[row.date]
            units[i, k] = row.impressions
            successes[i, k] = row.successes
            sums[i, k] = row.value_sum
            squares[i, k] = row.value_sum_squares
    return dates, units, successes, sums, squares


def _stratified(
    kind: MetricKind, variants: Sequence[Variant], rows: Sequence[repository.DailyRow]
) -> list[decision.StratifiedEstimate]:
    _, units, successes, sums, squares = _period_arrays(variants, rows)
    if kind is MetricKind.VALUE:
        return decision.stratified_means(units, sums, squares)
    return decision.stratified_means(units, successes)


async def _sample_ratio(
    session: AsyncSession,
    experiment_id: str,
    variants: Sequence[Variant],
    rows: Sequence[repository.DailyRow],
) -> ratio_checks.SampleRatioCheck | None:
    """SRM of real-time units against the propensities stored with them (Horvitz-Thompson;
    the split moves within a day, and browser keys record no allocation); of reported
    daily rows against the allocations served, on days that have one."""
    live = await snapshots.propensity_sums(session, experiment_id)
    if live:
        sums = np.array([live.get(variant.id, (0.0, 0.0, 0.0, 0.0)) for variant in variants])
        return ratio_checks.propensity_ratio_check(sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3])
    served = await snapshots.served_allocations(session, experiment_id)
    dates, units, _, _, _ = _period_arrays(variants, rows)
    keep = [k for k, day in enumerate(dates) if day in served]
    if not keep:
        return None
    shares = np.array(
        [[served[dates[k]].get(variant.id, 0.0) / 100.0 for k in keep] for variant in variants]
    )
    return ratio_checks.sample_ratio_mismatch(units[:, keep], shares)
