"""POST /experiments/{id}/evaluate: read the logged data (one SQL aggregation per
source), check the policy against the experiment, and run the estimators of
mabapi.stats.off_policy on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import repository as snapshots
from mabapi.errors import ConflictError, InvalidInputError
from mabapi.evaluation import repository
from mabapi.evaluation.schemas import EvaluateIn, SegmentedPolicy
from mabapi.experiments.lifecycle import require_experiment
from mabapi.experiments.models import MetricKind
from mabapi.stats import off_policy
from mabapi.stats.off_policy import Evaluation, LoggedGroup, Target

# Distinct (segment, variant, propensity) groups and (day, segment, variant) cells read
# per evaluation: far above what a year of data gives, a bound on what one request costs.
MAX_GROUPS = 200_000
SUM_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Answer:
    evaluation: Evaluation
    kind: MetricKind
    real_time_units: int
    reported_units: int
    days_without_served_allocation: int
    trustworthy: bool
    reasons: list[str]


def _split(name: str, split: Mapping[str, float], variants: set[str]) -> dict[str, float]:
    unknown = sorted(set(split) - variants)
    if unknown:
        raise InvalidInputError(
            f"{name}: {', '.join(unknown)} is not a variant of this experiment "
            f"(its variants: {', '.join(sorted(variants))})"
        )
    total = sum(split.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise InvalidInputError(f"{name}: the probabilities add up to {total:g}, not 1")
    return dict(split)


def target_of(policy: Mapping[str, float] | SegmentedPolicy, variants: set[str]) -> Target:
    """The policy as the estimators take it ("" is every unit not in a listed segment),
    or a 422 that names what to fix."""
    if isinstance(policy, SegmentedPolicy):
        target = {"": _split("policy.default", policy.default, variants)}
        for segment, split in policy.segments.items():
            target[segment] = _split(f"policy.segments.{segment}", split, variants)
        return target
    return {"": _split("policy", policy, variants)}


@dataclass(frozen=True, slots=True)
class Logged:
    groups: list[LoggedGroup]
    real_time_units: int
    reported_units: int
    days_without_served_allocation: int


async def logged(
    session: AsyncSession,
    experiment_id: str,
    kind: MetricKind,
    *,
    by_segment: bool,
    start: date | None = None,
    end: date | None = None,
    segment: str | None = None,
) -> Logged:
    """The logged units as groups (segment, variant, propensity): one SQL aggregation of
    the real-time units, one of the reported rows; a 422 past MAX_GROUPS, a 409 if none."""
    units = await repository.unit_groups(
        session,
        experiment_id,
        values=kind is MetricKind.VALUE,
        by_segment=by_segment,
        start=start,
        end=end,
        segment=segment,
        limit=MAX_GROUPS,
    )
    cells = await repository.reported_cells(
        session,
        experiment_id,
        by_segment=by_segment,
        start=start,
        end=end,
        segment=segment,
        limit=MAX_GROUPS,
    )
    if len(units) > MAX_GROUPS or len(cells) > MAX_GROUPS:
        raise InvalidInputError(
            f"more than {MAX_GROUPS:,} distinct groups of logged data in this range: "
            "narrow it with from and to"
        )
    live = [
        LoggedGroup(str(x), str(a), float(p), float(n), float(s or 0), float(ss or 0), float(c))
        for x, a, p, n, s, ss, c in units
    ]
    reported, guessed = await _reported_groups(session, experiment_id, cells, kind, start, end)
    if not live and not reported:
        raise ConflictError(
            "nothing to evaluate: no units were logged for this experiment"
            + (" in this segment" if segment else "")
            + (" in this range" if start or end else "")
        )
    return Logged(
        live + reported,
        real_time_units=int(sum(g.units for g in live)),
        reported_units=int(sum(g.units for g in reported)),
        days_without_served_allocation=guessed,
    )


async def evaluate(session: AsyncSession, experiment_id: str, request: EvaluateIn) -> Answer:
    experiment = await require_experiment(session, experiment_id)
    kind = MetricKind(experiment.metric_kind)
    target = target_of(request.policy, {v.id for v in experiment.variants})
    if request.from_ and request.to and request.from_ > request.to:
        raise InvalidInputError("from must not be after to")
    data = await logged(
        session,
        experiment_id,
        kind,
        by_segment=isinstance(request.policy, SegmentedPolicy),
        start=request.from_,
        end=request.to,
        segment=request.segment,
    )
    return _answer(off_policy.evaluate(data.groups, target), kind, data)


def _answer(evaluation: Evaluation, kind: MetricKind, data: Logged) -> Answer:
    reasons = _reasons(evaluation, values=kind is MetricKind.VALUE)
    return Answer(
        evaluation,
        kind,
        real_time_units=data.real_time_units,
        reported_units=data.reported_units,
        days_without_served_allocation=data.days_without_served_allocation,
        trustworthy=not reasons,
        reasons=reasons,
    )


async def what_if(
    session: AsyncSession,
    experiment_id: str,
    kind: MetricKind,
    variants: list[str],
    segment: str | None = None,
) -> list[tuple[str, Answer]] | None:
    """The even split and each variant alone, from one read of the logged data (the
    dashboard's "What if" panel); None when nothing was logged."""
    try:
        data = await logged(session, experiment_id, kind, by_segment=False, segment=segment)
    except ConflictError:
        return None
    policies = [("even split", {v: 1.0 / len(variants) for v in variants})]
    policies += [(f"only {v}", {u: float(u == v) for u in variants}) for v in variants]
    return [
        (label, _answer(off_policy.evaluate(data.groups, {"": policy}), kind, data))
        for label, policy in policies
    ]


async def _reported_groups(
    session: AsyncSession,
    experiment_id: str,
    cells: list[Any],
    kind: MetricKind,
    start: date | None,
    end: date | None,
) -> tuple[list[LoggedGroup], int]:
    """Reported cells with the day's served allocation as their logging probabilities; a
    day without one (imported history), or whose allocation gave a variant with units 0%,
    uses the observed shares of that day's units instead (counted in the answer)."""
    if not cells:
        return [], 0
    served = await snapshots.served_allocations(session, experiment_id)
    observed: dict[date, dict[str, float]] = {}
    for day, variant, n in await repository.day_units(session, experiment_id, start=start, end=end):
        observed.setdefault(day, {})[variant] = float(n or 0)
    share_of: dict[date, dict[str, float]] = {}
    guessed = 0
    for day in {cell[0] for cell in cells}:
        counts = observed.get(day, {})
        shares = {v: float(p) / 100.0 for v, p in (served.get(day) or {}).items()}
        if not shares or any(n > 0 and shares.get(v, 0.0) <= 0 for v, n in counts.items()):
            total = sum(counts.values())
            shares = {v: n / total for v, n in counts.items()} if total else {}
            guessed += 1
        share_of[day] = shares
    values = kind is MetricKind.VALUE
    groups = []
    for day, segment, variant, n, successes, total, squares in cells:
        groups.append(
            LoggedGroup(
                str(segment),
                str(variant),
                share_of[day][variant],
                float(n),
                float(total) if values else float(successes),
                float(squares) if values else float(successes),
                float(successes),
            )
        )
    return groups, guessed


def _reasons(evaluation: Evaluation, *, values: bool) -> list[str]:
    d = evaluation.diagnostics
    reasons = []
    if d.unsupported:
        reasons.append(
            f"{', '.join(d.unsupported)} never had traffic where the policy sends it "
            f"({d.unsupported_share:.1%} of the policy's traffic)"
        )
    if d.effective_sample_size < off_policy.MIN_EFFECTIVE_SAMPLE_SIZE:
        reasons.append(
            f"the weights leave an effective sample of {d.effective_sample_size:.0f} units "
            f"(at least {off_policy.MIN_EFFECTIVE_SAMPLE_SIZE:.0f} are needed): the policy "
            "differs too much from what was served"
        )
    needed = off_policy.min_rewarded(values)
    if d.least_rewarded < needed:
        reasons.append(
            f"a variant the policy uses has {d.least_rewarded:.0f} conversions (at least "
            f"{needed:.0f} are needed)"
        )
    return reasons
