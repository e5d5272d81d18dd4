"""Turning daily rows into sufficient statistics: everything, a lookback window,
exponentially decayed (discounted Thompson sampling, Raj & Kalyani 2017), or everything
since the last change the data show (a GLR change-point test, Besson et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mabapi.stats.allocation import FloatArray


@dataclass(frozen=True, slots=True)
class Forgetting:
    """Optional forgetting of old data for drifting rates (docs/STATISTICS.md, "Forgetting
    for drifting rates").

    window_days: only the last W days count. half_life_days: a day d days before the
    planned day weighs 0.5^((d - 1) / h), i.e. discount g = 0.5^(1/h) per day, applied to
    EVERY variant (discounting only the played arm is a known bug). Both may be combined.
    """

    window_days: int | None = None
    half_life_days: float | None = None
    # Forget only when a change is detected: data before the last change point is dropped.
    auto: bool = False

    def __post_init__(self) -> None:
        if self.window_days is not None and self.window_days < 1:
            raise ValueError("window_days must be at least 1")
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise ValueError("half_life_days must be positive")

    @property
    def active(self) -> bool:
        return self.window_days is not None or self.half_life_days is not None or self.auto

    def horizon_days(self) -> int | None:
        """How far back data can still matter (weights below 1e-12 are dropped)."""
        horizons = []
        if self.window_days is not None:
            horizons.append(self.window_days)
        if self.half_life_days is not None:
            horizons.append(int(np.ceil(self.half_life_days * 40)) + 1)  # 2^-40 < 1e-12
        return min(horizons) if horizons else None

    def weights(self, ages_days: FloatArray) -> FloatArray:
        """Weight of rows `ages_days` days before the planned day (age 1 = the day before)."""
        weights = np.ones_like(ages_days, dtype=np.float64)
        if self.window_days is not None:
            weights = np.where(ages_days <= self.window_days, weights, 0.0)
        if self.half_life_days is not None:
            weights = weights * np.power(0.5, (ages_days - 1.0) / self.half_life_days)
        return weights


# The false-alarm budget of the change-point test over an experiment's whole life.
CHANGE_DELTA = 0.01


def _bernoulli_kl(p: FloatArray, q: FloatArray) -> FloatArray:
    """kl(p, q) = p log(p / q) + (1 - p) log((1 - p) / (1 - q)), with 0 log 0 = 0."""
    eps = 1e-15
    q = np.clip(q, eps, 1 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(np.clip(p, eps, 1) / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log(np.clip(1 - p, eps, 1) / (1 - q)), 0.0)
    result: FloatArray = a + b
    return result


# Days a segment needs before its weekday pattern is estimated and divided out.
WEEK = 7


def weekday_factors(units: FloatArray, successes: FloatArray) -> FloatArray:
    """Per day of (days, arms) data: that weekday's pooled rate (all arms) over the whole
    period's, days taken in 7-day cycles from the first. 1 where unknown."""
    days = units.shape[0]
    cycle = np.arange(days) % WEEK
    total_rate = successes.sum() / units.sum() if units.sum() > 0 else 0.0
    factors = np.ones(WEEK)
    if total_rate > 0:
        for weekday in range(WEEK):
            n = units[cycle == weekday].sum()
            s = successes[cycle == weekday].sum()
            if n > 0 and s > 0:
                factors[weekday] = (s / n) / total_rate
    result: FloatArray = factors[cycle]
    return result


def segment_start(units: FloatArray, successes: FloatArray, delta: float = CHANGE_DELTA) -> int:
    """The first day (index) of the current stationary segment of daily data (days, arms).

    A Bernoulli GLR change-point test per arm (Besson, Kaufmann, Maillard & Seznec 2022,
    "Efficient change-point detection for tackling piecewise-stationary bandits", JMLR
    23(77)), run day by day as the data arrived: after day t, for every split tau of the
    current segment [start, t], GLR(tau) = n1 kl(p1, p) + n2 kl(p2, p) (p1, p2 the rates
    before and after tau, p the segment's); a change is declared when the largest exceeds
    beta(n) = log(3 K n^(3/2) / delta), n the arm's units in the segment (their threshold,
    with delta shared over the K arms), and the segment restarts at the best split.

    Weekly seasonality is divided out first: once the segment spans a week, each day's
    successes are divided by its weekday's factor, the pooled rate of all arms on that
    weekday over the segment's (a multiplicative day-of-week effect common to every arm,
    as in classical seasonal adjustment by ratio to the mean). A pattern that moves every
    arm alike (weekends) is then no change; a step in one arm's rate (a swap) is spread
    over every weekday and stays one.
    Deterministic: the same rows give the same segment.
    """
    days, arms = units.shape
    start = 0
    for t in range(1, days):
        window_units = units[start : t + 1]
        window_successes = successes[start : t + 1]
        if window_units.shape[0] >= WEEK:
            factors = weekday_factors(window_units, window_successes)
            window_successes = np.minimum(window_successes / factors[:, None], window_units)
        n = np.cumsum(window_units, axis=0)
        s = np.cumsum(window_successes, axis=0)
        total_n, total_s = n[-1], s[-1]
        n1, s1 = n[:-1], s[:-1]
        n2, s2 = total_n - n1, total_s - s1
        with np.errstate(divide="ignore", invalid="ignore"):
            pooled = np.where(total_n > 0, total_s / total_n, 0.0)
            p1 = np.where(n1 > 0, s1 / n1, 0.0)
            p2 = np.where(n2 > 0, s2 / n2, 0.0)
        glr = n1 * _bernoulli_kl(p1, pooled) + n2 * _bernoulli_kl(p2, pooled)
        glr = np.where((n1 > 0) & (n2 > 0), glr, 0.0)
        threshold = np.log(3.0 * arms * np.power(np.maximum(total_n, 1.0), 1.5) / delta)
        excess = glr - threshold  # (splits, arms)
        if excess.size and excess.max() > 0:
            split, _ = np.unravel_index(int(np.argmax(excess)), excess.shape)
            start = start + int(split) + 1
    return start
