"""A variant's sums, and the one way a posterior is built from them.

Every answer (allocation, summary, guardrails, segments' overall view, the simulator)
reads a variant's data as the same four sums and turns them into a posterior here, so
the statistics cannot differ between two answers about the same data."""

from __future__ import annotations

from dataclasses import dataclass

from mabapi.stats.posterior import (
    BetaPosterior,
    BetaPrior,
    BinomialCounts,
    NormalInverseGammaPosterior,
    NormalInverseGammaPrior,
    Posterior,
    ValueSummary,
)


@dataclass(frozen=True, slots=True)
class Sums:
    """Units (impressions), successes, and the sum and sum of squares of per-unit values;
    fractional when old days are down-weighted or recent ones corrected for late
    conversions."""

    impressions: float
    successes: float
    value_sum: float = 0.0
    value_sum_squares: float = 0.0

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.impressions + other.impressions,
            self.successes + other.successes,
            self.value_sum + other.value_sum,
            self.value_sum_squares + other.value_sum_squares,
        )

    def mean(self, *, values: bool) -> float | None:
        """Successes (or value) per unit; None without units."""
        if not self.impressions:
            return None
        return (self.value_sum if values else self.successes) / self.impressions


EMPTY = Sums(0.0, 0.0, 0.0, 0.0)


def posterior_of(
    sums: Sums,
    *,
    values: bool,
    beta_prior: BetaPrior | None = None,
    value_prior: NormalInverseGammaPrior | None = None,
) -> Posterior:
    """Beta(alpha + s, beta + n - s) for conversions; the Normal-Inverse-Gamma update of
    (n, sum, sum of squares) for values (docs/STATISTICS.md, "Posteriors"). Successes are
    capped at the units, and the sum of squares raised to sum^2 / n where rounding left it
    below (Cauchy-Schwarz), so corrected or down-weighted sums stay a valid input."""
    n = max(float(sums.impressions), 0.0)
    if values:
        total = float(sums.value_sum) if n else 0.0
        squares = max(float(sums.value_sum_squares), total * total / n) if n else 0.0
        return NormalInverseGammaPosterior.from_summary(
            ValueSummary(n, total, squares), value_prior or NormalInverseGammaPrior()
        )
    successes = min(max(float(sums.successes), 0.0), n)
    return BetaPosterior.from_counts(BinomialCounts(n, successes), beta_prior or BetaPrior())
