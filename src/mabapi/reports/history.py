"""The daily history an experiment page draws: rates, split, P(best) over time, densities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import repository as snapshots
from mabapi.allocations import segments
from mabapi.allocations.state import EMPTY, observed_mean, posterior
from mabapi.experiments import repository
from mabapi.experiments.lifecycle import experiment_settings, require_experiment
from mabapi.experiments.models import (
    Experiment,
    MetricKind,
)
from mabapi.experiments.schemas import PriorSettings
from mabapi.stats import allocation as allocation_stats
from mabapi.stats.posterior import (
    Posterior,
    density_curves,
)

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


async def history(
    session: AsyncSession,
    *,
    experiment_id: str,
    segment: str | None = None,
    posteriors: Sequence[Posterior] | None = None,
) -> History:
    """Daily rates with credible bands, the allocations served, P(best) after each day
    (from the totals up to and including it) and today's posterior densities.

    With `segment`: all of it from that segment's own rows; its traffic split is the
    share of its units each variant got each day (a segment's splits are not recorded),
    as it is for an experiment no recorded allocation served (browser keys store none).
    `posteriors`: today's posteriors to draw the densities from (the summary's, so the
    chart shows what the table says; for a segment, the pooled ones)."""
    experiment = await require_experiment(session, experiment_id)
    settings = experiment_settings(experiment)
    kind = MetricKind(experiment.metric_kind)
    variant_ids = [variant.id for variant in experiment.variants]
    if segment is None:
        rows = await repository.daily_rows(session, experiment_id)
    else:
        rows = [
            repository.DailyRow(v, d, int(n), int(sc), x, q)
            for v, d, n, sc, x, q in await segments.daily(session, experiment_id, segment)
        ]
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
                else EMPTY
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
            posteriors = [posterior(kind, settings.prior, running[v]) for v in variant_ids]
            probabilities = allocation_stats.probability_best(
                posteriors, higher_is_better=experiment.higher_is_better
            )
            best_days.append(day)
            for variant_id, probability in zip(variant_ids, probabilities, strict=True):
                best[variant_id].append(float(probability))
    # The allocations served, where recorded; else (a segment, or an experiment only
    # browser keys serve, whose answers store no snapshot) the share of units each got.
    served_by_day = (
        {} if segment is not None else await snapshots.served_allocations(session, experiment_id)
    )
    split_observed = not served_by_day
    if split_observed:
        served_by_day = _observed_shares(rows)
    served_days = sorted(served_by_day)
    served = {v: [float(served_by_day[d].get(v, 0.0)) for d in served_days] for v in variant_ids}
    grid: list[float] = []
    densities: dict[str, list[float]] = {}
    if variant_ids:
        if posteriors is None:
            posteriors = [posterior(kind, settings.prior, running[v]) for v in variant_ids]
        grid, curves = density_curves(list(posteriors))
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


def _observed_shares(rows: Sequence[repository.DailyRow]) -> dict[date, dict[str, float]]:
    """Per day, the percent of the day's units each variant got."""
    units: dict[date, dict[str, float]] = {}
    for row in rows:
        units.setdefault(row.date, {})[row.variant_id] = float(row.impressions)
    return {
        day: {v: 100.0 * n / total for v, n in by_variant.items()}
        for day, by_variant in units.items()
        if (total := sum(by_variant.values())) > 0
    }


def _daily_point(
    kind: MetricKind, prior: PriorSettings, totals: repository.VariantTotals
) -> DailyPoint:
    if totals.impressions <= 0:
        return DailyPoint(0, 0, None, None, None)
    belief = posterior(kind, prior, totals)
    lower, upper = belief.credible_interval(0.95)
    return DailyPoint(
        int(totals.impressions), int(totals.successes), observed_mean(kind, totals), lower, upper
    )
