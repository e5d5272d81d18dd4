"""Segments with partial pooling: each segment's posteriors are its own data shrunk
toward the variants' overall rates by as much as the segments are seen to agree
(docs/STATISTICS.md, "Segments").

The model: a segment's vector of variant rates (or mean values) theta_i is drawn around
the variants' overall rates mu, theta_i ~ N(mu, Sigma), with a compound-symmetric
spread Sigma = D^1/2 (own I + shared 11') D^1/2 (D: each variant's p (1 - p), or its
within-segment variance for values). `shared` is what a segment moves every variant by
(a segment that converts better overall); `own` is what each variant moves by alone
(a segment where the winner differs). `shared` may be negative, down to -own / K: winners
that swap make a segment's variants move in opposite directions, and then what a segment
shows about the variant it was shown most also tells about the others. Both are
estimated by maximising the marginal likelihood of the segments' observed rates,
y_i ~ N(mu, Sigma + V_i) with V_i their sampling variances (parametric empirical Bayes,
Morris 1983), then scaled by S / (S - 1) for having estimated mu. Given them, a
segment's posterior is the normal-normal one, mean mu + Sigma (Sigma + V_i)^-1 (y_i - mu),
its variance widened by the uncertainty of mu (Kass & Steffey 1989), and each variant's
marginal is matched to a Beta (or a Student-t) by its mean and variance, so P(best) stays
exact. Segments that agree give Sigma = 0 and every segment the pooled posteriors;
segments that differ a large Sigma and each its own data. One segment is exactly the
unsegmented posterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize

from mabapi.stats.posterior import (
    BetaPosterior,
    NormalInverseGammaPosterior,
    NormalInverseGammaPrior,
    ValueSummary,
)

FloatArray = npt.NDArray[np.float64]
Pooling = Literal["partial", "none", "full"]

# log(own)'s search range, relative to D: e^-25 pools completely, e^5 not at all.
_LOG_OWN = (-25.0, 5.0)
# log(shared / own + 1 / K): shared from just above -own / K to e^6 times own.
_LOG_RATIO = (-12.0, 6.0)


@dataclass(frozen=True, slots=True)
class Spread:
    """Sigma = D^1/2 (own I + shared 11') D^1/2, relative to D."""

    own: float
    shared: float

    def matrix(self, scale: FloatArray) -> FloatArray:
        root = np.sqrt(scale)
        k = len(scale)
        return np.outer(root, root) * (self.own * np.eye(k) + self.shared)


NO_SPREAD = Spread(0.0, 0.0)


def log_likelihood(spread: Spread, deviations: FloatArray, noise: FloatArray) -> float:
    """The marginal log likelihood (up to a constant) of the segments' deviations from
    mu, in units of D: z_i ~ N(0, own I + shared 11' + W_i), W_i = diag(noise_i); a cell
    without data (noise = inf) drops out. By Sherman-Morrison, O(segments x variants)."""
    seen = np.isfinite(noise)
    inverse = np.where(seen, 1.0 / (spread.own + np.where(seen, noise, 0.0)), 0.0)
    z = np.where(seen, deviations, 0.0)
    log_e = np.where(seen, np.log(np.where(seen, spread.own + noise, 1.0)), 0.0)
    total = inverse.sum(axis=1)
    weighted = (z * inverse).sum(axis=1)
    factor = 1.0 + spread.shared * total
    log_det = log_e.sum(axis=1) + np.log(factor)
    quadratic = (z * z * inverse).sum(axis=1) - spread.shared * weighted**2 / factor
    return float(-0.5 * np.sum(log_det + quadratic))


def _spread(x: FloatArray, variants: int) -> Spread:
    own = math.exp(float(x[0]))
    return Spread(own, own * (math.exp(float(x[1])) - 1.0 / variants))


def fit_spread(deviations: FloatArray, noise: FloatArray) -> Spread:
    """own and shared maximising `log_likelihood`: a coarse grid, then a bounded
    quasi-Newton refinement from its best point (deterministic), then the S / (S - 1)
    correction. NO_SPREAD when fewer than two segments have data."""
    rows = np.isfinite(noise).any(axis=1)
    segments = int(rows.sum())
    if segments < 2:
        return NO_SPREAD
    z, w = deviations[rows], noise[rows]
    variants = z.shape[1]

    def negative(x: FloatArray) -> float:
        return -log_likelihood(_spread(x, variants), z, w)

    grid = [
        np.array([own, ratio])
        for own in np.linspace(*_LOG_OWN, 13)
        for ratio in (_LOG_RATIO[0], -math.log(variants), 0.0, 2.0, _LOG_RATIO[1])
    ]
    start = min(grid, key=negative)
    found = optimize.minimize(negative, start, method="L-BFGS-B", bounds=[_LOG_OWN, _LOG_RATIO])
    best = found.x if found.fun <= negative(start) else start
    fitted = _spread(best, variants)
    correction = segments / (segments - 1)
    return Spread(fitted.own * correction, fitted.shared * correction)


def posterior_moments(
    spread: Spread, deviations: FloatArray, noise: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Each segment's posterior mean deviation, its variance (units of D) and how much it
    was shrunk (1 - the diagonal of Sigma (Sigma + V_i)^-1: 1 keeps nothing of its own
    data), all (segments, variants), from the precision form: a cell without data has
    no precision of its own."""
    variants = deviations.shape[1]
    own = max(spread.own, 1e-300)
    prior_precision = (np.eye(variants) - spread.shared / (own + variants * spread.shared)) / own
    data_precision = np.where(np.isfinite(noise), 1.0 / noise, 0.0)
    precision = prior_precision[None] + data_precision[:, :, None] * np.eye(variants)[None]
    covariance = np.linalg.inv(precision)
    means = np.einsum("ijk,ik->ij", covariance, data_precision * np.nan_to_num(deviations))
    gain = covariance * data_precision[:, None, :]  # Sigma (Sigma + V)^-1 = C V^-1
    shrink = 1.0 - np.einsum("ijj->ij", gain)
    return means, np.einsum("ijj->ij", covariance), shrink


@dataclass(frozen=True, slots=True)
class Shrunk:
    """Every cell's posterior mean and variance on the data's own scale."""

    spread: Spread
    means: FloatArray  # (segments, variants)
    variances: FloatArray


def shrink_cells(
    observed: FloatArray,
    noise: FloatArray,
    *,
    mu: FloatArray,
    mu_variance: FloatArray,
    scale: FloatArray,
) -> Shrunk | None:
    """The model on (segments, variants) cells: `observed` means (any value where unseen),
    their sampling variances `noise` (inf where unseen), the centres mu with Var(mu), D =
    `scale`. None when the segments show no spread (every cell gets the pooled answer)."""
    root = np.sqrt(scale)
    seen = np.isfinite(noise)
    deviations = np.where(seen, (np.where(seen, observed, 0.0) - mu) / root, 0.0)
    relative = np.where(seen, noise / scale, np.inf)
    spread = fit_spread(deviations, relative)
    if spread == NO_SPREAD:
        return None
    means, variances, shrink = posterior_moments(spread, deviations, relative)
    return Shrunk(spread, mu + means * root, variances * scale + shrink**2 * mu_variance)


# --- Conversions ---


@dataclass(frozen=True, slots=True)
class PooledSegments:
    """One variant's segment posteriors and the pooling behind them."""

    posteriors: tuple[BetaPosterior, ...]
    pooled: BetaPosterior  # all segments together (what an unseen segment gets)
    spread: Spread | None  # None for "full" and "none"


def _beta_from_moments(mean: float, variance: float) -> BetaPosterior:
    mean = min(max(mean, 1e-12), 1 - 1e-12)
    variance = min(max(variance, 1e-300), mean * (1 - mean) * (1 - 1e-12))
    total = mean * (1.0 - mean) / variance - 1.0
    return BetaPosterior(max(mean * total, 1e-9), max((1.0 - mean) * total, 1e-9))


def _traffic(units: FloatArray) -> FloatArray:
    """Each segment's share of all units (every variant's)."""
    total = float(units.sum())
    rows = units.shape[0]
    return units.sum(axis=1) / total if total > 0 else np.full(rows, 1.0 / rows)


def all_variants(
    units: FloatArray, successes: FloatArray, *, pooling: Pooling = "partial"
) -> list[PooledSegments]:
    """Every variant's segment posteriors of its conversion rate, from (segments,
    variants) counts, under a Beta(1, 1) prior.

    mu, a variant's overall rate, is the traffic-weighted mean of its segment rates
    (each smoothed toward the variant's pooled rate by two units), not the units-weighted
    one: a bandit that shows a variant mostly where it wins would otherwise drag mu
    toward its rate there and shrink its other segments toward it (a feedback loop).
    A cell's sampling variance is q (1 - q) / n, q the variant's pooled rate scaled by
    the segment's overall level (not the cell's own rate: 0 successes in 20 units is not
    a precise 0)."""
    n = np.asarray(units, dtype=np.float64)
    s = np.minimum(np.asarray(successes, dtype=np.float64), n)
    segments, variants = n.shape
    pooled = [
        BetaPosterior(1.0 + float(s[:, k].sum()), 1.0 + float(n[:, k].sum() - s[:, k].sum()))
        for k in range(variants)
    ]
    if pooling == "none":
        return [
            PooledSegments(
                tuple(
                    BetaPosterior(1.0 + s[i, k], 1.0 + n[i, k] - s[i, k]) for i in range(segments)
                ),
                pooled[k],
                None,
            )
            for k in range(variants)
        ]
    if pooling == "full" or segments == 1:
        return [PooledSegments((p,) * segments, p, None) for p in pooled]
    rate = np.array([p.alpha / (p.alpha + p.beta) for p in pooled])
    weights = _traffic(n)
    smoothed = (s + 2.0 * rate) / (n + 2.0)
    mu = weights @ smoothed
    mu_variance = weights**2 @ (smoothed * (1.0 - smoothed) / (n + 3.0))
    overall = (s.sum() + 1.0) / (n.sum() + 2.0)
    level = (s.sum(axis=1) + 20.0) / (n.sum(axis=1) + 20.0 / overall) / overall
    q = np.clip(np.outer(level, rate), 1e-9, 1.0 - 1e-9)
    safe = np.where(n > 0, n, 1.0)
    noise = np.where(n > 0, q * (1.0 - q) / safe, np.inf)
    cells = shrink_cells(s / safe, noise, mu=mu, mu_variance=mu_variance, scale=mu * (1.0 - mu))
    if cells is None:
        return [PooledSegments((p,) * segments, p, NO_SPREAD) for p in pooled]
    return [
        PooledSegments(
            tuple(
                _beta_from_moments(cells.means[i, k], cells.variances[i, k])
                for i in range(segments)
            ),
            pooled[k],
            cells.spread,
        )
        for k in range(variants)
    ]


# --- Values ---


@dataclass(frozen=True, slots=True)
class PooledValueSegments:
    """One variant's segment posteriors of a mean value, and the pooling behind them."""

    posteriors: tuple[NormalInverseGammaPosterior, ...]
    pooled: NormalInverseGammaPosterior
    spread: Spread | None


def _as_posterior(mean: float, variance: float, units: float) -> NormalInverseGammaPosterior:
    """A NIG whose marginal of the mean is Student-t(max(units, 2) dof) with this location
    and scale^2 = variance (scale^2 = beta / (alpha kappa), kappa = 1)."""
    alpha = max(units, 2.0) / 2.0
    return NormalInverseGammaPosterior(mean, 1.0, alpha, max(variance, 1e-300) * alpha)


def all_value_variants(
    units: FloatArray, sums: FloatArray, squares: FloatArray, *, pooling: Pooling = "partial"
) -> list[PooledValueSegments]:
    """Every variant's segment posteriors of its mean value ((segments, variants)
    summaries): the same model with D a variant's within-segment variance (pooled over
    segments) and V = that variance / n; mu traffic-weighted as for conversions."""
    n = np.asarray(units, dtype=np.float64)
    total = np.asarray(sums, dtype=np.float64)
    total_squares = np.maximum(np.asarray(squares, dtype=np.float64), 0.0)
    segments, variants = n.shape
    prior = NormalInverseGammaPrior()

    def posterior(rows: slice | int, k: int) -> NormalInverseGammaPosterior:
        summary = ValueSummary(
            float(np.sum(n[rows, k])),
            float(np.sum(total[rows, k])),
            float(np.sum(total_squares[rows, k])),
        )
        return NormalInverseGammaPosterior.from_summary(summary, prior)

    pooled = [posterior(slice(None), k) for k in range(variants)]
    if pooling == "none":
        return [
            PooledValueSegments(tuple(posterior(i, k) for i in range(segments)), pooled[k], None)
            for k in range(variants)
        ]
    if pooling == "full" or segments == 1:
        return [PooledValueSegments((p,) * segments, p, None) for p in pooled]
    seen = n > 0
    safe = np.where(seen, n, 1.0)
    grand = total.sum(axis=0) / np.maximum(n.sum(axis=0), 1.0)
    spread_within = np.maximum(total_squares - total**2 / safe, 0.0).sum(axis=0)
    within = spread_within / np.maximum((n - 1.0).clip(min=0.0).sum(axis=0), 1.0)
    fallback = float(np.var(total[seen] / n[seen])) if seen.any() else 0.0
    within = np.where(within > 0, within, fallback or 1.0)
    weights = _traffic(n)
    smoothed = (total + 2.0 * grand) / (n + 2.0)
    mu = weights @ smoothed
    mu_variance = weights**2 @ (within / (n + 2.0))
    noise = np.where(seen, within / safe, np.inf)
    cells = shrink_cells(total / safe, noise, mu=mu, mu_variance=mu_variance, scale=within)
    if cells is None:
        return [PooledValueSegments((p,) * segments, p, NO_SPREAD) for p in pooled]
    return [
        PooledValueSegments(
            tuple(
                _as_posterior(
                    float(cells.means[i, k]), float(cells.variances[i, k]), float(n[i, k])
                )
                for i in range(segments)
            ),
            pooled[k],
            cells.spread,
        )
        for k in range(variants)
    ]
