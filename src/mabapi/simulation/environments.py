"""Environments: what the arms truly do each day (unknown to the policies)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One day's results per arm: successes, and value sums for value metrics."""

    successes: IntArray
    value_sum: FloatArray
    value_sum_squares: FloatArray


@dataclass(frozen=True)
class Environment:
    """Arms with conversion rates, optionally a log-normal value per conversion, a switch
    of rates on one day, and weekly seasonality.

    rates: conversion rate per arm; switch_rates from switch_day on (0-based day).
    value_log_mean / value_log_sigma: log-normal order value per conversion (value arms);
    the per-unit value is 0 for units that do not convert.
    weekly_amplitude: rates multiplied by 1 + a sin(2 pi day / 7) (all arms alike).
    """

    rates: tuple[float, ...]
    switch_day: int | None = None
    switch_rates: tuple[float, ...] | None = None
    value_log_mean: tuple[float, ...] | None = None
    value_log_sigma: float = 0.5
    weekly_amplitude: float = 0.0
    # Every arm's rate multiplied by this on days 5 and 6 of each week (0-based day % 7).
    weekend_factor: float = 1.0
    name: str = field(default="scenario")

    def __post_init__(self) -> None:
        if len(self.rates) < 1 or any(not 0.0 <= r <= 1.0 for r in self.rates):
            raise ValueError("rates must be probabilities, at least one arm")
        if (self.switch_day is None) != (self.switch_rates is None):
            raise ValueError("give switch_day and switch_rates together")
        if self.switch_rates is not None and len(self.switch_rates) != len(self.rates):
            raise ValueError("switch_rates needs one rate per arm")
        if self.value_log_mean is not None and len(self.value_log_mean) != len(self.rates):
            raise ValueError("value_log_mean needs one value per arm")
        if not 0.0 <= self.weekly_amplitude < 1.0:
            raise ValueError("weekly_amplitude must lie in [0, 1)")
        if not self.weekend_factor > 0.0:
            raise ValueError("weekend_factor must be positive")

    @property
    def arms(self) -> int:
        return len(self.rates)

    @property
    def is_value(self) -> bool:
        return self.value_log_mean is not None

    def rates_on(self, day: int) -> FloatArray:
        base = self.rates
        if self.switch_day is not None and self.switch_rates is not None:
            base = self.switch_rates if day >= self.switch_day else self.rates
        season = 1.0 + self.weekly_amplitude * np.sin(2.0 * np.pi * day / 7.0)
        if day % 7 in (5, 6):
            season *= self.weekend_factor
        result: FloatArray = np.clip(np.asarray(base, dtype=np.float64) * season, 0.0, 1.0)
        return result

    def expected_reward(self, day: int) -> FloatArray:
        """Expected reward per unit: the rate, or rate x mean order value."""
        rates = self.rates_on(day)
        if self.value_log_mean is None:
            return rates
        means = np.exp(np.asarray(self.value_log_mean) + self.value_log_sigma**2 / 2.0)
        result: FloatArray = rates * means
        return result

    def outcome(self, day: int, units: IntArray, rng: np.random.Generator) -> Outcome:
        successes = rng.binomial(units, self.rates_on(day)).astype(np.int64)
        value_sum = np.zeros(self.arms)
        value_squares = np.zeros(self.arms)
        if self.value_log_mean is not None:
            for arm, buyers in enumerate(successes):
                if buyers:
                    values = rng.lognormal(self.value_log_mean[arm], self.value_log_sigma, buyers)
                    value_sum[arm] = values.sum()
                    value_squares[arm] = (values * values).sum()
        return Outcome(successes, value_sum, value_squares)
