"""Traffic shares for a day from the data before it: posteriors, the policy and its
controls, and the allocation snapshot of the audit trail."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import late_conversions, segments
from mabapi.allocations import repository as snapshots
from mabapi.db.base import utcnow
from mabapi.errors import (
    ConflictError,
)
from mabapi.experiments import repository
from mabapi.experiments import segment_repository as segment_registry
from mabapi.experiments.lifecycle import experiment_settings, require_experiment
from mabapi.experiments.models import (
    MetricKind,
    Variant,
)
from mabapi.experiments.schemas import ExperimentSettings, PriorSettings
from mabapi.guardrails import service as guardrails
from mabapi.stats import allocation as allocation_stats
from mabapi.stats.history import Forgetting, segment_start
from mabapi.stats.policies import (
    ArmData,
    BurnIn,
    Controls,
    PolicyConfig,
    PolicyName,
    allocate,
)
from mabapi.stats.posterior import (
    BetaPrior,
    NormalInverseGammaPrior,
    Posterior,
)
from mabapi.stats.sums import posterior_of

_EMPTY = repository.VariantTotals(0, 0)
Totals = repository.VariantTotals


@dataclass(frozen=True, slots=True)
class Allocation:
    experiment_id: str
    for_date: date
    variant_ids: tuple[str, ...]
    percentages: tuple[float, ...]
    probability_best: tuple[float, ...]
    inputs: tuple[repository.VariantTotals, ...]
    algorithm: str
    algorithm_version: str
    burned_in: bool
    shares: tuple[float, ...]  # unrounded shares after controls (what draws use)
    # Breached variants: metric_id, probability_harm, action, since (guardrails.breach_view).
    guardrails: dict[str, dict[str, Any]] = field(default_factory=dict)
    segment: str | None = None  # the segment answered for (None: all traffic)
    delay_curve: late_conversions.CurveChoice | None = None  # the late-conversion curve used


def _posterior(
    kind: MetricKind, prior: PriorSettings, totals: repository.VariantTotals
) -> Posterior:
    """The experiment's posterior of a variant, under its prior settings."""
    return posterior_of(
        totals,
        values=kind is MetricKind.VALUE,
        beta_prior=BetaPrior(prior.alpha, prior.beta),
        value_prior=NormalInverseGammaPrior(prior.mu, prior.kappa, prior.alpha, prior.beta),
    )


def _observed_mean(kind: MetricKind, totals: repository.VariantTotals) -> float:
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


def _inputs_hash(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _totals_json(totals: repository.VariantTotals) -> dict[str, float]:
    return {
        "impressions": totals.impressions,
        "successes": totals.successes,
        "value_sum": totals.value_sum,
        "value_sum_squares": totals.value_sum_squares,
    }


def _probability_best(
    arms: Sequence[ArmData],
    active: Sequence[bool],
    weights: np.ndarray,
    *,
    thompson_over_all_active: bool,
    higher_is_better: bool,
) -> np.ndarray:
    """P(best) among the active variants (0 for paused ones). Thompson's weights over all
    active variants are exactly that; for other policies (or with reserved variants, which
    take no part in the policy's weights) it is computed."""
    if thompson_over_all_active:
        return weights
    live = [i for i, on in enumerate(active) if on]
    result = np.zeros(len(arms))
    if live:
        result[live] = allocation_stats.probability_best(
            [arms[i].posterior for i in live], higher_is_better=higher_is_better
        )
    return result


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


def _floor_only(
    shares: np.ndarray, floored: Sequence[bool], active: Sequence[bool], policy: Any
) -> np.ndarray:
    """A guardrail's "floor" action: each floored variant keeps at most its floor (the
    larger of `floor` and `exploration` / K); what it gives up goes to the other active
    variants in proportion to their shares (evenly if they have none)."""
    live = sum(active)
    least = max(policy.floor, policy.exploration / live) if live else 0.0
    result = np.array(shares, dtype=np.float64)
    excess = 0.0
    for i, capped in enumerate(floored):
        if capped and active[i] and result[i] > least:
            excess += result[i] - least
            result[i] = least
    takers = [i for i, on in enumerate(active) if on and not floored[i]]
    if excess > 0 and takers:
        weights = result[takers]
        weights = (
            weights / weights.sum() if weights.sum() > 0 else np.full(len(takers), 1 / len(takers))
        )
        result[takers] += excess * weights
    elif excess > 0:  # every active variant is floored: keep the policy's shares
        return np.array(shares, dtype=np.float64)
    return result


def _days_before(day: date, days: int) -> date:
    """`day - days`, or the first representable date for a window that reaches past year
    1 (a long half-life planned near year 1 overflowed: a 500)."""
    return date.fromordinal(max(1, day.toordinal() - days))


@dataclass(frozen=True, slots=True)
class AllocationState:
    """Everything one allocation decision reads, read in one transaction (`read_state`)
    and never changed after: `decide` derives the shares from it alone."""

    experiment_id: str
    for_date: date
    variant_ids: tuple[str, ...]
    settings: ExperimentSettings
    kind: MetricKind
    higher_is_better: bool
    controls: Controls
    inputs: tuple[repository.VariantTotals, ...]  # the sums each posterior is built from
    arms: tuple[ArmData, ...]
    active: tuple[bool, ...]  # not paused, and not stopped by a guardrail
    floored: tuple[bool, ...]  # held at the floor by a guardrail
    days_of_data: int  # counted up to the burn-in's days only
    previous: tuple[float, ...] | None  # the last served shares, for max_change
    # Breached variants: metric_id, probability_harm, action, since (guardrails.breach_view).
    guardrails: dict[str, dict[str, Any]]
    segment: str | None  # the segment answered for (None: all traffic)
    delay_curve: late_conversions.CurveChoice


async def read_state(
    session: AsyncSession,
    *,
    experiment_id: str,
    for_date: date,
    segment: str | None = None,
    fits: segments.SegmentFits | None = None,
) -> AllocationState:
    """The data an allocation for `for_date` rests on (data dated strictly before it),
    with the experiment's settings, guardrail status and served history: reads only."""
    experiment = await require_experiment(session, experiment_id)
    variants = list(experiment.variants)
    if not any(variant.active for variant in variants):
        raise ConflictError(
            f"experiment {experiment_id!r} has no active variants to allocate traffic to; add "
            "one with POST /experiments/{id}/variants or resume one"
        )
    settings = experiment_settings(experiment)
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
    today = utcnow().date()
    curve_choice = await late_conversions.choose_curve(session, experiment_id, policy, today)
    curve = curve_choice.curve
    if curve is not None and kind is MetricKind.CONVERSION:
        totals = await late_conversions.matured(
            session, experiment_id, totals, curve, before=for_date, today=today, weights=day_weights
        )
    # Only burn-in needs the day count, and only up to its threshold.
    days_needed = policy.burn_in.days
    days_of_data = (
        await repository.days_with_data(
            session, experiment_id, before=for_date, at_most=days_needed
        )
        if days_needed
        else 0
    )
    inputs = tuple(totals.get(variant.id, _EMPTY) for variant in variants)
    arms = [
        ArmData(
            posterior=_posterior(kind, settings.prior, totals_),
            units=int(totals_.impressions),
            successes=int(totals_.successes),
            mean=_observed_mean(kind, totals_),
        )
        for totals_ in inputs
    ]
    answered_segment = None
    if (
        segment is not None
        and settings.segments.pooling != "full"
        # A segment never registered is answered over all traffic without a fit.
        and await segment_registry.known(session, experiment_id, segment)
    ):
        # The segment's days count as the overall ones do: forgotten by the same weights,
        # recent conversion days at their effective exposures.
        late = curve if kind is MetricKind.CONVERSION else None
        adjust = segments.DayAdjustment(
            weights=day_weights, curve=late, now=min(today, for_date - timedelta(days=1))
        )
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
                    mean=_observed_mean(kind, totals_),
                )
                for k, totals_ in enumerate(inputs)
            ]
            answered_segment = segment
    active = [variant.active for variant in variants]
    breaches = await guardrails.status(
        session, experiment, day=guardrails.check_day(today, for_date)
    )
    stopped = {v for v, breach in breaches.items() if breach.action == "stop"}
    floored = {v for v, breach in breaches.items() if breach.action == "floor"}
    active = [
        on and variant.id not in stopped for on, variant in zip(active, variants, strict=True)
    ]
    if not any(active):
        raise ConflictError(
            f"every active variant of {experiment_id!r} breached a guardrail; clear it with "
            "POST /experiments/{id}/guardrails/{metric_id}/clear or resume another variant"
        )
    controls = _controls(settings, variants)
    previous = None
    if controls.max_change is not None and answered_segment is None:
        snapshot = await snapshots.latest_snapshot_before(session, experiment_id, for_date)
        if snapshot is not None:
            previous = tuple(snapshot.allocations.get(v.id, 0.0) / 100 for v in variants)
    return AllocationState(
        experiment_id=experiment_id,
        for_date=for_date,
        variant_ids=tuple(variant.id for variant in variants),
        settings=settings,
        kind=kind,
        higher_is_better=experiment.higher_is_better,
        controls=controls,
        inputs=tuple(inputs),
        arms=tuple(arms),
        active=tuple(active),
        floored=tuple(v.id in floored for v in variants),
        days_of_data=days_of_data,
        previous=previous,
        guardrails={v: guardrails.breach_view(b) for v, b in breaches.items()},
        segment=answered_segment,
        delay_curve=curve_choice,
    )


def decide(state: AllocationState) -> Allocation:
    """The shares for the state's day: the experiment's policy, then its controls
    (burn-in, floor, reserved shares, paused variants, maximum change) and guardrail
    floors. Pure: the same state gives the same answer."""
    policy = state.settings.policy
    controls = state.controls
    config = PolicyConfig(PolicyName(policy.algorithm), policy.top_two_beta, policy.epsilon)
    shares, weights, burned_in = allocate(
        list(state.arms),
        config=config,
        controls=controls,
        active=list(state.active),
        days_of_data=state.days_of_data,
        higher_is_better=state.higher_is_better,
        previous=None if state.previous is None else np.array(state.previous),
    )
    if any(state.floored):
        shares = _floor_only(shares, state.floored, state.active, policy)
    percentages = allocation_stats.largest_remainder_percentages(list(shares))
    return Allocation(
        experiment_id=state.experiment_id,
        for_date=state.for_date,
        variant_ids=state.variant_ids,
        percentages=tuple(percentages),
        probability_best=tuple(
            float(p)
            for p in _probability_best(
                state.arms,
                state.active,
                weights,
                thompson_over_all_active=config.name is PolicyName.THOMPSON
                and not controls.reserved,
                higher_is_better=state.higher_is_better,
            )
        ),
        inputs=state.inputs,
        algorithm=str(policy.algorithm),
        algorithm_version=f"{policy.algorithm}-{allocation_stats.ALGORITHM_VERSION}",
        burned_in=burned_in,
        shares=tuple(float(x) for x in shares),
        guardrails=state.guardrails,
        segment=state.segment,
        delay_curve=state.delay_curve,
    )


async def compute_allocation(
    session: AsyncSession,
    *,
    experiment_id: str,
    for_date: date,
    record: bool = True,
    segment: str | None = None,
    fits: segments.SegmentFits | None = None,
) -> Allocation:
    """Traffic shares for `for_date` from data dated strictly before it: `read_state`,
    then `decide`. Each distinct all-traffic answer is stored once as an allocation
    snapshot when `record` (the served history)."""
    state = await read_state(
        session, experiment_id=experiment_id, for_date=for_date, segment=segment, fits=fits
    )
    result = decide(state)
    if record and state.segment is None:
        await record_snapshot(session, state, result)
    return result


async def record_snapshot(
    session: AsyncSession, state: AllocationState, result: Allocation
) -> None:
    """Store `result` as the allocation snapshot of its day, once per distinct inputs.
    Segment answers are not snapshots: the served history (and the sample-ratio check
    built on it) is of all traffic."""
    snapshot_inputs = {
        "metric_kind": state.kind.value,
        "higher_is_better": state.higher_is_better,
        "settings": state.settings.model_dump(mode="json"),
        "active": dict(zip(state.variant_ids, state.active, strict=True)),
        "days_of_data": state.days_of_data,
        "guardrails": result.guardrails,
        "previous": None if state.previous is None else list(state.previous),
        "variants": {
            v: _totals_json(t) for v, t in zip(state.variant_ids, state.inputs, strict=True)
        },
    }
    inputs_hash = _inputs_hash({"version": result.algorithm_version, **snapshot_inputs})
    if not await snapshots.snapshot_exists(
        session, state.experiment_id, state.for_date, inputs_hash
    ):
        await snapshots.insert_snapshot_if_new(
            session,
            {
                "experiment_id": state.experiment_id,
                "for_date": state.for_date,
                "algorithm": result.algorithm,
                "algorithm_version": result.algorithm_version,
                "inputs_hash": inputs_hash,
                "inputs": snapshot_inputs,
                "allocations": dict(zip(state.variant_ids, result.percentages, strict=True)),
                "probabilities": dict(zip(state.variant_ids, result.probability_best, strict=True)),
            },
        )
