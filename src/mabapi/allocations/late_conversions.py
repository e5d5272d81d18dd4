"""Late conversions in allocations and summaries: recent days count as the exposures
whose conversions should have been reported by now (`mabapi.stats.delay`).

The delay curve is the experiment's `conversion_delay_cdf`, or learnt with the chain
ladder from two development triangles added together:
- daily mode: each day's revision history (metric_revisions). A revision posted k days
  after the day it counts shows the day's conversions as known at age k;
- real-time mode: exposure-to-conversion times of assigned units (assignments), a unit
  exposed on day d and converting on day d + k counting from age k on.
A day is observed up to its age today, never beyond, so young days are censored, not
read as zeros.

A recent day's age is what its numbers are complete up to: for reported totals, the day of
their last post minus the day; for live counts, today (or the day before the planned
one, if earlier) minus the day. Rows older than L days are complete by definition.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import repository as reported
from mabapi.experiments import repository
from mabapi.experiments.schemas import PolicySettings
from mabapi.stats.delay import DelayCurve, chain_ladder, days_learnt_from, effective_units

# How many days of history the curve is learnt from, per day of delay (plus a margin).
LEARNING_DAYS_PER_DELAY_DAY = 8
LEARNING_MARGIN_DAYS = 8


@dataclass(frozen=True, slots=True)
class CurveChoice:
    """The delay curve an answer used, and why (shown on the summary and allocations).

    source: "off" (conversion_delay_days 0: every day is complete), "given"
    (conversion_delay_cdf), "learnt" (the chain ladder, from `days` exposure days), or
    "none" (a delay is set but no day's conversions were ever seen growing: no correction).
    """

    curve: DelayCurve | None
    source: str
    days: int
    note: str


async def choose_curve(
    session: AsyncSession, experiment_id: str, policy: PolicySettings, today: date
) -> CurveChoice:
    """The curve to correct with, and what it rests on."""
    days = policy.conversion_delay_days
    if days == 0:
        return CurveChoice(None, "off", 0, "every day's conversions are taken as complete")
    if policy.conversion_delay_cdf is not None:
        return CurveChoice(
            DelayCurve(tuple(policy.conversion_delay_cdf)), "given", 0, "conversion_delay_cdf"
        )
    since = today - timedelta(days=LEARNING_DAYS_PER_DELAY_DAY * days + LEARNING_MARGIN_DAYS)
    triangle = _reported_triangle(
        await reported.revisions_since(session, experiment_id, since), days, today
    )
    for day, cumulative in _live_triangle(
        await reported.conversion_lags(session, experiment_id, since), days, today
    ).items():
        known = triangle.setdefault(day, [0.0] * len(cumulative))
        for age, count in enumerate(cumulative):
            known[age] += count
    learnt_from = days_learnt_from(triangle)
    if learnt_from == 0:
        return CurveChoice(
            None,
            "none",
            0,
            "no correction: not enough revision history yet. The curve is learnt from how "
            "each day's conversions grow over the days after it (re-posted totals, or "
            "real-time conversions); history posted all at once, as an import or a "
            "backfill, shows no growth. Give conversion_delay_cdf to correct it now",
        )
    return CurveChoice(
        chain_ladder(triangle, days),
        "learnt",
        learnt_from,
        f"learnt from how {learnt_from} day(s)' conversions grew after they were first posted",
    )


async def delay_curve(
    session: AsyncSession, experiment_id: str, policy: PolicySettings, today: date
) -> DelayCurve | None:
    """The curve to correct with; None when there is none (`choose_curve` says why)."""
    return (await choose_curve(session, experiment_id, policy, today)).curve


def _reported_triangle(
    revisions: list[tuple[str, date, date, int]], days: int, today: date
) -> dict[date, list[float]]:
    """Per day: its conversions (over variants) as known at ages 0..min(age today, L)."""
    by_day: dict[date, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for variant, day, posted_on, successes in revisions:
        by_day[day][variant].append(((posted_on - day).days, successes))
    triangle: dict[date, list[float]] = {}
    for day, variants in by_day.items():
        oldest = min((today - day).days, days)
        if oldest < 0:
            continue
        known = [0.0] * (oldest + 1)
        for history in variants.values():  # in arrival order: the last at each age wins
            for age in range(oldest + 1):
                latest = [count for posted, count in history if posted <= age]
                known[age] += latest[-1] if latest else 0.0
        triangle[day] = known
    return triangle


def _live_triangle(
    lags: list[tuple[date, date, int]], days: int, today: date
) -> dict[date, list[float]]:
    """Per exposure day: its units' conversions by age 0..min(age today, L)."""
    triangle: dict[date, list[float]] = {}
    for exposed, converted, count in lags:
        oldest = min((today - exposed).days, days)
        if oldest < 0:
            continue
        known = triangle.setdefault(exposed, [0.0] * (oldest + 1))
        for age in range(max(0, (converted - exposed).days), oldest + 1):
            known[age] += count
    return triangle


async def matured(
    session: AsyncSession,
    experiment_id: str,
    totals: Mapping[str, repository.VariantTotals],
    curve: DelayCurve,
    *,
    before: date | None,
    today: date,
    weights: Mapping[date, float] | None = None,
) -> dict[str, repository.VariantTotals]:
    """`totals` (over days before `before`, all if None) with each recent day's
    impressions replaced by its effective exposures. `weights`: the forgetting weight of
    each day, when the totals are weighted."""
    now = min(today, before - timedelta(days=1)) if before is not None else today
    since = now - timedelta(days=curve.days)
    rows = await reported.recent_rows(session, experiment_id, since)
    missing: dict[str, float] = defaultdict(float)
    for row in rows:
        if before is not None and row.day >= before:
            continue
        complete_on = now if row.reported_on is None else min(row.reported_on, now)
        age = (complete_on - row.day).days
        share = curve.share(np.array([float(age)]))
        effective = float(
            effective_units(
                np.array([float(row.impressions)]), np.array([float(row.successes)]), share
            )[0]
        )
        weight = 1.0 if weights is None else weights.get(row.day, 0.0)
        missing[row.variant_id] += weight * (row.impressions - effective)
    return {
        variant: replace(t, impressions=max(t.successes, t.impressions - missing[variant]))
        if variant in missing
        else t
        for variant, t in totals.items()
    }
