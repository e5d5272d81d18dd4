"""Guardrails: the posterior probability that a variant harms a second metric by more
than a margin, and the sequential guard that keeps daily checks from tripping by chance.

Harm beyond a relative margin m (docs/STATISTICS.md, "Guardrails"):

    lower is better:   theta_v > theta_c + m |theta_c|
    higher is better:  theta_v < theta_c - m |theta_c|

Both sides are monotone maps of theta_c, so P(harm) is one expectation over one posterior
of a distribution function of the other, E_outer[F_inner(h(theta_outer))], computed by
composite Gauss-Legendre quadrature on the outer posterior's normal scores (the wider
posterior is the outer one, so the inner function is the smooth one).

The guard: a breach also needs P(any harm) >= 1 - a_k at the k-th daily check, where a_k
is the nominal level of a group-sequential boundary (Lan & DeMets 1983) that spends
alpha = 1 - probability over the checks: 60% of it evenly over the first week (harm is
caught early), the rest as 0.4 alpha (1 - 7/k) after it, so at most alpha in total over
any number of checks. Boundaries come from the Armitage-McPherson-Rowe recursion for
equally informative looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import special

from mabapi.stats.decision import sample_posteriors
from mabapi.stats.posterior import (
    BetaPosterior,
    Posterior,
)

FloatArray = npt.NDArray[np.float64]

# The share of alpha spent evenly over the first FIRST_WEEK checks; the rest after.
FIRST_WEEK = 7
FIRST_WEEK_SHARE = 0.6
# Checks beyond this keep the last boundary (99.2% of alpha is spent by then).
MAX_LOOKS = 366

_PANELS = 48
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(8)
_Z_RANGE = 8.5


def _score_grid() -> tuple[FloatArray, FloatArray]:
    edges = np.linspace(-_Z_RANGE, _Z_RANGE, _PANELS + 1)
    half = np.diff(edges) / 2.0
    mid = (edges[:-1] + edges[1:]) / 2.0
    z = (mid[:, None] + half[:, None] * _NODES[None, :]).ravel()
    w = (half[:, None] * _WEIGHTS[None, :]).ravel() * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return z, w / w.sum()


_Z, _W = _score_grid()
_U = special.ndtr(_Z)


def _quantiles(posterior: Posterior, u: FloatArray) -> FloatArray:
    if isinstance(posterior, BetaPosterior):
        return np.asarray(special.betaincinv(posterior.alpha, posterior.beta, u), dtype=np.float64)
    df = posterior.degrees_of_freedom
    return np.asarray(posterior.mu + posterior.scale * special.stdtrit(df, u), dtype=np.float64)


def _cdf(posterior: Posterior, x: FloatArray) -> FloatArray:
    if isinstance(posterior, BetaPosterior):
        return np.asarray(
            special.betainc(posterior.alpha, posterior.beta, np.clip(x, 0.0, 1.0)),
            dtype=np.float64,
        )
    t = (x - posterior.mu) / posterior.scale
    return np.asarray(special.stdtr(posterior.degrees_of_freedom, t), dtype=np.float64)


def _spread(posterior: Posterior) -> float:
    if isinstance(posterior, BetaPosterior):
        a, b = posterior.alpha, posterior.beta
        return math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return posterior.scale


def _harm_line(x: FloatArray, margin: float, sign: float) -> FloatArray:
    """theta_c + sign * m |theta_c|: the variant's value at which harm begins."""
    return x + sign * margin * np.abs(x)


def _inverse_harm_line(y: FloatArray, margin: float, sign: float) -> FloatArray:
    """The inverse of `_harm_line` (monotone: its slope is 1 +- m > 0)."""
    positive = y / (1.0 + sign * margin)
    negative = y / (1.0 - sign * margin)
    return np.where(y >= 0, positive, negative)


def probability_harm(
    variant: Posterior, control: Posterior, *, margin: float, higher_is_better: bool
) -> float:
    """P(the variant is worse than the control by more than `margin` of the control's
    value), under independent posteriors."""
    if not 0.0 <= margin < 1.0:
        raise ValueError("margin must lie in [0, 1)")
    # Harm: theta_v beyond the line l(theta_c) = theta_c + s m |theta_c|, on the bad side.
    sign = -1.0 if higher_is_better else 1.0
    if _spread(control) >= _spread(variant) * (1.0 + margin):
        line = _harm_line(_quantiles(control, _U), margin, sign)
        below = _cdf(variant, line)
        inner = below if higher_is_better else 1.0 - below
    else:
        edge = _inverse_harm_line(_quantiles(variant, _U), margin, sign)
        below = _cdf(control, edge)
        # lower is better: theta_c < l^-1(theta_v); higher is better: theta_c > l^-1(theta_v)
        inner = 1.0 - below if higher_is_better else below
    return float(np.clip(np.dot(_W, inner), 0.0, 1.0))


def _spent(alpha: float, look: int) -> float:
    """Alpha spent by the `look`-th check (0 before the first)."""
    if look <= 0:
        return 0.0
    early = FIRST_WEEK_SHARE * min(look, FIRST_WEEK) / FIRST_WEEK
    late = (1.0 - FIRST_WEEK_SHARE) * max(0.0, 1.0 - FIRST_WEEK / look)
    return alpha * (early + late)


@lru_cache(maxsize=64)
def _boundaries(alpha: float, looks: int) -> tuple[float, ...]:
    """z-boundaries b_1..b_looks with P(Z_j < b_j for j < k, Z_k >= b_k) equal to the
    alpha spent at check k, Z_k = S_k / sqrt(k), S_k a sum of k standard normals
    (Armitage, McPherson & Rowe 1969: the density of S_k on a grid, truncated at each
    boundary and convolved with the next increment)."""
    step = 0.05
    width = 8.0
    grid = np.arange(-width * (math.sqrt(looks) + 1), width * (math.sqrt(looks) + 1), step)
    kernel_x = np.arange(-width, width + step / 2, step)
    kernel = np.exp(-0.5 * kernel_x**2) / math.sqrt(2 * math.pi) * step
    density = np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi)
    result: list[float] = []
    for look in range(1, looks + 1):
        if look > 1:
            density = np.convolve(density, kernel, mode="same")
        target = _spent(alpha, look) - _spent(alpha, look - 1)
        # Mass at or above each grid point (trapezoid rule).
        tail = np.cumsum(density[::-1])[::-1] * step - 0.5 * step * density
        index = min(int(np.searchsorted(-tail, -target)), len(grid) - 1)
        # Linear interpolation between grid points for a smooth boundary.
        if 0 < index < len(grid):
            above, below = tail[index], tail[index - 1]
            fraction = (below - target) / (below - above) if below > above else 0.0
            threshold = grid[index - 1] + fraction * step
        else:
            threshold = grid[index]
        result.append(float(threshold / math.sqrt(look)))
        density = np.where(grid >= threshold, 0.0, density)
    return tuple(result)


def guard_boundary(alpha: float, look: int) -> float:
    """The z-value P(any harm) must reach at the `look`-th daily check (1-based)."""
    if look < 1:
        raise ValueError("looks are counted from 1")
    capped = min(look, MAX_LOOKS)
    # Computed in blocks, so a growing experiment does not recompute every day.
    block = 32
    while block < capped:
        block *= 2
    return _boundaries(round(alpha, 12), min(block, MAX_LOOKS))[capped - 1]


def guard_level(alpha: float, look: int) -> float:
    """P(any harm) the guard requires at the `look`-th check: Phi(boundary)."""
    return float(special.ndtr(guard_boundary(alpha, look)))


@dataclass(frozen=True, slots=True)
class GuardrailRule:
    margin: float  # max_relative_harm
    probability: float  # P(harm beyond the margin) that breaches
    higher_is_better: bool
    min_units: int  # per variant and control, before any check
    sequential: bool = True  # False: no guard (peeking uncorrected; for comparisons only)


@dataclass(frozen=True, slots=True)
class GuardrailCheck:
    probability_harm: float  # P(harm beyond the margin)
    probability_any_harm: float  # P(harm at all)
    required_any_harm: float  # what the sequential guard asks of it at this check
    look: int
    breached: bool


def check(
    variant: Posterior,
    control: Posterior,
    *,
    rule: GuardrailRule,
    look: int,
    units: tuple[float, float],
) -> GuardrailCheck:
    """One daily check of one variant against the control. `units`: (variant's,
    control's) units so far; `look`: 1 for the first day with data, 2 for the next..."""
    beyond = probability_harm(
        variant, control, margin=rule.margin, higher_is_better=rule.higher_is_better
    )
    any_harm = (
        beyond
        if rule.margin == 0.0
        else probability_harm(variant, control, margin=0.0, higher_is_better=rule.higher_is_better)
    )
    required = guard_level(1.0 - rule.probability, max(look, 1)) if rule.sequential else 0.0
    enough = min(units) >= rule.min_units
    breached = enough and beyond >= rule.probability and any_harm >= required
    return GuardrailCheck(beyond, any_harm, required, look, breached)


def relative_difference(
    variant: Posterior, control: Posterior, *, seed: int, draws: int = 20_000
) -> tuple[float, float, float] | None:
    """(theta_v - theta_c) / |theta_c|: its mean and 95% interval from `draws` posterior
    draws (seeded: reproducible). None when the control's value can be 0 throughout."""
    samples = sample_posteriors([variant, control], draws, np.random.default_rng(seed))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (samples[0] - samples[1]) / np.abs(samples[1])
    ratio = ratio[np.isfinite(ratio)]
    if not ratio.size:
        return None
    low, high = np.quantile(ratio, [0.025, 0.975])
    return float(np.mean(ratio)), float(low), float(high)
