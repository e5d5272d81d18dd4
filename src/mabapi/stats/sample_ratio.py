"""Sample-ratio checks: did each variant get the units the split gave it? Against the
allocations served (reported daily rows) or the propensities stored with each unit
(real time)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from mabapi.stats.allocation import FloatArray


@dataclass(frozen=True, slots=True)
class SampleRatioCheck:
    observed: FloatArray
    expected: FloatArray
    chi_square: float
    p_value: float
    mismatch: bool


def sample_ratio_mismatch(
    units: FloatArray, served_shares: FloatArray, *, threshold: float = 0.001
) -> SampleRatioCheck | None:
    """Chi-square test of observed units against the shares actually served, period by
    period: expected_v = sum_p units_p * share_{v,p} (docs/STATISTICS.md). Arrays are
    (variants, periods); periods with no served shares must be left out by the caller.
    None when there is too little to test (fewer than 2 variants or no units)."""
    if units.shape[0] < 2 or units.sum() <= 0:
        return None
    period_units = units.sum(axis=0)
    expected = (served_shares * period_units[None, :]).sum(axis=1)
    observed = units.sum(axis=1)
    keep = expected > 0
    if keep.sum() < 2:
        return None
    # Units on variants the allocation gave 0% are a mismatch by themselves.
    if (observed[~keep] > 0).any():
        return SampleRatioCheck(observed, expected, float("inf"), 0.0, True)
    chi_square, p_value = scipy_stats.chisquare(
        observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()
    )
    return SampleRatioCheck(
        observed, expected, float(chi_square), float(p_value), bool(p_value < threshold)
    )


# A variant is tested only when no single unit carries more than this share of its
# variance (Lindeberg's condition): tiny propensities make the sum heavy-tailed.
LARGEST_TERM_SHARE = 0.01


def propensity_ratio_check(
    units: FloatArray,
    inverse_propensities: FloatArray,
    variances: FloatArray,
    largest_inverse: FloatArray,
    *,
    threshold: float = 0.001,
) -> SampleRatioCheck | None:
    """Sample-ratio check from the propensity stored with each unit (real-time mode, where
    the split changes within a day and browser keys record no allocation).

    Per variant v: n_v units, T_v = sum 1/p_u over its units, V_v = sum (1 - p_u)/p_u^2
    and m_v = max 1/p_u. If assignment followed the propensities, T_v is the
    Horvitz-Thompson estimate of N, the number of units, however the split moved. The
    score statistic z_v = (T_v - N) / sqrt(V_v N / T_v) (for a constant p it is the
    binomial (n_v - N p) / sqrt(N p (1 - p))) is about standard normal where no unit
    dominates: v is tested when m_v^2 <= LARGEST_TERM_SHARE V_v. The p-value is the
    smallest two-sided one times the number of variants tested (Bonferroni). `expected`
    is N n_v / T_v; `chi_square` is sum z_v^2 over those tested. None when no variant
    can be tested (docs/STATISTICS.md)."""
    total = float(units.sum())
    testable = (
        (units > 0)
        & (variances > 0)
        & (largest_inverse**2 <= LARGEST_TERM_SHARE * np.maximum(variances, 0.0))
    )
    if units.shape[0] < 2 or total <= 0 or not testable.any():
        return None
    score_variance = variances[testable] * total / inverse_propensities[testable]
    z = (inverse_propensities[testable] - total) / np.sqrt(score_variance)
    p_value = min(1.0, float(testable.sum()) * 2.0 * float(scipy_stats.norm.sf(np.abs(z).max())))
    expected = np.where(
        inverse_propensities > 0, total * units / np.maximum(inverse_propensities, 1e-300), 0.0
    )
    return SampleRatioCheck(
        units.astype(float), expected, float((z**2).sum()), p_value, bool(p_value < threshold)
    )
