"""Guardrail checks simulated: one control and one variant with daily traffic, the
guardrail checked once a day on everything so far, as the service does. What the
false-breach (no harm) and detection (true harm) rates are measured with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mabapi.stats.guardrails import GuardrailRule, check
from mabapi.stats.sums import Sums, posterior_of


@dataclass(frozen=True, slots=True)
class GuardrailScenario:
    control_rate: float  # the guardrail's rate under the control (e.g. 0.02 refunds)
    relative_harm: float  # the variant's true rate is control_rate * (1 + this)
    units_per_day: int  # per variant
    days: int


def first_breach(scenario: GuardrailScenario, rule: GuardrailRule, seed: int) -> int | None:
    """The day (1-based) of the first breach, or None if the guardrail never breaches."""
    rng = np.random.default_rng(seed)
    harmful_rate = scenario.control_rate * (1.0 + scenario.relative_harm)
    if rule.higher_is_better:
        harmful_rate = scenario.control_rate * (1.0 - scenario.relative_harm)
    totals = np.zeros((2, 2))  # rows: control, variant; columns: units, successes
    for day in range(1, scenario.days + 1):
        totals[:, 0] += scenario.units_per_day
        totals[0, 1] += rng.binomial(scenario.units_per_day, scenario.control_rate)
        totals[1, 1] += rng.binomial(scenario.units_per_day, harmful_rate)
        control, variant = (
            posterior_of(Sums(units, successes), values=False) for units, successes in totals
        )
        result = check(variant, control, rule=rule, look=day, units=(totals[1, 0], totals[0, 0]))
        if result.breached:
            return day
    return None


def breach_rate(
    scenario: GuardrailScenario,
    rule: GuardrailRule,
    seeds: range,
    *,
    within_days: int | None = None,
) -> float:
    """The share of seeds whose guardrail breached (within `within_days`, if given)."""
    limit = scenario.days if within_days is None else within_days
    hits = 0
    for seed in seeds:
        day = first_breach(scenario, rule, seed)
        hits += day is not None and day <= limit
    return hits / len(seeds)
