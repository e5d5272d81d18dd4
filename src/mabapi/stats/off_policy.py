"""Off-policy evaluation: what another allocation would have earned, estimated from the
units the served allocation logged with their propensities (docs/STATISTICS.md,
"Off-policy evaluation").

The data arrive grouped: every logged unit of the same context (a segment, or none),
variant and propensity is interchangeable for every estimator here, so a group's count,
reward sum and sum of squares are all any estimator needs, and the answer is exactly what
a per-unit computation gives (tests/stats/test_off_policy.py checks it against the Open
Bandit Pipeline on the same units). Each estimator is a mean of per-unit terms

    rho_i = b(x_i) + c_i * (r_i - m_i)

with b, c and m constant within a group, so sum rho and sum rho^2 follow from the group
sums; the 95% interval is the normal one on that mean (DM and SNIPW: their own variances,
below)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054
ESTIMATORS = ("dm", "ipw", "snipw", "dr", "switch-dr")
# Switch-DR's threshold candidates: the estimate uses the one with the smallest estimated
# mean squared error (variance + squared distance from DR), as Wang et al. (2017) tune it.
SWITCH_THRESHOLDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, math.inf)


@dataclass(frozen=True, slots=True)
class LoggedGroup:
    """Units of one context, variant and logging probability: how many, the sum and sum
    of squares of their rewards (a conversion is 1, a value metric its value), and how
    many had a reward at all (conversions; only the trust rule reads it)."""

    context: str
    variant: str
    propensity: float
    units: float
    reward_sum: float
    reward_sum_squares: float
    rewarded: float = 0.0


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    low: float
    high: float
    standard_error: float


@dataclass(frozen=True, slots=True)
class Diagnostics:
    units: float
    effective_sample_size: float
    max_weight: float
    mean_weight: float
    clipped_weight_share: float
    switch_threshold: float
    unsupported: tuple[str, ...]
    unsupported_share: float
    least_rewarded: float


@dataclass(frozen=True, slots=True)
class Evaluation:
    estimates: dict[str, Estimate | None]
    refused: dict[str, str]
    diagnostics: Diagnostics
    logged: float


Target = Mapping[str, Mapping[str, float]]
"""Target probabilities per context ("" is the default context) and variant."""


def target_for(target: Target, context: str) -> Mapping[str, float]:
    return target.get(context) or target[""]


def reward_model(groups: Sequence[LoggedGroup]) -> dict[tuple[str, str], float]:
    """q(x, a): the mean reward of variant a's units in context x; a variant's mean over
    every context where it has none in x (the reward model the estimators share)."""
    cell: dict[tuple[str, str], list[float]] = {}
    overall: dict[str, list[float]] = {}
    for g in groups:
        for s in (
            cell.setdefault((g.context, g.variant), [0.0, 0.0]),
            overall.setdefault(g.variant, [0.0, 0.0]),
        ):
            s[0] += g.units
            s[1] += g.reward_sum
    model: dict[tuple[str, str], float] = {}
    for x in {g.context for g in groups}:
        for a, (units, total) in overall.items():
            if units > 0:
                own = cell.get((x, a))
                model[(x, a)] = own[1] / own[0] if own and own[0] > 0 else total / units
    return model


@dataclass(frozen=True, slots=True)
class _Moments:
    n: float
    total: float
    squares: float

    def estimate(self) -> Estimate:
        mean = self.total / self.n
        variance = max(self.squares - self.n * mean * mean, 0.0) / max(self.n - 1.0, 1.0)
        se = math.sqrt(variance / self.n)
        return Estimate(mean, mean - Z95 * se, mean + Z95 * se, se)


def _round_moments(
    groups: Sequence[LoggedGroup],
    base: Mapping[str, float],
    coefficient: Mapping[int, float],
    centre: Mapping[int, float],
) -> _Moments:
    """Sum and sum of squares of rho_i = b(x) + c_g (r_i - m_g) over every unit."""
    n = total = squares = 0.0
    for i, g in enumerate(groups):
        c, m = coefficient[i], centre[i]
        d = base.get(g.context, 0.0) - c * m
        n += g.units
        total += g.units * d + c * g.reward_sum
        squares += g.units * d * d + 2.0 * d * c * g.reward_sum + c * c * g.reward_sum_squares
    return _Moments(n, total, squares)


def evaluate(
    groups: Sequence[LoggedGroup],
    target: Target,
    *,
    switch_threshold: float | None = None,
    model: Mapping[tuple[str, str], float] | None = None,
) -> Evaluation:
    """Every estimator's value of `target` on the logged groups (ESTIMATORS), with its
    95% interval, the weights' diagnostics and which estimators the support refuses.
    `switch_threshold` fixes Switch-DR's tau (None: tuned); `model` replaces the reward
    model (the tests give the peer and us the same one)."""
    groups = [g for g in groups if g.units > 0]
    if not groups:
        raise ValueError("no logged units")
    if any(g.propensity <= 0 or g.propensity > 1 for g in groups):
        raise ValueError("every logged unit needs a propensity in (0, 1]")
    q = dict(model) if model is not None else reward_model(groups)
    n = sum(g.units for g in groups)
    context_units: dict[str, float] = {}
    for g in groups:
        context_units[g.context] = context_units.get(g.context, 0.0) + g.units
    logged_variants = {(g.context, g.variant) for g in groups} | {("*", g.variant) for g in groups}

    # Support: target mass on a variant never logged in a context (weights cannot see it).
    unsupported: set[str] = set()
    unsupported_share = 0.0
    unmodelled = False
    for x, units in context_units.items():
        for a, p in target_for(target, x).items():
            if p > 0 and (x, a) not in logged_variants:
                unsupported.add(a)
                unsupported_share += units / n * p
                if ("*", a) not in logged_variants:
                    unmodelled = True

    weights = [target_for(target, g.context).get(g.variant, 0.0) / g.propensity for g in groups]
    base = {
        x: sum(p * q.get((x, a), 0.0) for a, p in target_for(target, x).items())
        for x in context_units
    }
    fitted = {i: q.get((g.context, g.variant), 0.0) for i, g in enumerate(groups)}
    zero = {i: 0.0 for i in range(len(groups))}
    w = dict(enumerate(weights))
    weight_sum = sum(g.units * wi for g, wi in zip(groups, weights, strict=True))
    weight_squares = sum(g.units * wi * wi for g, wi in zip(groups, weights, strict=True))
    mean_weight = weight_sum / n

    estimates: dict[str, Estimate | None] = {}
    ipw = _round_moments(groups, {}, w, zero).estimate()
    estimates["ipw"] = ipw
    if weight_sum > 0:
        value = sum(g.reward_sum * wi for g, wi in zip(groups, weights, strict=True)) / weight_sum
        scaled = {i: wi / mean_weight for i, wi in w.items()}
        centred = {i: value for i in w}
        se = _round_moments(groups, {}, scaled, centred).estimate().standard_error
        estimates["snipw"] = Estimate(value, value - Z95 * se, value + Z95 * se, se)
    else:
        estimates["snipw"] = None
    estimates["dm"] = _with_model_variance(
        sum(context_units[x] / n * b for x, b in base.items()),
        groups,
        target,
        base,
        zero,
        context_units,
    )
    dr = _round_moments(groups, base, w, fitted)
    estimates["dr"] = dr.estimate()
    tau, switch = _switch(groups, target, base, w, fitted, context_units, dr, switch_threshold)
    estimates["switch-dr"] = switch
    clipped = sum(g.units * wi for g, wi in zip(groups, weights, strict=True) if wi > tau)

    refused: dict[str, str] = {}
    if unmodelled:
        for name in ESTIMATORS:
            refused[name] = (
                f"the policy sends traffic to {', '.join(sorted(unsupported))}, which no "
                "logged unit saw: nothing in the data says what it earns"
            )
    elif unsupported:
        for name in ("ipw", "snipw"):
            refused[name] = (
                f"the policy sends traffic to {', '.join(sorted(unsupported))} where it was "
                "logged with probability 0: importance weights cannot see that traffic"
            )
    for name in refused:
        estimates[name] = None
    return Evaluation(
        estimates,
        refused,
        Diagnostics(
            units=n,
            effective_sample_size=weight_sum * weight_sum / weight_squares
            if weight_squares
            else 0.0,
            max_weight=max(weights),
            mean_weight=mean_weight,
            clipped_weight_share=clipped / weight_sum if weight_sum else 0.0,
            switch_threshold=tau,
            unsupported=tuple(sorted(unsupported)),
            unsupported_share=unsupported_share,
            least_rewarded=_least_rewarded(groups, target),
        ),
        logged=sum(g.reward_sum for g in groups) / n,
    )


def _with_model_variance(
    value: float,
    groups: Sequence[LoggedGroup],
    target: Target,
    base: Mapping[str, float],
    kept: Mapping[int, float],
    context_units: Mapping[str, float],
) -> Estimate:
    """DM's and Switch-DR's variance, where the reward model carries part of the answer.
    Both are linear in the rewards given who got what: the fitted mean q(x, a) enters with
    beta_xa = (n_x pi(a|x) - sum of the cell's kept weights) / n (n_x pi / n for DM, 0 in
    expectation for DR), a kept unit's own reward with c_i / n, so a unit of cell xa has
    coefficient beta_xa / n_xa + c_i / n and the variance is sum_i coefficient_i^2 s^2_xa,
    plus the contexts' mix, var_i(b(x_i)) / n."""
    n = sum(context_units.values())
    zero = dict.fromkeys(range(len(groups)), 0.0)
    mix = _round_moments(groups, base, zero, zero).estimate().standard_error ** 2
    cells: dict[tuple[str, str], list[float]] = {}
    for i, g in enumerate(groups):
        c = cells.setdefault((g.context, g.variant), [0.0, 0.0, 0.0, 0.0])
        c[0] += g.units
        c[1] += g.reward_sum
        c[2] += g.reward_sum_squares
        c[3] += g.units * kept[i]
    variance = mix
    for i, g in enumerate(groups):
        k, total, squares, corrected = cells[(g.context, g.variant)]
        beta = (
            context_units[g.context] * target_for(target, g.context).get(g.variant, 0.0) - corrected
        ) / n
        mean = total / k
        cell_variance = max(squares - k * mean * mean, 0.0) / max(k - 1.0, 1.0)
        variance += g.units * (beta / k + kept[i] / n) ** 2 * cell_variance
    se = math.sqrt(variance)
    return Estimate(value, value - Z95 * se, value + Z95 * se, se)


def _switch(
    groups: Sequence[LoggedGroup],
    target: Target,
    base: Mapping[str, float],
    w: Mapping[int, float],
    fitted: Mapping[int, float],
    context_units: Mapping[str, float],
    dr: _Moments,
    threshold: float | None,
) -> tuple[float, Estimate]:
    """Switch-DR: DR's correction only where the weight is at most tau, the reward model
    alone above it; tau minimises estimated variance + (estimate - DR)^2 unless given."""
    dr_value = dr.total / dr.n
    best: tuple[float, float, Estimate] | None = None
    for tau in (threshold,) if threshold is not None else SWITCH_THRESHOLDS:
        kept = {i: wi if wi <= tau else 0.0 for i, wi in w.items()}
        moments = _round_moments(groups, base, kept, fitted)
        estimate = _with_model_variance(
            moments.total / moments.n, groups, target, base, kept, context_units
        )
        risk = estimate.standard_error**2 + (estimate.value - dr_value) ** 2
        if best is None or risk < best[0]:
            best = (risk, tau, estimate)
    assert best is not None
    return best[1], best[2]


def _least_rewarded(groups: Sequence[LoggedGroup], target: Target) -> float:
    """The fewest rewarded units (conversions) of any variant the target sends traffic to."""
    rewarded: dict[str, float] = {}
    for g in groups:
        if target_for(target, g.context).get(g.variant, 0.0) > 0:
            rewarded[g.variant] = rewarded.get(g.variant, 0.0) + g.rewarded
    used = {a for x in target for a, p in target[x].items() if p > 0}
    return min((rewarded.get(a, 0.0) for a in used), default=0.0)


DEFAULT_ESTIMATOR = "dr"
MIN_EFFECTIVE_SAMPLE_SIZE = 300.0
MIN_REWARDED = 10.0
# Values are heavy-tailed (a few large orders): the normal interval needs more of them.
MIN_REWARDED_VALUES = 100.0


def min_rewarded(values: bool) -> float:
    return MIN_REWARDED_VALUES if values else MIN_REWARDED


def trustworthy(diagnostics: Diagnostics, *, values: bool = False) -> bool:
    """Whether the intervals can be taken at their word, as benchmarks/ope.py calibrated
    it (docs/STATISTICS.md): all the policy's traffic is supported, the weights leave an
    effective sample of at least MIN_EFFECTIVE_SAMPLE_SIZE units, and every variant the
    policy uses has at least MIN_REWARDED conversions (MIN_REWARDED_VALUES units with a
    value, for value metrics)."""
    return (
        not diagnostics.unsupported
        and diagnostics.effective_sample_size >= MIN_EFFECTIVE_SAMPLE_SIZE
        and diagnostics.least_rewarded >= min_rewarded(values)
    )
