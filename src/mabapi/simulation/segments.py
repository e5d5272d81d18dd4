"""Segments simulated: daily traffic split over segments, each segment's allocation from
its own posteriors under a pooling ("partial", "none", "full"), computed with the same
`stats.policies.allocate` the service runs. Regret is counted per segment against that
segment's best variant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mabapi.stats.policies import ArmData, Controls, PolicyConfig, allocate
from mabapi.stats.segments import Pooling, all_variants


@dataclass(frozen=True, slots=True)
class SegmentScenario:
    shares: tuple[float, ...]  # each segment's share of the traffic
    rates: tuple[tuple[float, ...], ...]  # per segment, each variant's conversion rate
    days: int = 30
    units_per_day: int = 5000

    def __post_init__(self) -> None:
        if len(self.shares) != len(self.rates):
            raise ValueError("one row of rates per segment")
        if abs(sum(self.shares) - 1.0) > 1e-9:
            raise ValueError("segment shares must add up to 1")
        if len({len(row) for row in self.rates}) != 1:
            raise ValueError("every segment needs a rate for every variant")


def zipf_shares(segments: int, exponent: float = 1.0) -> tuple[float, ...]:
    """Segment sizes from a Zipf law: the k-th largest proportional to 1 / k^exponent."""
    weights = 1.0 / np.arange(1, segments + 1) ** exponent
    return tuple(float(w) for w in weights / weights.sum())


def _shares(units: np.ndarray, successes: np.ndarray, posteriors: Sequence[object]) -> np.ndarray:
    arms = [
        ArmData(posterior=p, units=int(n), successes=int(s), mean=float(s / n) if n else 0.0)  # type: ignore[arg-type]
        for p, n, s in zip(posteriors, units, successes, strict=True)
    ]
    shares, _, _ = allocate(
        arms,
        config=PolicyConfig(),
        controls=Controls(),
        active=[True] * len(arms),
        days_of_data=1,
    )
    return np.asarray(shares, dtype=np.float64)


def run(scenario: SegmentScenario, pooling: Pooling, seed: int) -> float:
    """Expected regret over the run (conversions lost against each segment's best)."""
    rng = np.random.default_rng(seed)
    rates = np.array(scenario.rates)
    segments, arms = rates.shape
    best = rates.max(axis=1)
    units = np.zeros((segments, arms))
    successes = np.zeros((segments, arms))
    regret = 0.0
    for _ in range(scenario.days):
        by_arm = all_variants(units, successes, pooling=pooling)
        arriving = rng.multinomial(scenario.units_per_day, scenario.shares)
        pooled_shares = None
        for i in range(segments):
            if pooling == "full":  # one allocation for every segment
                if pooled_shares is None:
                    pooled_shares = _shares(
                        units.sum(axis=0), successes.sum(axis=0), [b.pooled for b in by_arm]
                    )
                shares = pooled_shares
            else:
                shares = _shares(units[i], successes[i], [b.posteriors[i] for b in by_arm])
            served = rng.multinomial(arriving[i], shares / shares.sum())
            converted = rng.binomial(served, rates[i])
            regret += float(np.dot(served, best[i] - rates[i]))
            units[i] += served
            successes[i] += converted
    return regret
