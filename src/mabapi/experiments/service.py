"""Use cases of the experiments domain: repository + stats. Flushes, never commits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.base import utcnow
from mabapi.errors import ConflictError, NotFoundError
from mabapi.experiments import repository
from mabapi.experiments.models import Experiment, ExperimentMetric, ExperimentStatus, Variant
from mabapi.experiments.schemas import (
    MAX_VARIANTS,
    ExperimentIn,
    ExperimentPatch,
    MetricIn,
    VariantIn,
)
from mabapi.stats import allocation as allocation_stats
from mabapi.stats.posterior import BetaPosterior, BetaPrior, BinomialCounts

CREDIBLE_MASS = 0.95
DEFAULT_PRIOR = BetaPrior(1.0, 1.0)


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


@dataclass(frozen=True, slots=True)
class VariantStatistics:
    variant: Variant
    totals: repository.VariantTotals
    posterior: BetaPosterior
    credible_interval: tuple[float, float]
    probability_best: float


async def require_experiment(session: AsyncSession, experiment_id: str) -> Experiment:
    experiment = await repository.get_experiment(session, experiment_id)
    if experiment is None:
        raise NotFoundError(
            f"experiment {experiment_id!r} does not exist; create it with POST /experiments "
            "or post metrics for it"
        )
    return experiment


async def record_metrics(
    session: AsyncSession, *, rows: Sequence[MetricIn], auto_create: bool
) -> None:
    """Set daily totals (an idempotent upsert), registering unknown names if allowed."""
    experiment_ids = {row.experiment_id for row in rows}
    variant_keys = {(row.experiment_id, row.variant_id) for row in rows}
    if auto_create:
        await repository.insert_experiments_if_missing(session, experiment_ids)
        await repository.insert_variants_if_missing(session, variant_keys)
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
    await repository.upsert_daily_metrics(
        session,
        [
            {
                "experiment_id": row.experiment_id,
                "variant_id": row.variant_id,
                "date": row.date,
                "impressions": row.impressions,
                "successes": row.successes,
            }
            for row in rows
        ],
    )


def _inputs_hash(variant_ids: Sequence[str], inputs: Sequence[repository.VariantTotals]) -> str:
    canonical = json.dumps(
        {
            "algorithm_version": allocation_stats.ALGORITHM_VERSION,
            "prior": [DEFAULT_PRIOR.alpha, DEFAULT_PRIOR.beta],
            "variants": [
                [variant_id, totals.impressions, totals.successes]
                for variant_id, totals in zip(variant_ids, inputs, strict=True)
            ],
        },
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _posterior(totals: repository.VariantTotals) -> BetaPosterior:
    return BetaPosterior.from_counts(
        BinomialCounts(totals.impressions, totals.successes), DEFAULT_PRIOR
    )


async def compute_allocation(
    session: AsyncSession, *, experiment_id: str, for_date: date
) -> Allocation:
    """Thompson-sampling traffic shares for `for_date`, from data dated strictly before it.

    Each distinct answer is stored once as an allocation snapshot (audit trail).
    """
    experiment = await require_experiment(session, experiment_id)
    variants = [variant for variant in experiment.variants if variant.active]
    if not variants:
        raise ConflictError(
            f"experiment {experiment_id!r} has no active variants to allocate traffic to; add "
            "one with POST /experiments/{id}/variants"
        )
    totals = await repository.metric_totals(session, experiment_id, before=for_date)
    empty = repository.VariantTotals(0, 0)
    inputs = tuple(totals.get(variant.id, empty) for variant in variants)
    variant_ids = tuple(variant.id for variant in variants)
    probabilities = allocation_stats.probability_best([_posterior(t) for t in inputs])
    percentages = allocation_stats.largest_remainder_percentages(list(probabilities))
    result = Allocation(
        experiment_id=experiment_id,
        for_date=for_date,
        variant_ids=variant_ids,
        percentages=tuple(percentages),
        probability_best=tuple(float(p) for p in probabilities),
        inputs=inputs,
        algorithm=allocation_stats.ALGORITHM,
        algorithm_version=allocation_stats.ALGORITHM_VERSION,
    )
    inputs_hash = _inputs_hash(variant_ids, inputs)
    if not await repository.snapshot_exists(session, experiment_id, for_date, inputs_hash):
        await repository.insert_snapshot_if_new(
            session,
            {
                "experiment_id": experiment_id,
                "for_date": for_date,
                "algorithm": result.algorithm,
                "algorithm_version": result.algorithm_version,
                "inputs_hash": inputs_hash,
                "inputs": {
                    "prior": {"alpha": DEFAULT_PRIOR.alpha, "beta": DEFAULT_PRIOR.beta},
                    "variants": {
                        v: {"impressions": t.impressions, "successes": t.successes}
                        for v, t in zip(variant_ids, inputs, strict=True)
                    },
                },
                "allocations": dict(zip(variant_ids, percentages, strict=True)),
                "probabilities": dict(zip(variant_ids, result.probability_best, strict=True)),
            },
        )
    return result


async def variant_statistics(
    session: AsyncSession, *, experiment_id: str
) -> tuple[Experiment, list[VariantStatistics]]:
    """Totals, posterior and probability to be best of every variant, over all data."""
    experiment = await require_experiment(session, experiment_id)
    totals = await repository.metric_totals(session, experiment_id)
    empty = repository.VariantTotals(0, 0)
    variants = list(experiment.variants)
    inputs = [totals.get(variant.id, empty) for variant in variants]
    posteriors = [_posterior(t) for t in inputs]
    # Probability to be best is taken among the active variants: those traffic can reach.
    active = [i for i, variant in enumerate(variants) if variant.active]
    best = allocation_stats.probability_best([posteriors[i] for i in active])
    probability = dict.fromkeys(range(len(variants)), 0.0)
    probability.update({i: float(p) for i, p in zip(active, best, strict=True)})
    return experiment, [
        VariantStatistics(
            variant=variant,
            totals=inputs[i],
            posterior=posteriors[i],
            credible_interval=posteriors[i].credible_interval(CREDIBLE_MASS),
            probability_best=probability[i],
        )
        for i, variant in enumerate(variants)
    ]


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


async def create_experiment(session: AsyncSession, *, payload: ExperimentIn) -> Experiment:
    if await repository.get_experiment(session, payload.id, with_variants=False) is not None:
        raise ConflictError(f"experiment {payload.id!r} already exists; pick another id")
    experiment = Experiment(
        id=payload.id,
        name=payload.name or payload.id,
        description=payload.description,
        status=payload.status,
        algorithm=allocation_stats.ALGORITHM,
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
) -> tuple[Sequence[Experiment], int]:
    return await repository.list_experiments(
        session, limit=limit, offset=offset, status=status, include_archived=include_archived
    )


async def update_experiment(
    session: AsyncSession, *, experiment_id: str, patch: ExperimentPatch
) -> Experiment:
    experiment = await require_experiment(session, experiment_id)
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    for field, value in changes.items():
        setattr(experiment, field, value)
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
