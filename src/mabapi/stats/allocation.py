"""Probability that each variant is best, and turning it into traffic percentages.

P(i best) = integral f_i(x) * prod_{j != i} F_j(x) dx  (Thompson sampling's traffic share;
Chapelle & Li 2011, Scott 2010). Computed by composite Gauss-Legendre quadrature in log
space over the only range where the integrand is not negligible (STATISTICS.md):
[max_j q_j(eps), max_j q_j(1 - eps)]. Panel breakpoints are placed at quantiles of every
variant, so a narrow posterior (10^7 trials) beside a wide one (10^3) is still resolved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import special

from mabapi.stats.posterior import BetaPosterior

ALGORITHM = "thompson"
# Bumped whenever a change could alter a returned number; stored with every snapshot.
ALGORITHM_VERSION = "thompson-exact-1"

_TAIL = 1e-13  # mass left outside the integration range, per variant
_NODES_PER_PANEL = 12
# Standard-normal quantiles used to place panel breakpoints inside each posterior.
_BREAKPOINT_Z = np.array([-6.0, -4.5, -3.5, -2.5, -1.75, -1.0, -0.4, 0.2, 0.8, 1.5, 2.5, 3.5,
                          4.5, 6.0])  # fmt: skip
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_NODES_PER_PANEL)

FloatArray = npt.NDArray[np.float64]


def _log_beta_pdf(x: FloatArray, alpha: FloatArray, beta: FloatArray) -> FloatArray:
    logpdf: FloatArray = (
        special.xlogy(alpha - 1.0, x)
        + special.xlog1py(beta - 1.0, -x)
        - special.betaln(alpha, beta)
    )
    return logpdf


def _breakpoints(posteriors: Sequence[BetaPosterior]) -> FloatArray:
    alphas = np.array([p.alpha for p in posteriors])
    betas = np.array([p.beta for p in posteriors])
    lows = special.betaincinv(alphas, betas, _TAIL)
    highs = special.betaincinv(alphas, betas, 1.0 - _TAIL)
    lower, upper = float(lows.max()), float(highs.max())
    if not upper > lower:  # every posterior is a point mass at the same place
        return np.array([lower, lower])
    means = alphas / (alphas + betas)
    sds = np.sqrt(alphas * betas / ((alphas + betas) ** 2 * (alphas + betas + 1.0)))
    inner = (means[:, None] + sds[:, None] * _BREAKPOINT_Z[None, :]).ravel()
    points = np.unique(np.clip(np.concatenate([inner, lows, highs, [lower, upper]]), lower, upper))
    # Only posteriors that overlap the range set the resolution; merge breakpoints that
    # are far closer together than the narrowest of them (they add cost, not accuracy).
    relevant = (highs > lower) & (lows < upper)
    min_gap = 0.25 * float(sds[relevant].min()) if relevant.any() else 0.0
    kept = [points[0]]
    for point in points[1:-1]:
        if point - kept[-1] >= min_gap:
            kept.append(point)
    kept.append(points[-1])
    return np.array(kept)


def probability_best(posteriors: Sequence[BetaPosterior]) -> FloatArray:
    """P(variant i has the highest rate) for each i, summing to 1 (error < 1e-9).

    Deterministic. Identical posteriors get identical probabilities (the computation is
    the same for each), so ties split evenly.
    """
    count = len(posteriors)
    if count == 0:
        return np.zeros(0)
    if count == 1:
        return np.ones(1)
    edges = _breakpoints(posteriors)
    if edges[-1] <= edges[0]:
        return np.full(count, 1.0 / count)
    left, right = edges[:-1], edges[1:]
    half = (right - left) / 2.0
    nodes = ((left + right) / 2.0)[:, None] + half[:, None] * _GL_NODES[None, :]
    weights = half[:, None] * _GL_WEIGHTS[None, :]
    x = nodes.ravel()
    w = weights.ravel()

    alphas = np.array([p.alpha for p in posteriors])[:, None]
    betas = np.array([p.beta for p in posteriors])[:, None]
    with np.errstate(divide="ignore"):
        log_cdf = np.log(special.betainc(alphas, betas, x[None, :]))
    log_pdf = _log_beta_pdf(x[None, :], alphas, betas)
    # Sum of log cdfs of every OTHER variant, by prefix + suffix sums: no -inf - -inf.
    zeros = np.zeros((1, x.size))
    prefix = np.vstack([zeros, np.cumsum(log_cdf, axis=0)[:-1]])
    suffix = np.vstack([np.cumsum(log_cdf[::-1], axis=0)[::-1][1:], zeros])
    others = prefix + suffix
    integrand = np.exp(log_pdf + others)
    raw: FloatArray = integrand @ w
    total = float(raw.sum())
    if not np.isfinite(total) or total <= 0.0:
        raise ArithmeticError("probability-of-best integration failed")
    result: FloatArray = raw / total
    return result


def largest_remainder_percentages(shares: Sequence[float], decimals: int = 1) -> list[float]:
    """Round shares (summing to 1) to percentages with `decimals` that sum to exactly 100.

    Hamilton's largest-remainder method: floor every share in units of 10^-decimals %,
    then give the leftover units to the largest remainders (earlier variants win ties).
    """
    if len(shares) == 0:
        return []
    units_total = 100 * 10**decimals
    scaled = np.asarray(shares, dtype=np.float64) / float(np.sum(shares)) * units_total
    units = np.floor(scaled).astype(np.int64)
    leftover = int(units_total - units.sum())
    order = sorted(range(len(shares)), key=lambda i: (-(scaled[i] - units[i]), i))
    for index in order[:leftover]:
        units[index] += 1
    return [round(int(u) / 10**decimals, decimals) for u in units]
