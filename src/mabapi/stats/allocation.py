"""Probability that each variant is best (and the expected best value), by quadrature.

P(i best) = integral f_i(x) * prod_{j != i} F_j(x) dx   (Thompson sampling's traffic
share: Chapelle & Li 2011, Scott 2010), and E[max_j theta_j] = sum_i integral
x f_i(x) prod_{j != i} F_j(x) dx, which gives the expected loss of each choice.

Both are computed by composite Gauss-Legendre quadrature in log space over the only range
where the integrand is not negligible (docs/STATISTICS.md): [max_j q_j(eps), max_j q_j(1-eps)].
Panel breakpoints are placed inside every posterior, so a narrow posterior (10^7 trials)
beside a wide one (10^3) is still resolved. Beta posteriors (conversions) and Student-t
marginals of Normal-Inverse-Gamma posteriors (values) are supported; "lower is better"
is the mirrored problem (1 - theta for rates, -theta for values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from mabapi.stats.posterior import BetaPosterior, NormalInverseGammaPosterior, Posterior

ALGORITHM_VERSION = "exact-3"

FloatArray = npt.NDArray[np.float64]

_TAIL = 1e-13  # posterior mass left outside the integration range, per variant
_NODES_PER_PANEL = 12
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_NODES_PER_PANEL)
# Standard-normal quantiles at which panel breakpoints sit inside each Beta posterior.
_BREAKPOINT_Z = np.array([-6.0, -4.5, -3.5, -2.5, -1.75, -1.0, -0.4, 0.2, 0.8, 1.5, 2.5, 3.5,
                          4.5, 6.0])  # fmt: skip
# Tail probabilities at which breakpoints sit inside each Student-t marginal.
_BREAKPOINT_P = np.array([1e-11, 1e-9, 1e-7, 1e-5, 1e-4, 1e-3, 0.01, 0.04, 0.1, 0.2, 0.3, 0.4,
                          0.5])  # fmt: skip
_BREAKPOINT_P = np.concatenate([_BREAKPOINT_P, 1.0 - _BREAKPOINT_P[:-1]])


class _BetaArms:
    """K Beta distributions, vectorised."""

    def __init__(self, alphas: FloatArray, betas: FloatArray) -> None:
        self.alphas, self.betas = alphas[:, None], betas[:, None]
        self.a, self.b = alphas, betas

    def ppf(self, probability: float) -> FloatArray:
        result: FloatArray = special.betaincinv(self.a, self.b, probability)
        return result

    def spread(self) -> FloatArray:
        total = self.a + self.b
        result: FloatArray = np.sqrt(self.a * self.b / (total * total * (total + 1.0)))
        return result

    def inner_breakpoints(self) -> FloatArray:
        means = self.a / (self.a + self.b)
        result: FloatArray = (means[:, None] + self.spread()[:, None] * _BREAKPOINT_Z).ravel()
        return result

    def logpdf(self, x: FloatArray) -> FloatArray:
        result: FloatArray = special.xlogy(self.alphas - 1.0, x) + special.xlog1py(
            self.betas - 1.0, -x
        )
        result -= special.betaln(self.alphas, self.betas)
        return result

    def logcdf(self, x: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            result: FloatArray = np.log(special.betainc(self.alphas, self.betas, x))
        return result


class _StudentTArms:
    """K location-scale Student-t distributions, vectorised."""

    def __init__(self, df: FloatArray, loc: FloatArray, scale: FloatArray) -> None:
        self.d, self.m, self.s = df, loc, scale
        self.df, self.loc, self.scale = df[:, None], loc[:, None], scale[:, None]
        self._log_norm = (
            special.gammaln((self.df + 1.0) / 2.0)
            - special.gammaln(self.df / 2.0)
            - 0.5 * np.log(self.df * np.pi)
            - np.log(self.scale)
        )

    def ppf(self, probability: float) -> FloatArray:
        result: FloatArray = self.m + self.s * special.stdtrit(self.d, probability)
        return result

    def spread(self) -> FloatArray:
        # Half the central 68% range: the standard deviation's analogue for any df.
        result: FloatArray = self.s * special.stdtrit(self.d, 0.8413447460685429)
        return result

    def inner_breakpoints(self) -> FloatArray:
        quantiles = special.stdtrit(self.d[:, None], _BREAKPOINT_P[None, :])
        result: FloatArray = (self.m[:, None] + self.s[:, None] * quantiles).ravel()
        return result

    def logpdf(self, x: FloatArray) -> FloatArray:
        z = (x - self.loc) / self.scale
        result: FloatArray = self._log_norm - (self.df + 1.0) / 2.0 * np.log1p(z * z / self.df)
        return result

    def logcdf(self, x: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            result: FloatArray = np.log(special.stdtr(self.df, (x - self.loc) / self.scale))
        return result


_Arms = _BetaArms | _StudentTArms


def _arms(posteriors: Sequence[Posterior], higher_is_better: bool) -> tuple[_Arms, float]:
    """Vectorised arms oriented so that larger is better, and the sign that undoes it."""
    if all(isinstance(p, BetaPosterior) for p in posteriors):
        alphas = np.array([p.alpha for p in posteriors], dtype=np.float64)
        betas = np.array([p.beta for p in posteriors], dtype=np.float64)
        if higher_is_better:
            return _BetaArms(alphas, betas), 1.0
        return _BetaArms(betas, alphas), -1.0  # 1 - theta ~ Beta(beta, alpha)
    if all(isinstance(p, NormalInverseGammaPosterior) for p in posteriors):
        nig = [p for p in posteriors if isinstance(p, NormalInverseGammaPosterior)]
        df = np.array([p.degrees_of_freedom for p in nig])
        loc = np.array([p.mu for p in nig])
        scale = np.array([p.scale for p in nig])
        sign = 1.0 if higher_is_better else -1.0
        return _StudentTArms(df, sign * loc, scale), sign
    raise TypeError("posteriors must all be Beta or all Normal-Inverse-Gamma")


def _edges(arms: _Arms) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Panel edges, and which arms have (all but 2 x _TAIL of) their mass inside them."""
    lows, highs = arms.ppf(_TAIL), arms.ppf(1.0 - _TAIL)
    lower, upper = float(lows.max()), float(highs.max())
    inside = (lows >= lower) & (highs <= upper)
    if not upper > lower:
        return np.array([lower, lower]), inside
    points = np.concatenate([arms.inner_breakpoints(), lows, highs, [lower, upper]])
    points = np.unique(np.clip(points[np.isfinite(points)], lower, upper))
    # Only posteriors that overlap the range set the resolution; breakpoints far closer
    # together than the narrowest of them add cost, not accuracy.
    relevant = (highs > lower) & (lows < upper)
    spread = arms.spread()
    min_gap = 0.25 * float(spread[relevant].min()) if relevant.any() else 0.0
    kept = [points[0]]
    for point in points[1:-1]:
        if point - kept[-1] >= min_gap:
            kept.append(point)
    kept.append(points[-1])
    return np.array(kept), inside


@dataclass(frozen=True, slots=True)
class BestArm:
    """P(each variant is best) and E[best value] (in the metric's own units)."""

    probabilities: FloatArray
    expected_best: float


def best_arm(posteriors: Sequence[Posterior], *, higher_is_better: bool = True) -> BestArm:
    """Probability that each variant is best, and the expected value of the best one.

    Deterministic; identical posteriors get identical probabilities (ties split evenly).
    With higher_is_better=False, "best" is the lowest value (e.g. bounce rate).
    """
    count = len(posteriors)
    if count == 0:
        return BestArm(np.zeros(0), float("nan"))
    arms, sign = _arms(posteriors, higher_is_better)
    edges, inside = _edges(arms)
    if count == 1 or edges[-1] <= edges[0]:
        means = _oriented_means(posteriors, higher_is_better)
        return BestArm(np.full(count, 1.0 / count), _unorient(float(means.max()), sign, arms))
    left, right = edges[:-1], edges[1:]
    half = (right - left) / 2.0
    x = (((left + right) / 2.0)[:, None] + half[:, None] * _GL_NODES[None, :]).ravel()
    w = (half[:, None] * _GL_WEIGHTS[None, :]).ravel()
    log_cdf = arms.logcdf(x[None, :])
    log_pdf = arms.logpdf(x[None, :])
    # With 10^6+ pseudo-counts, log pdf = (a-1) log x + (b-1) log(1-x) - betaln(a, b) adds
    # terms near 1e6 that cancel: about 1e-9 relative error, the same factor at every node.
    # An arm whose whole mass lies in the range integrates to 1, so divide that factor out.
    if inside.any():
        mass = np.exp(log_pdf[inside]) @ w
        log_pdf[inside] -= np.log(mass)[:, None]
    # Sum of log cdfs of every OTHER variant, by prefix + suffix sums: no -inf - -inf.
    zeros = np.zeros((1, x.size))
    prefix = np.vstack([zeros, np.cumsum(log_cdf, axis=0)[:-1]])
    suffix = np.vstack([np.cumsum(log_cdf[::-1], axis=0)[::-1][1:], zeros])
    integrand = np.exp(log_pdf + prefix + suffix)
    raw: FloatArray = integrand @ w
    total = float(raw.sum())
    if not np.isfinite(total) or total <= 0.0:
        # Posteriors squeezed within a few ulps of 0 or 1 (e.g. 5 successes in 10^15
        # trials, lower is better) leave quadrature nothing to resolve in float64.
        return _monte_carlo_best(posteriors, higher_is_better=higher_is_better)
    expected_best = float((integrand @ (w * x)).sum()) / total
    return BestArm(raw / total, _unorient(expected_best, sign, arms))


FALLBACK_DRAWS = 200_000
FALLBACK_SEED = 20_261_128


def _monte_carlo_best(posteriors: Sequence[Posterior], *, higher_is_better: bool) -> BestArm:
    """The fallback when quadrature cannot resolve the posteriors: seeded draws (fixed
    seed, so the answer is still reproducible), sampled in the metric's own units, where
    numpy's Beta and Student-t samplers keep full precision near 0 and 1."""
    rng = np.random.default_rng(FALLBACK_SEED)
    if all(isinstance(p, BetaPosterior) for p in posteriors):
        beta = [p for p in posteriors if isinstance(p, BetaPosterior)]
        draws = np.stack([rng.beta(p.alpha, p.beta, FALLBACK_DRAWS) for p in beta])
    else:
        nig = [p for p in posteriors if isinstance(p, NormalInverseGammaPosterior)]
        draws = np.stack(
            [p.mu + p.scale * rng.standard_t(p.degrees_of_freedom, FALLBACK_DRAWS) for p in nig]
        )
    best = draws.argmax(axis=0) if higher_is_better else draws.argmin(axis=0)
    counts = np.bincount(best, minlength=len(posteriors)).astype(np.float64)
    chosen = draws.max(axis=0) if higher_is_better else draws.min(axis=0)
    return BestArm(counts / counts.sum(), float(chosen.mean()))


def _oriented_means(posteriors: Sequence[Posterior], higher_is_better: bool) -> FloatArray:
    means = np.array([p.mean for p in posteriors])
    if higher_is_better:
        return means
    if isinstance(posteriors[0], BetaPosterior):
        result: FloatArray = 1.0 - means
        return result
    return -means


def _unorient(value: float, sign: float, arms: _Arms) -> float:
    """Map a value of the oriented problem back to the metric's own units."""
    if sign > 0:
        return value
    return 1.0 - value if isinstance(arms, _BetaArms) else -value


def probability_best(
    posteriors: Sequence[Posterior], *, higher_is_better: bool = True
) -> FloatArray:
    """P(variant i is best) for each i, summing to 1 (error < 1e-9 where betainc allows)."""
    if len(posteriors) == 1:
        return np.ones(1)
    return best_arm(posteriors, higher_is_better=higher_is_better).probabilities


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
