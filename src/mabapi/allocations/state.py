"""One experiment's state for a day: every read an allocation or a summary rests on,
in the caller's transaction, into one immutable `AllocationState` (the sums each
posterior is built from, after forgetting and late conversions, the guardrail status,
the delay curve used, the last served shares). The allocation (`service.decide`), the
summary, the dashboard, the segments listing and the watcher all derive from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import late_conversions, segments
from mabapi.allocations import repository as snapshots
from mabapi.db.base import utcnow
from mabapi.experiments import repository
from mabapi.experiments import segment_repository as segment_registry
from mabapi.experiments.lifecycle import experiment_settings, require_experiment
from mabapi.experiments.models import Experiment, GuardrailBreach, MetricKind, Variant
from mabapi.experiments.schemas import ExperimentSettings, PriorSettings
from mabapi.guardrails import service as guardrails
from mabapi.stats.history import Forgetting, segment_start
from mabapi.stats.policies import ArmData, BurnIn, Controls
from mabapi.stats.posterior import BetaPrior, NormalInverseGammaPrior, Posterior
from mabapi.stats.sums import posterior_of

Totals = repository.VariantTotals
EMPTY = Totals(0, 0)


def posterior(
    kind: MetricKind, prior: PriorSettings, totals: repository.VariantTotals
) -> Posterior:
    """The experiment's posterior of a variant, under its prior settings."""
    return posterior_of(
        totals,
        values=kind is MetricKind.VALUE,
        beta_prior=BetaPrior(prior.alpha, prior.beta),
        value_prior=NormalInverseGammaPrior(prior.mu, prior.kappa, prior.alpha, prior.beta),
    )


def observed_mean(kind: MetricKind, totals: repository.VariantTotals) -> float:
    if not totals.impressions:
        return 0.0
    value = totals.value_sum if kind is MetricKind.VALUE else totals.successes
    return value / totals.impressions


def _weighted_totals(
    rows: Sequence[repository.DailyRow], for_date: date, forgetting: Forgetting
) -> dict[str, repository.VariantTotals]:
    """Totals with old days down-weighted (window and/or half-life). Counts become
    fractional pseudo-counts, as in discounted Thompson sampling."""
    sums: dict[str, list[float]] = {}
    if not rows:
        return {}
    ages = np.array([(for_date - row.date).days for row in rows], dtype=np.float64)
    weights = forgetting.weights(ages)
    for row, weight in zip(rows, weights, strict=True):
        acc = sums.setdefault(row.variant_id, [0.0, 0.0, 0.0, 0.0])
        acc[0] += weight * row.impressions
        acc[1] += weight * row.successes
        acc[2] += weight * row.value_sum
        acc[3] += weight * row.value_sum_squares
    return {
        variant: repository.VariantTotals(
            impressions=acc[0],
            successes=acc[1],
            value_sum=acc[2],
            value_sum_squares=acc[3],
        )
        for variant, acc in sums.items()
    }


def _controls(settings: ExperimentSettings, variants: Sequence[Variant]) -> Controls:
    index = {variant.id: i for i, variant in enumerate(variants)}
    policy = settings.policy
    return Controls(
        floor=policy.floor,
        exploration=policy.exploration,
        reserved={index[v]: share for v, share in policy.reserved.items() if v in index},
        burn_in=BurnIn(policy.burn_in.units, policy.burn_in.successes, policy.burn_in.days),
        max_change=policy.max_change,
    )


# How far back the change-point test looks (and so the most data auto-forgetting keeps).
AUTO_FORGETTING_DAYS = 365


def _since_last_change(
    rows: Sequence[repository.DailyRow], variant_ids: Sequence[str]
) -> list[repository.DailyRow]:
    """The rows from the first day of the current stationary segment on
    (`stats.history.segment_start`, over every day from the first row to the last)."""
    if not rows:
        return []
    first = rows[0].date
    days = (rows[-1].date - first).days + 1
    column = {variant: i for i, variant in enumerate(variant_ids)}
    units = np.zeros((days, len(variant_ids)))
    successes = np.zeros_like(units)
    for row in rows:
        if row.variant_id in column:
            units[(row.date - first).days, column[row.variant_id]] += row.impressions
            successes[(row.date - first).days, column[row.variant_id]] += row.successes
    start = first + timedelta(days=segment_start(units, successes))
    return [row for row in rows if row.date >= start]


def _days_before(day: date, days: int) -> date:
    """`day - days`, or the first representable date for a window that reaches past year
    1 (a long half-life planned near year 1 overflowed: a 500)."""
    return date.fromordinal(max(1, day.toordinal() - days))


@dataclass(frozen=True, slots=True)
class AllocationState:
    """Everything one allocation decision or summary reads, read in one transaction
    (`read_state`) and never changed after: `service.decide` derives the shares from it
    alone, `reports.summary` its posteriors, active set and guardrail status."""

    experiment: Experiment  # the row as read (with its variants); never written through
    experiment_id: str
    for_date: date
    variant_ids: tuple[str, ...]
    settings: ExperimentSettings
    kind: MetricKind
    higher_is_better: bool
    controls: Controls
    inputs: tuple[repository.VariantTotals, ...]  # the sums each posterior is built from
    # All traffic's sums as posted (before forgetting and late conversions); all zero
    # for an allocation under forgetting, which does not read them (`report` does).
    posted: tuple[repository.VariantTotals, ...]
    arms: tuple[ArmData, ...]
    active: tuple[bool, ...]  # not paused, and not stopped by a guardrail
    floored: tuple[bool, ...]  # held at the floor by a guardrail
    days_of_data: int  # days with data (up to the burn-in's days only, unless `report`)
    previous: tuple[float, ...] | None  # the last served shares, for max_change
    # Breached variants: metric_id, probability_harm, action, since (guardrails.breach_view).
    guardrails: dict[str, dict[str, Any]]
    # Every breach found (recorded, or found by the check and not recorded yet), per
    # guardrail and variant: the summary's guardrail reports show these.
    breaches: tuple[GuardrailBreach, ...]
    segment: str | None  # the segment answered for (None: all traffic)
    delay_curve: late_conversions.CurveChoice
    # How each segment's days are counted for this state (forgetting weights, late
    # conversions); None: as posted. The segment listing and summaries fit with it.
    segment_days: segments.DayAdjustment | None


async def read_state(
    session: AsyncSession,
    *,
    experiment_id: str,
    for_date: date,
    segment: str | None = None,
    fits: segments.SegmentFits | None = None,
    report: bool = False,
) -> AllocationState:
    """The data an allocation for `for_date` rests on (data dated strictly before it),
    with the experiment's settings, guardrail status and served history: reads only.
    `report`: also what a report shows: every day with data counted (the summary's stop
    rule needs them; the allocation only its burn-in's) and the sums as posted."""
    (state,) = await read_states(
        session,
        experiment_id=experiment_id,
        days=(for_date,),
        segment=segment,
        fits=fits,
        report=report,
    )
    return state


async def read_states(
    session: AsyncSession,
    *,
    experiment_id: str,
    days: Sequence[date],
    segment: str | None = None,
    fits: segments.SegmentFits | None = None,
    report: bool = False,
) -> tuple[AllocationState, ...]:
    """`read_state` for each of `days`, sharing what does not depend on the day: the
    experiment, its delay curve, the segment lookup and each guardrail check day's
    breaches are read once (GET /allocations' plan and `live` are two days)."""
    experiment = await require_experiment(session, experiment_id)
    settings = experiment_settings(experiment)
    today = utcnow().date()
    curve_choice = await late_conversions.choose_curve(
        session, experiment_id, settings.policy, today
    )
    known = (
        segment is not None
        and settings.segments.pooling != "full"
        # A segment never registered is answered over all traffic without a fit.
        and await segment_registry.known(session, experiment_id, segment)
    )
    found: dict[date, tuple[GuardrailBreach, ...]] = {}
    states = []
    for for_date in days:
        check = guardrails.check_day(today, for_date)
        if check not in found:
            found[check] = tuple(await guardrails.breaches(session, experiment, day=check))
        states.append(
            await _read_day(
                session,
                experiment,
                for_date,
                settings=settings,
                today=today,
                curve_choice=curve_choice,
                segment=segment if known else None,
                fits=fits,
                report=report,
                every_breach=found[check],
            )
        )
    return tuple(states)


async def _read_day(
    session: AsyncSession,
    experiment: Experiment,
    for_date: date,
    *,
    settings: ExperimentSettings,
    today: date,
    curve_choice: late_conversions.CurveChoice,
    segment: str | None,
    fits: segments.SegmentFits | None,
    report: bool,
    every_breach: tuple[GuardrailBreach, ...],
) -> AllocationState:
    """One day's state; `segment` is one the registry knows (None: all traffic)."""
    experiment_id = experiment.id
    variants = list(experiment.variants)
    kind = MetricKind(experiment.metric_kind)
    policy = settings.policy
    forgetting = Forgetting(
        policy.window_days, policy.half_life_days, auto=policy.forgetting == "auto"
    )
    day_weights: dict[date, float] | None = None
    if forgetting.active:
        horizon = forgetting.horizon_days() or 0
        if forgetting.auto:
            horizon = min(horizon, AUTO_FORGETTING_DAYS) if horizon else AUTO_FORGETTING_DAYS
        rows = await repository.daily_rows(
            session, experiment_id, before=for_date, since=_days_before(for_date, horizon)
        )
        if forgetting.auto:
            rows = _since_last_change(rows, [variant.id for variant in variants])
        totals = _weighted_totals(rows, for_date, forgetting)
        day_weights = {
            row.date: float(forgetting.weights(np.array([float((for_date - row.date).days)]))[0])
            for row in rows
        }
    else:
        totals = await repository.metric_totals(session, experiment_id, before=for_date)
    posted = (
        totals
        if not forgetting.active
        else await repository.metric_totals(session, experiment_id, before=for_date)
        if report
        else {}
    )
    curve = curve_choice.curve
    if curve is not None and kind is MetricKind.CONVERSION:
        totals = await late_conversions.matured(
            session, experiment_id, totals, curve, before=for_date, today=today, weights=day_weights
        )
    # Only burn-in needs the day count, and only up to its threshold.
    days_needed = None if report else policy.burn_in.days
    days_of_data = (
        await repository.days_with_data(
            session, experiment_id, before=for_date, at_most=days_needed
        )
        if days_needed or report
        else 0
    )
    inputs = tuple(totals.get(variant.id, EMPTY) for variant in variants)
    posted_totals = tuple(posted.get(variant.id, EMPTY) for variant in variants)
    arms = [
        ArmData(
            posterior=posterior(kind, settings.prior, totals_),
            units=int(totals_.impressions),
            successes=int(totals_.successes),
            mean=observed_mean(kind, totals_),
        )
        for totals_ in inputs
    ]
    # A segment's days count as the overall ones do: forgotten by the same weights, recent
    # conversion days at their effective exposures (None: every day as posted).
    late = curve if kind is MetricKind.CONVERSION else None
    adjust = (
        None
        if day_weights is None and late is None
        else segments.DayAdjustment(
            weights=day_weights, curve=late, now=min(today, _days_before(for_date, 1))
        )
    )
    answered_segment = None
    if segment is not None:
        found, by_variant = await segments.fitted(
            session,
            experiment_id,
            [v.id for v in variants],
            before=for_date,
            pooling=settings.segments.pooling,
            kind=kind,
            adjust=adjust,
            fits=fits,
        )
        row = found.index(segment)
        if row is not None:  # a segment never seen gets the answer over all traffic
            inputs = tuple(Totals(*sums) for sums in segments.totals_of(found, row, len(variants)))
            arms = [
                ArmData(
                    posterior=by_variant[k].posteriors[row],
                    units=int(totals_.impressions),
                    successes=int(totals_.successes),
                    mean=observed_mean(kind, totals_),
                )
                for k, totals_ in enumerate(inputs)
            ]
            answered_segment = segment
    active = [variant.active for variant in variants]
    breaches = guardrails.applying(every_breach)
    stopped = {v for v, breach in breaches.items() if breach.action == "stop"}
    floored = {v for v, breach in breaches.items() if breach.action == "floor"}
    active = [
        on and variant.id not in stopped for on, variant in zip(active, variants, strict=True)
    ]
    controls = _controls(settings, variants)
    previous = None
    if controls.max_change is not None and answered_segment is None:
        snapshot = await snapshots.latest_snapshot_before(session, experiment_id, for_date)
        if snapshot is not None:
            previous = tuple(snapshot.allocations.get(v.id, 0.0) / 100 for v in variants)
    return AllocationState(
        experiment=experiment,
        experiment_id=experiment_id,
        for_date=for_date,
        variant_ids=tuple(variant.id for variant in variants),
        settings=settings,
        kind=kind,
        higher_is_better=experiment.higher_is_better,
        controls=controls,
        inputs=tuple(inputs),
        posted=posted_totals,
        arms=tuple(arms),
        active=tuple(active),
        floored=tuple(v.id in floored for v in variants),
        days_of_data=days_of_data,
        previous=previous,
        guardrails={v: guardrails.breach_view(b) for v, b in breaches.items()},
        breaches=every_breach,
        segment=answered_segment,
        delay_curve=curve_choice,
        segment_days=adjust,
    )
