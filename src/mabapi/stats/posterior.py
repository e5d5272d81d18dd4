"""Sufficient statistics and their conjugate posteriors, as frozen value objects."""

from __future__ import annotations

from dataclasses import dataclass

from scipy import special


@dataclass(frozen=True, slots=True)
class BinomialCounts:
    """What a variant did: `trials` exposures, `successes` of them converted."""

    trials: int
    successes: int

    def __post_init__(self) -> None:
        if self.trials < 0 or self.successes < 0:
            raise ValueError("counts cannot be negative")
        if self.successes > self.trials:
            raise ValueError("successes cannot exceed trials")

    @property
    def failures(self) -> int:
        return self.trials - self.successes

    @property
    def rate(self) -> float | None:
        """The observed rate, or None when there is no data (n == 0 is not 0%)."""
        return self.successes / self.trials if self.trials else None


@dataclass(frozen=True, slots=True)
class BetaPrior:
    """Beta(alpha, beta) prior on a conversion rate; Beta(1, 1) is uniform."""

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError("Beta prior parameters must be positive")


@dataclass(frozen=True, slots=True)
class BetaPosterior:
    """Beta(alpha, beta) posterior of a Bernoulli rate (conjugate update)."""

    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError("Beta parameters must be positive")

    @classmethod
    def from_counts(cls, counts: BinomialCounts, prior: BetaPrior | None = None) -> BetaPosterior:
        prior = prior or BetaPrior()
        return cls(prior.alpha + counts.successes, prior.beta + counts.failures)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def variance(self) -> float:
        total = self.alpha + self.beta
        return self.alpha * self.beta / (total * total * (total + 1.0))

    def quantile(self, probability: float) -> float:
        return float(special.betaincinv(self.alpha, self.beta, probability))

    def credible_interval(self, mass: float = 0.95) -> tuple[float, float]:
        """Equal-tailed interval holding `mass` of the posterior."""
        if not 0.0 < mass < 1.0:
            raise ValueError("mass must lie strictly between 0 and 1")
        tail = (1.0 - mass) / 2.0
        return self.quantile(tail), self.quantile(1.0 - tail)
