"""Segments with partial pooling: each segment's posterior is its own data shrunk toward
the variant's overall rate by as much as the segments are seen to agree
(docs/STATISTICS.md, "Segments").

Per variant, segment rates p_i ~ Beta(mu kappa, (1 - mu) kappa) (a beta-binomial
hierarchy). mu is the pooled rate; kappa (how many units of agreement the segments lend
each other) maximises the beta-binomial marginal likelihood of the segments' counts
(parametric empirical Bayes, Morris 1983). Given them, segment i's posterior is
Beta(mu kappa + s_i, (1 - mu) kappa + n_i - s_i); the uncertainty of mu itself is added
to its variance (B_i^2 Var(mu), B_i = kappa / (kappa + n_i): Kass & Steffey 1989) and the
result matched to a Beta by its mean and variance. Segments that agree give a large
kappa and every segment the pooled posterior; segments that differ a small one and each
its own data. One segment is exactly the unsegmented posterior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from mabapi.stats.posterior import (
    BetaPosterior,
    NormalInverseGammaPosterior,
    NormalInverseGammaPrior,
    ValueSummary,
)

FloatArray = npt.NDArray[np.float64]
Pooling = Literal["partial", "none", "full"]

# kappa's search range: 1 (segments share almost nothing) to 10^8 units (all pooled).
KAPPA_MIN = 1.0
KAPPA_MAX = 1e8
_GRID = np.linspace(math.log(KAPPA_MIN), math.log(KAPPA_MAX), 47)


def _log_marginal(log_kappa: float, mu: float, units: FloatArray, successes: FloatArray) -> float:
    kappa = math.exp(log_kappa)
    a, b = mu * kappa, (1.0 - mu) * kappa
    values = special.betaln(a + successes, b + units - successes) - special.betaln(a, b)
    return float(np.sum(values))


def concentration(units: FloatArray, successes: FloatArray, *, mu: float | None = None) -> float:
    """kappa maximising the beta-binomial marginal likelihood of the segments' counts,
    one spread shared by every variant (columns), each variant's mu held at its pooled
    rate: a grid over log kappa, then a bounded refinement around its best point
    (deterministic). KAPPA_MAX when no variant has two segments with data."""
    n = np.atleast_2d(np.asarray(units, dtype=np.float64).T).T
    s = np.atleast_2d(np.asarray(successes, dtype=np.float64).T).T
    columns = []
    for k in range(n.shape[1]):
        keep = n[:, k] > 0
        if keep.sum() >= 2:
            center = (s[keep, k].sum() + 1.0) / (n[keep, k].sum() + 2.0) if mu is None else mu
            columns.append((center, n[keep, k], s[keep, k]))
    if not columns:
        return KAPPA_MAX

    def log_likelihood(log_kappa: float) -> float:
        return sum(_log_marginal(log_kappa, mu, ni, si) for mu, ni, si in columns)

    values = [log_likelihood(x) for x in _GRID]
    best = int(np.argmax(values))
    low = _GRID[max(best - 1, 0)]
    high = _GRID[min(best + 1, len(_GRID) - 1)]
    found = optimize.minimize_scalar(
        lambda x: -log_likelihood(x), bounds=(low, high), method="bounded",
        options={"xatol": 1e-6},
    )  # fmt: skip
    x = float(found.x) if -found.fun >= values[best] else float(_GRID[best])
    # The spread tau^2 = mu (1 - mu) / (kappa + 1) is estimated around an estimated mu:
    # like the sample variance's S - 1, scale it by S / (S - 1) (the REML-type correction
    # for estimating the mean; it matters with few segments, S = 2 doubles tau^2).
    segments = max(len(ni) for _, ni, _ in columns)
    kappa = (math.exp(x) + 1.0) * (segments - 1) / segments - 1.0
    return min(max(kappa, KAPPA_MIN), KAPPA_MAX)


@dataclass(frozen=True, slots=True)
class PooledSegments:
    """One variant's segment posteriors and the pooling behind them."""

    posteriors: tuple[BetaPosterior, ...]
    pooled: BetaPosterior  # all segments together (what an unseen segment gets)
    kappa: float  # inf for "full", 0 for "none"


def _beta_from_moments(mean: float, variance: float) -> BetaPosterior:
    mean = min(max(mean, 1e-12), 1 - 1e-12)
    variance = min(max(variance, 1e-300), mean * (1 - mean) * (1 - 1e-12))
    total = mean * (1.0 - mean) / variance - 1.0
    return BetaPosterior(max(mean * total, 1e-9), max((1.0 - mean) * total, 1e-9))


def segment_posteriors(
    units: Sequence[float] | FloatArray,
    successes: Sequence[float] | FloatArray,
    *,
    pooling: Pooling = "partial",
    prior: tuple[float, float] = (1.0, 1.0),
    traffic: Sequence[float] | FloatArray | None = None,
) -> PooledSegments:
    """Each segment's posterior of one variant's rate, from the segments' counts.

    `traffic`: each segment's share of all units (every variant's). The variant's
    overall rate mu is then the traffic-weighted mean of its segment rates, not its
    units-weighted one: a bandit that sends a variant mostly to the segments it wins
    would otherwise drag mu toward its rate there, and shrink its other segments toward
    it (a feedback loop)."""
    n = np.asarray(units, dtype=np.float64)
    s = np.asarray(successes, dtype=np.float64)
    alpha0, beta0 = prior
    pooled = BetaPosterior(alpha0 + float(s.sum()), beta0 + float(n.sum() - s.sum()))
    if pooling == "full" or len(n) == 1:
        return PooledSegments(tuple(pooled for _ in n), pooled, math.inf)
    if pooling == "none":
        own = tuple(
            BetaPosterior(alpha0 + float(si), beta0 + float(ni - si))
            for ni, si in zip(n, s, strict=True)
        )
        return PooledSegments(own, pooled, 0.0)
    if traffic is None:
        mu = pooled.alpha / (pooled.alpha + pooled.beta)
        mu_variance = mu * (1.0 - mu) / (pooled.alpha + pooled.beta + 1.0)
    else:
        # Each segment's rate, smoothed toward the units-weighted rate (a segment this
        # variant has not been shown in counts at that rate, not at the prior's 1/2).
        w = np.asarray(traffic, dtype=np.float64)
        pooled_rate = pooled.alpha / (pooled.alpha + pooled.beta)
        weight = alpha0 + beta0
        rates = (s + weight * pooled_rate) / (n + weight)
        mu = float(np.dot(w, rates))
        mu_variance = float(np.dot(w**2, rates * (1.0 - rates) / (n + weight + 1.0)))
    kappa = concentration(n, s, mu=mu)
    posteriors = []
    for ni, si in zip(n, s, strict=True):
        a, b = mu * kappa + si, (1.0 - mu) * kappa + ni - si
        mean = a / (a + b)
        conditional = mean * (1.0 - mean) / (a + b + 1.0)
        shrink = kappa / (kappa + ni)
        posteriors.append(_beta_from_moments(mean, conditional + shrink**2 * mu_variance))
    return PooledSegments(tuple(posteriors), pooled, kappa)


def all_variants(
    units: FloatArray, successes: FloatArray, *, pooling: Pooling = "partial"
) -> list[PooledSegments]:
    """Segment posteriors of every variant: `units` and `successes` are (segments,
    variants); under partial pooling one kappa is estimated from all of them."""
    total = units.sum()
    traffic = units.sum(axis=1) / total if total > 0 else None
    return [
        segment_posteriors(units[:, k], successes[:, k], pooling=pooling, traffic=traffic)
        for k in range(units.shape[1])
    ]


# --- Values: the normal-normal hierarchy ---


@dataclass(frozen=True, slots=True)
class PooledValueSegments:
    """One variant's segment posteriors of a mean value, and the pooling behind them."""

    posteriors: tuple[NormalInverseGammaPosterior, ...]
    pooled: NormalInverseGammaPosterior
    between_variance: float  # tau^2: 0 pools fully, inf not at all


def _as_posterior(mean: float, variance: float, units: float) -> NormalInverseGammaPosterior:
    """A NIG whose marginal of the mean is Student-t(max(units, 2) dof) with this location
    and scale^2 = variance (scale^2 = beta / (alpha kappa), kappa = 1)."""
    alpha = max(units, 2.0) / 2.0
    return NormalInverseGammaPosterior(mean, 1.0, alpha, max(variance, 1e-300) * alpha)


def _between_variance(means: FloatArray, errors: FloatArray, mu: float) -> float:
    """tau^2 maximising the normal-normal marginal likelihood of the segment means,
    mean_i ~ N(mu, tau^2 + error_i), on a log grid then refined (0 if the best is at its
    low end: the segments agree)."""
    scale = float(np.median(errors)) or 1.0

    def negative(log_tau2: float) -> float:
        total = math.exp(log_tau2) + errors
        return float(0.5 * np.sum(np.log(total) + (means - mu) ** 2 / total))

    grid = np.log(scale) + np.linspace(-12.0, 12.0, 49)
    values = [negative(x) for x in grid]
    best = int(np.argmin(values))
    if best == 0:
        return 0.0
    found = optimize.minimize_scalar(
        negative, bounds=(grid[best - 1], grid[min(best + 1, len(grid) - 1)]), method="bounded"
    )
    return math.exp(float(found.x) if found.fun <= values[best] else float(grid[best]))


def value_segment_posteriors(
    units: Sequence[float] | FloatArray,
    sums: Sequence[float] | FloatArray,
    squares: Sequence[float] | FloatArray,
    *,
    pooling: Pooling = "partial",
    traffic: Sequence[float] | FloatArray | None = None,
) -> PooledValueSegments:
    """Each segment's posterior of one variant's mean value: segment means drawn from
    N(mu, tau^2), tau^2 by marginal likelihood with the S/(S - 1) correction, each
    segment's mean shrunk by B_i = se_i^2 / (se_i^2 + tau^2) (the normal analogue of the
    conversion model; docs/STATISTICS.md)."""
    n = np.asarray(units, dtype=np.float64)
    total = np.asarray(sums, dtype=np.float64)
    total_squares = np.asarray(squares, dtype=np.float64)
    prior = NormalInverseGammaPrior()

    def own(k: int) -> NormalInverseGammaPosterior:
        summary = ValueSummary(float(n[k]), float(total[k]), float(max(total_squares[k], 0.0)))
        return NormalInverseGammaPosterior.from_summary(summary, prior)

    pooled_summary = ValueSummary(float(n.sum()), float(total.sum()), float(total_squares.sum()))
    pooled = NormalInverseGammaPosterior.from_summary(pooled_summary, prior)
    if pooling == "full" or len(n) == 1:
        return PooledValueSegments(tuple(pooled for _ in n), pooled, 0.0)
    if pooling == "none":
        return PooledValueSegments(tuple(own(k) for k in range(len(n))), pooled, math.inf)
    seen = n > 0
    if seen.sum() < 2:
        return PooledValueSegments(tuple(pooled for _ in n), pooled, 0.0)
    pooled_mean = float(total.sum() / n.sum())
    within = float(
        np.sum(np.maximum(total_squares[seen] - total[seen] ** 2 / n[seen], 0.0))
        / max(float(np.sum(n[seen] - 1.0)), 1.0)
    )
    within = within or float(np.var(total[seen] / n[seen])) or 1.0
    smoothed = (total + 2.0 * pooled_mean) / (n + 2.0)
    weights = np.asarray(traffic, dtype=np.float64) if traffic is not None else n / n.sum()
    mu = float(np.dot(weights, smoothed))
    mu_variance = float(np.dot(weights**2, within / (n + 2.0)))
    means = total[seen] / n[seen]
    errors = within / n[seen]
    segments = int(seen.sum())
    tau2 = _between_variance(means, errors, mu) * segments / (segments - 1)
    posteriors = []
    for k in range(len(n)):
        if n[k] <= 0:
            posteriors.append(_as_posterior(mu, tau2 + mu_variance, 2.0))
            continue
        error = within / n[k]
        shrink = error / (error + tau2) if tau2 > 0 else 1.0
        mean = shrink * mu + (1.0 - shrink) * total[k] / n[k]
        variance = (1.0 - shrink) * error + shrink**2 * mu_variance
        posteriors.append(_as_posterior(float(mean), float(variance), float(n[k])))
    return PooledValueSegments(tuple(posteriors), pooled, tau2)


def all_value_variants(
    units: FloatArray, sums: FloatArray, squares: FloatArray, *, pooling: Pooling = "partial"
) -> list[PooledValueSegments]:
    """`value_segment_posteriors` of every variant ((segments, variants) arrays)."""
    grand = units.sum()
    traffic = units.sum(axis=1) / grand if grand > 0 else None
    return [
        value_segment_posteriors(
            units[:, k], sums[:, k], squares[:, k], pooling=pooling, traffic=traffic
        )
        for k in range(units.shape[1])
    ]
