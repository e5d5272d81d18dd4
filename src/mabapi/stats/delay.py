"""Late conversions: how much of a recent day's conversions has been reported yet, and
the exposures that reported share stands for (docs/STATISTICS.md, "Late conversions").

A day's conversions arrive over up to L days after exposure. Counting a day d days old
with all its units but only the conversions reported so far biases the rate of recent
days down, and the leader (which holds most recent traffic) most. The correction counts
each recent day's units as effective exposures in proportion to the share of its
conversions expected to have arrived, F(age): n_eff = n * F(age). Successes over n_eff
estimate the rate without bias when arrivals follow F, and the posterior's weight shrinks
to what has actually been observed.

F is given (`conversion_delay_cdf`) or learnt from the data with the chain-ladder
method (Mack 1993): from each day's cumulative conversions as known at ages 0, 1, ... L
(the "development triangle"), the development factor from age a to a + 1 is the ratio of
the column sums over the days seen at both ages. Days not yet seen at a + 1 are censored,
not counted as zero, so young days never drag the curve down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mabapi.stats.allocation import FloatArray


@dataclass(frozen=True, slots=True)
class DelayCurve:
    """cdf[a]: the share of a day's conversions reported by age a (0 = the exposure day
    itself), for a = 0..L; cdf[L] is 1 and ages beyond L are complete."""

    cdf: tuple[float, ...]

    def __post_init__(self) -> None:
        values = np.asarray(self.cdf, dtype=np.float64)
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError("a delay curve needs finite values")
        if np.any(values <= 0) or np.any(values > 1) or np.any(np.diff(values) < 0):
            raise ValueError("a delay curve rises from above 0 to 1")
        if values[-1] != 1.0:
            raise ValueError("a delay curve ends at 1 (every conversion arrives by age L)")

    @classmethod
    def none(cls) -> DelayCurve:
        return cls((1.0,))

    @property
    def days(self) -> int:
        return len(self.cdf) - 1

    def share(self, ages: FloatArray) -> FloatArray:
        """F(age) per age; 1 at ages >= L, and for the (impossible) negative ages."""
        cdf = np.asarray(self.cdf, dtype=np.float64)
        index = np.clip(np.asarray(ages, dtype=np.int64), 0, self.days)
        result: FloatArray = np.where(np.asarray(ages) < 0, 1.0, cdf[index])
        return result


def chain_ladder(triangle: Mapping[Any, Sequence[float]], days: int) -> DelayCurve:
    """The delay curve learnt from `triangle`: per exposure day (any key), cumulative
    conversions known at ages 0, 1, ... (as many as that day has been observed for).

    Development factor f_a = sum C(a + 1) / sum C(a) over the days observed at both ages
    with C(a) > 0; F(a) = 1 / (f_a f_{a+1} ... f_{L-1}). A factor with no data is 1 (no
    correction claimed for what was never seen), and each F is kept within (0, 1].
    """
    factors = np.ones(days)
    for age in range(days):
        before = after = 0.0
        for cumulative in triangle.values():
            if len(cumulative) > age + 1 and cumulative[age] > 0:
                before += cumulative[age]
                after += max(cumulative[age + 1], cumulative[age])
        if before > 0:
            factors[age] = after / before
    cdf = np.ones(days + 1)
    for age in range(days - 1, -1, -1):
        cdf[age] = cdf[age + 1] / factors[age]
    cdf = np.clip(cdf, 1e-6, 1.0)
    return DelayCurve(tuple(float(x) for x in np.maximum.accumulate(cdf)))


def days_learnt_from(triangle: Mapping[Any, Sequence[float]]) -> int:
    """How many exposure days of `triangle` tell the chain ladder anything: observed at
    two ages or more, with conversions known before the last of them."""
    return sum(
        1
        for cumulative in triangle.values()
        if len(cumulative) > 1 and any(count > 0 for count in cumulative[:-1])
    )


def effective_units(units: FloatArray, successes: FloatArray, shares: FloatArray) -> FloatArray:
    """n * F, never below the successes already seen (a day that converted faster than
    the curve says has at least its observed conversions' worth of exposures)."""
    result: FloatArray = np.maximum(units * shares, np.minimum(successes, units))
    return result
