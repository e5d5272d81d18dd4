"""Turning daily rows into sufficient statistics: everything, a lookback window, or
exponentially decayed (discounted Thompson sampling, Raj & Kalyani 2017)."""

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

    def __post_init__(self) -> None:
        if self.window_days is not None and self.window_days < 1:
            raise ValueError("window_days must be at least 1")
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise ValueError("half_life_days must be positive")

    @property
    def active(self) -> bool:
        return self.window_days is not None or self.half_life_days is not None

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
