"""Traffic shares for a day from the experiment's state (`state.read_state`): the policy
and its controls, and the allocation snapshot of the audit trail."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import late_conversions
from mabapi.allocations import repository as snapshots
from mabapi.allocations.state import AllocationState
from mabapi.errors import ConflictError
from mabapi.experiments import repository
from mabapi.stats import allocation as allocation_stats
from mabapi.stats.policies import ArmData, PolicyConfig, PolicyName, allocate

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


def decide(state: AllocationState) -> Allocation:
    """The shares for the state's day: the experiment's policy, then its controls
    (burn-in, floor, reserved shares, paused variants, maximum change) and guardrail
    floors. Pure: the same state gives the same answer (a 409 if no variant can take
    traffic)."""
    if not any(variant.active for variant in state.experiment.variants):
        raise ConflictError(
            f"experiment {state.experiment_id!r} has no active variants to allocate traffic "
            "to; add one with POST /experiments/{id}/variants or resume one"
        )
    if not any(state.active):
        raise ConflictError(
            f"every active variant of {state.experiment_id!r} breached a guardrail; clear it "
            "with POST /experiments/{id}/guardrails/{metric_id}/clear or resume another variant"
        )
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
