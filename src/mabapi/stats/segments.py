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

from mabapi.stats.posterior import BetaPosterior

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
