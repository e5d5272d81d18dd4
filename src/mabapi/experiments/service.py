"""Use cases of the experiments domain: repository + stats. Flushes, never commits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.access import service as access
from mabapi.access.service import Principal
from mabapi.db.base import utcnow
from mabapi.errors import (
    AppError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    no_such_experiment,
)
from mabapi.experiments import repository
from mabapi.experiments.models import (
    Experiment,
    ExperimentMetric,
    ExperimentStatus,
    MetricKind,
    Variant,
)
from mabapi.experiments.schemas import (
    MAX_VARIANTS,
    ExperimentIn,
    ExperimentPatch,
    ExperimentSettings,
    MetricIn,
    PriorSettings,
    VariantIn,
    VariantPatch,
)
from mabapi.stats import allocation as allocation_stats
from mabapi.stats import decision
from mabapi.stats.history import Forgetting
from mabapi.stats.policies import (
    ArmData,
    BurnIn,
    Controls,
    PolicyConfig,
    PolicyName,
    allocate,
)
from mabapi.stats.posterior import (
    BetaPosterior,
    BetaPrior,
    BinomialCounts,
    NormalInverseGammaPosterior,
    NormalInverseGammaPrior,
    Posterior,
    ValueSummary,
    density_curves,
)

CREDIBLE_MASS = 0.95
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


@dataclass(frozen=True, slots=True)
class Summary:
    experiment: Experiment
    variants: list[VariantStatistics]
    days_of_data: int
    value_remaining: float
    recommendation: decision.Recommendation
    gain: decision.Interval
    sample_ratio: decision.SampleRatioCheck | None
    stop_rule: decision.StopRule
    seed: int
    draws: int


def experiment_settings(experiment: Experiment) -> ExperimentSettings:
    return ExperimentSettings.model_validate(experiment.settings or {})


def _posterior(
    kind: MetricKind, prior: PriorSettings, totals: repository.VariantTotals
) -> Posterior:
    if kind is MetricKind.VALUE:
        return NormalInverseGammaPosterior.from_summary(
            ValueSummary(totals.impressions, totals.value_sum, totals.value_sum_squares),
            NormalInverseGammaPrior(prior.mu, prior.kappa, prior.alpha, prior.beta),
        )
    return BetaPosterior.from_counts(
        BinomialCounts(totals.impressions, totals.successes), BetaPrior(prior.alpha, prior.beta)
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


async def require_experiment(session: AsyncSession, experiment_id: str) -> Experiment:
    experiment = await repository.get_experiment(session, experiment_id)
    if experiment is None:
        raise no_such_experiment(experiment_id)
    return experiment


async def ingest(
    session: AsyncSession, *, rows: Sequence[MetricIn], auto_create: bool, principal: Principal
) -> None:
    """Daily totals sent by `principal`: experiments of other projects are a 404, new
    ones are registered in the caller's project.

    Ownership is checked on the rows that exist after the registering insert, in the same
    transaction: when two projects create one new id at the same moment, the insert
    (ON CONFLICT DO NOTHING) waits for the other's to commit, and the check then sees the
    winner's project, so the loser gets 404 and writes nothing. Checking before the
    insert let the loser's rows land in the winner's experiment."""
    experiment_ids = {row.experiment_id for row in rows}
    if auto_create:
        await repository.insert_experiments_if_missing(
            session, experiment_ids, principal.home_project
        )
    await check_experiments(session, principal=principal, experiment_ids=experiment_ids)
    await record_metrics(
        session,
        rows=rows,
        auto_create=auto_create,
    )


async def check_experiments(
    session: AsyncSession, *, principal: Principal, experiment_ids: Iterable[str]
) -> None:
    """404 for any named experiment of another project, worded exactly as for one that
    does not exist, so a key learns nothing about other projects."""
    if principal.project_id is None:
        return
    owners = await repository.projects_of(session, set(experiment_ids))
    for experiment_id in sorted(owners):
        if owners[experiment_id] != principal.project_id:
            raise no_such_experiment(experiment_id)


@dataclass(frozen=True, slots=True)
class Report:
    """One POST /metrics/: the row, who sent it, and its audit entry (if audited)."""

    row: MetricIn
    principal: Principal
    audit: dict[str, Any] | None = None


async def ingest_many(
    session: AsyncSession, reports: Sequence[Report], *, auto_create: bool
) -> list[AppError | None]:
    """Many single-row posts in one transaction (group commit): a few statements for the
    whole batch. A refusal (unknown or archived experiment, another project's...) is
    raised for the batch; the group commit then writes the batch one post per
    transaction, so only the refused post is refused.

    Two posts of the same (experiment, variant, day) in one batch were concurrent, so
    either order is a valid one: the later in the queue wins, as if it came second."""
    await _ingest_together(session, reports, auto_create=auto_create)
    return [None] * len(reports)


async def _ingest_together(
    session: AsyncSession, reports: Sequence[Report], *, auto_create: bool
) -> None:
    by_principal: dict[Principal, dict[tuple[str, str, date], MetricIn]] = {}
    for report in reports:
        rows = by_principal.setdefault(report.principal, {})
        key = (report.row.experiment_id, report.row.variant_id, report.row.date)
        rows.pop(key, None)
        rows[key] = report.row
    for principal, rows in by_principal.items():
        await ingest(
            session, rows=list(rows.values()), auto_create=auto_create, principal=principal
        )
    await access.record_many(session, [r.audit for r in reports if r.audit is not None])


async def record_metrics(
    session: AsyncSession,
    *,
    rows: Sequence[MetricIn],
    auto_create: bool,
) -> None:
    """Set daily totals (an idempotent upsert), registering unknown variants if allowed
    (`ingest` has registered the experiments and checked their owner)."""
    experiment_ids = {row.experiment_id for row in rows}
    variant_keys = {(row.experiment_id, row.variant_id) for row in rows}
    if auto_create:
        await repository.insert_variants_if_missing(session, variant_keys)
        counts = await repository.variant_counts(session, experiment_ids)
        crowded = sorted(e for e, count in counts.items() if count > MAX_VARIANTS)
        if crowded:  # the whole request rolls back, registrations included
            raise ConflictError(
                f"experiment(s) {', '.join(crowded)} would have more than {MAX_VARIANTS} "
                "variants; post metrics for fewer distinct variant ids"
            )
    else:
        missing_experiments = experiment_ids - await repository.existing_experiment_ids(
            session, experiment_ids
        )
        if missing_experiments:
            raise NotFoundError(
                f"unknown experiment(s): {', '.join(sorted(missing_experiments))}; create them "
                "first with POST /experiments (automatic creation is off)"
            )
        missing_variants = variant_keys - await repository.existing_variant_keys(
            session, variant_keys
        )
        if missing_variants:
            names = ", ".join(f"{e}/{v}" for e, v in sorted(missing_variants))
            raise NotFoundError(
                f"unknown variant(s): {names}; add them with POST /experiments/{{id}}/variants "
                "first (automatic creation is off)"
            )
    archived = await repository.archived_experiment_ids(session, experiment_ids)
    if archived:
        raise ConflictError(
            f"experiment(s) {', '.join(sorted(archived))} are archived and take no new "
            "metrics; restore them with POST /experiments/{id}/restore"
        )
    value_experiments = await repository.value_experiment_ids(session, experiment_ids)
    missing_values = [
        index
        for index, row in enumerate(rows)
        if row.experiment_id in value_experiments and row.value_sum is None
    ]
    if missing_values:
        first = rows[missing_values[0]]
        raise InvalidInputError(
            f"experiment {first.experiment_id!r} measures values: every row needs value_sum and "
            f"value_sum_squares ({len(missing_values)} row(s) lack them, first at index "
            f"{missing_values[0]})"
        )
    await repository.upsert_daily_metrics(
        session,
        [
            {
                "experiment_id": row.experiment_id,
                "variant_id": row.variant_id,
                "date": row.date,
                "impressions": row.impressions,
                "successes": row.successes,
                "value_sum": row.value_sum,
                "value_sum_squares": row.value_sum_squares,
            }
            for row in rows
        ],
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


def _days_before(day: date, days: int) -> date:
    """`day - days`, or the first representable date for a window that reaches past year
    1 (a long half-life planned near year 1 overflowed: a 500)."""
    return date.fromordinal(max(1, day.toordinal() - days))


async def compute_allocation(
    session: AsyncSession, *, experiment_id: str, for_date: date, record: bool = True
) -> Allocation:
    """Traffic shares for `for_date` from data dated strictly before it: the experiment's
    policy, then its controls (burn-in, floor, reserved shares, paused variants, maximum
    change). Each distinct answer is stored once as an allocation snapshot."""
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
    forgetting = Forgetting(policy.window_days, policy.half_life_days)
    if forgetting.active:
        horizon = forgetting.horizon_days() or 0
        rows = await repository.daily_rows(
            session, experiment_id, before=for_date, since=_days_before(for_date, horizon)
        )
        totals = _weighted_totals(rows, for_date, forgetting)
    else:
        totals = await repository.metric_totals(session, experiment_id, before=for_date)
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
    active = [variant.active for variant in variants]
    controls = _controls(settings, variants)
    config = PolicyConfig(PolicyName(policy.algorithm), policy.top_two_beta, policy.epsilon)
    previous = None
    if controls.max_change is not None:
        snapshot = await repository.latest_snapshot_before(session, experiment_id, for_date)
        if snapshot is not None:
            previous = np.array([snapshot.allocations.get(v.id, 0.0) / 100 for v in variants])
    shares, weights, burned_in = allocate(
        arms,
        config=config,
        controls=controls,
        active=active,
        days_of_data=days_of_data,
        higher_is_better=experiment.higher_is_better,
        previous=previous,
    )
    percentages = allocation_stats.largest_remainder_percentages(list(shares))
    variant_ids = tuple(variant.id for variant in variants)
    algorithm_version = f"{policy.algorithm}-{allocation_stats.ALGORITHM_VERSION}"
    result = Allocation(
        experiment_id=experiment_id,
        for_date=for_date,
        variant_ids=variant_ids,
        percentages=tuple(percentages),
        probability_best=tuple(
            float(p)
            for p in _probability_best(
                arms,
                active,
                weights,
                thompson_over_all_active=config.name is PolicyName.THOMPSON
                and not controls.reserved,
                higher_is_better=experiment.higher_is_better,
            )
        ),
        inputs=inputs,
        algorithm=str(policy.algorithm),
        algorithm_version=algorithm_version,
        burned_in=burned_in,
        shares=tuple(float(x) for x in shares),
    )
    if not record:
        return result
    snapshot_inputs = {
        "metric_kind": kind.value,
        "higher_is_better": experiment.higher_is_better,
        "settings": settings.model_dump(mode="json"),
        "active": dict(zip(variant_ids, active, strict=True)),
        "days_of_data": days_of_data,
        "previous": None if previous is None else previous.tolist(),
        "variants": {v: _totals_json(t) for v, t in zip(variant_ids, inputs, strict=True)},
    }
    inputs_hash = _inputs_hash({"version": algorithm_version, **snapshot_inputs})
    if not await repository.snapshot_exists(session, experiment_id, for_date, inputs_hash):
        await repository.insert_snapshot_if_new(
            session,
            {
                "experiment_id": experiment_id,
                "for_date": for_date,
                "algorithm": result.algorithm,
                "algorithm_version": algorithm_version,
                "inputs_hash": inputs_hash,
                "inputs": snapshot_inputs,
                "allocations": dict(zip(variant_ids, percentages, strict=True)),
                "probabilities": dict(zip(variant_ids, result.probability_best, strict=True)),
            },
        )
    return result


async def summarize(session: AsyncSession, *, experiment_id: str) -> Summary:
    """Everything about how sure we are, over all data so far."""
    experiment = await require_experiment(session, experiment_id)
    settings = experiment_settings(experiment)
    kind = MetricKind(experiment.metric_kind)
    variants = list(experiment.variants)
    totals = await repository.metric_totals(session, experiment_id)
    inputs = [totals.get(variant.id, _EMPTY) for variant in variants]
    posteriors = [_posterior(kind, settings.prior, t) for t in inputs]
    days_of_data = await repository.days_with_data(session, experiment_id)
    rule = decision.StopRule(
        settings.stop_rule.probability_threshold,
        settings.stop_rule.value_remaining_threshold,
        settings.stop_rule.min_days,
        settings.stop_rule.equivalence_margin,
    )
    # Decisions are among the active variants: those traffic can still reach.
    active = [i for i, variant in enumerate(variants) if variant.active]
    control_positions = [k for k, i in enumerate(active) if variants[i].is_control]
    names = [variants[i].id for i in active]
    rows = await repository.daily_rows(session, experiment_id)
    stratified = _stratified(kind, variants, rows)
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
            )
        )
    gain = decision.gain_over_even_split(
        [posteriors[i] for i in active],
        np.array([float(inputs[i].impressions) for i in active]),
        higher_is_better=experiment.higher_is_better,
    )
    return Summary(
        experiment=experiment,
        variants=stats,
        days_of_data=days_of_data,
        value_remaining=outcome.value_remaining if outcome is not None else float("nan"),
        recommendation=(
            outcome.recommendation
            if outcome is not None
            else decision.Recommendation(
                decision.Action.CONTINUE, None, "continue: no active variants"
            )
        ),
        gain=gain,
        sample_ratio=await _sample_ratio(session, experiment_id, variants, rows),
        stop_rule=rule,
        seed=decision.DEFAULT_SEED,
        draws=decision.DEFAULT_DRAWS,
    )


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
) -> decision.SampleRatioCheck | None:
    """SRM against the allocations actually served, on days that have one."""
    served = await repository.served_allocations(session, experiment_id)
    dates, units, _, _, _ = _period_arrays(variants, rows)
    keep = [k for k, day in enumerate(dates) if day in served]
    if not keep:
        return None
    shares = np.array(
        [[served[dates[k]].get(variant.id, 0.0) / 100.0 for k in keep] for variant in variants]
    )
    return decision.sample_ratio_mismatch(units[:, keep], shares)


def _variant_rows(variants: Sequence[VariantIn]) -> list[Variant]:
    has_control = any(variant.is_control for variant in variants)
    return [
        Variant(
            id=variant.id,
            name=variant.name or variant.id,
            # With no control named, the first variant listed is the control.
            is_control=variant.is_control or (not has_control and position == 0),
            active=True,
            position=position,
        )
        for position, variant in enumerate(variants)
    ]


async def create_experiment(
    session: AsyncSession, *, payload: ExperimentIn, project_id: str = "default"
) -> Experiment:
    # Ids are unique across projects; the message is the same whoever holds the id.
    if await repository.get_experiment(session, payload.id, with_variants=False) is not None:
        raise ConflictError(f"experiment id {payload.id!r} is already taken; pick another id")
    experiment = Experiment(
        id=payload.id,
        project_id=project_id,
        name=payload.name or payload.id,
        description=payload.description,
        status=payload.status,
        algorithm=str(payload.settings.policy.algorithm),
        metric_kind=payload.metric_kind.value,
        higher_is_better=payload.higher_is_better,
        settings=payload.settings.model_dump(mode="json"),
        variants=_variant_rows(payload.variants),
    )
    await repository.add_experiment(session, experiment)
    return await require_experiment(session, payload.id)


async def list_experiments(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    status: ExperimentStatus | None,
    include_archived: bool,
    project_id: str | None = None,
) -> tuple[Sequence[Experiment], int]:
    return await repository.list_experiments(
        session,
        limit=limit,
        offset=offset,
        project_id=project_id,
        status=status,
        include_archived=include_archived,
    )


async def update_experiment(
    session: AsyncSession, *, experiment_id: str, patch: ExperimentPatch
) -> Experiment:
    experiment = await require_experiment(session, experiment_id)
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True, mode="json")
    if patch.settings is not None:
        known = {variant.id for variant in experiment.variants}
        unknown = sorted(set(patch.settings.policy.reserved) - known)
        if unknown:
            raise InvalidInputError(
                f"settings.policy.reserved names unknown variant(s): {', '.join(unknown)}"
            )
        changes["algorithm"] = str(patch.settings.policy.algorithm)
    for field, value in changes.items():
        setattr(experiment, field, value)
    experiment.updated_at = utcnow()
    await session.flush()
    return experiment


async def update_variant(
    session: AsyncSession, *, experiment_id: str, variant_id: str, patch: VariantPatch
) -> Experiment:
    """Rename, pause (active: false), resume, or make a variant the control."""
    experiment = await require_experiment(session, experiment_id)
    variant = next((v for v in experiment.variants if v.id == variant_id), None)
    if variant is None:
        raise NotFoundError(f"experiment {experiment_id!r} has no variant {variant_id!r}")
    if patch.is_control:
        for other in experiment.variants:
            other.is_control = other.id == variant_id
    elif patch.is_control is False:
        variant.is_control = False
    if patch.name is not None:
        variant.name = patch.name
    if patch.active is not None:
        variant.active = patch.active
    experiment.updated_at = utcnow()
    await session.flush()
    return experiment


async def add_variant(
    session: AsyncSession, *, experiment_id: str, payload: VariantIn
) -> Experiment:
    experiment = await require_experiment(session, experiment_id)
    if any(variant.id == payload.id for variant in experiment.variants):
        raise ConflictError(f"variant {payload.id!r} already exists in {experiment_id!r}")
    if len(experiment.variants) >= MAX_VARIANTS:
        raise ConflictError(
            f"experiment {experiment_id!r} already has the maximum {MAX_VARIANTS} variants"
        )
    if payload.is_control and any(variant.is_control for variant in experiment.variants):
        raise ConflictError(
            f"experiment {experiment_id!r} already has a control; add this variant without "
            "is_control"
        )
    position = await repository.next_variant_position(session, experiment_id)
    await repository.add_variant(
        session,
        Variant(
            experiment_id=experiment_id,
            id=payload.id,
            name=payload.name or payload.id,
            is_control=payload.is_control,
            active=True,
            position=position,
        ),
    )
    await repository.touch_experiment(session, experiment_id)
    session.expunge(experiment)
    return await require_experiment(session, experiment_id)


async def set_archived(session: AsyncSession, *, experiment_id: str, archived: bool) -> Experiment:
    experiment = await require_experiment(session, experiment_id)
    if archived and experiment.archived_at is None:
        experiment.archived_at = utcnow()
        experiment.updated_at = experiment.archived_at
    elif not archived and experiment.archived_at is not None:
        experiment.archived_at = None
        experiment.updated_at = utcnow()
    await session.flush()
    return experiment


async def daily_metrics(
    session: AsyncSession,
    *,
    experiment_id: str,
    start: date | None,
    end: date | None,
    variant_id: str | None,
) -> Sequence[ExperimentMetric]:
    await require_experiment(session, experiment_id)
    return await repository.list_daily_metrics(
        session, experiment_id, start=start, end=end, variant_id=variant_id
    )


async def conclude(session: AsyncSession, *, experiment_id: str, winner: str) -> Experiment:
    """End the test: status stopped, and every unit gets `winner` from now on."""
    experiment = await require_experiment(session, experiment_id)
    if not any(variant.id == winner for variant in experiment.variants):
        # 422, not 404: the experiment exists; the body names something it does not have.
        names = ", ".join(variant.id for variant in experiment.variants) or "none"
        raise InvalidInputError(
            f"winner {winner!r} is not a variant of {experiment_id!r} (its variants: {names})"
        )
    experiment.winner_variant_id = winner
    experiment.status = ExperimentStatus.STOPPED
    experiment.updated_at = utcnow()
    await session.flush()
    return experiment


HISTORY_DAYS = 366  # P(best) over time: one quadrature per day, the last year at most


@dataclass(frozen=True, slots=True)
class DailyPoint:
    """One variant's own numbers for one day, and its 95% credible interval."""

    impressions: int
    successes: int
    mean: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True, slots=True)
class History:
    """What the dashboard charts: the day-by-day story of an experiment."""

    experiment: Experiment
    variant_ids: list[str]
    days: list[date]
    daily: dict[str, list[DailyPoint]]
    served_days: list[date]
    served: dict[str, list[float]]
    best_days: list[date]
    probability_best: dict[str, list[float]]
    density_x: list[float]
    densities: dict[str, list[float]]


async def history(session: AsyncSession, *, experiment_id: str) -> History:
    """Daily rates with credible bands, the allocations served, P(best) after each day
    (from the totals up to and including it) and today's posterior densities."""
    experiment = await require_experiment(session, experiment_id)
    settings = experiment_settings(experiment)
    kind = MetricKind(experiment.metric_kind)
    variant_ids = [variant.id for variant in experiment.variants]
    rows = await repository.daily_rows(session, experiment_id)
    days = sorted({row.date for row in rows})
    by_key = {(row.variant_id, row.date): row for row in rows}
    daily: dict[str, list[DailyPoint]] = {v: [] for v in variant_ids}
    running = {v: repository.VariantTotals(0, 0, 0.0, 0.0) for v in variant_ids}
    best_days: list[date] = []
    best: dict[str, list[float]] = {v: [] for v in variant_ids}
    first_best_day = days[-HISTORY_DAYS] if len(days) > HISTORY_DAYS else None
    for day in days:
        for variant_id in variant_ids:
            row = by_key.get((variant_id, day))
            totals = (
                repository.VariantTotals(
                    row.impressions, row.successes, row.value_sum, row.value_sum_squares
                )
                if row
                else _EMPTY
            )
            daily[variant_id].append(_daily_point(kind, settings.prior, totals))
            before = running[variant_id]
            running[variant_id] = repository.VariantTotals(
                before.impressions + totals.impressions,
                before.successes + totals.successes,
                before.value_sum + totals.value_sum,
                before.value_sum_squares + totals.value_sum_squares,
            )
        if variant_ids and (first_best_day is None or day >= first_best_day):
            posteriors = [_posterior(kind, settings.prior, running[v]) for v in variant_ids]
            probabilities = allocation_stats.probability_best(
                posteriors, higher_is_better=experiment.higher_is_better
            )
            best_days.append(day)
            for variant_id, probability in zip(variant_ids, probabilities, strict=True):
                best[variant_id].append(float(probability))
    served_by_day = await repository.served_allocations(session, experiment_id)
    served_days = sorted(served_by_day)
    served = {v: [float(served_by_day[d].get(v, 0.0)) for d in served_days] for v in variant_ids}
    grid: list[float] = []
    densities: dict[str, list[float]] = {}
    if variant_ids:
        posteriors = [_posterior(kind, settings.prior, running[v]) for v in variant_ids]
        grid, curves = density_curves(posteriors)
        densities = dict(zip(variant_ids, curves, strict=True))
    return History(
        experiment,
        variant_ids,
        days,
        daily,
        served_days,
        served,
        best_days,
        best,
        grid,
        densities,
    )


def _daily_point(
    kind: MetricKind, prior: PriorSettings, totals: repository.VariantTotals
) -> DailyPoint:
    if totals.impressions <= 0:
        return DailyPoint(0, 0, None, None, None)
    posterior = _posterior(kind, prior, totals)
    lower, upper = posterior.credible_interval(0.95)
    return DailyPoint(
        int(totals.impressions), int(totals.successes), _observed_mean(kind, totals), lower, upper
    )
