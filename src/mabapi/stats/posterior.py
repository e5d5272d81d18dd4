"""Sufficient statistics and their conjugate posteriors, as frozen value objects."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special


@dataclass(frozen=True, slots=True)
class BinomialCounts:
    """What a variant did: `trials` exposures, `successes` of them converted."""

    trials: float  # fractional when old days are down-weighted (discounting)
    successes: float

    def __post_init__(self) -> None:
        if self.trials < 0 or self.successes < 0:
            raise ValueError("counts cannot be negative")
        if self.successes > self.trials:
            raise ValueError("successes cannot exceed trials")

    @property
    def failures(self) -> float:
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


@dataclass(frozen=True, slots=True)
class ValueSummary:
    """Sufficient statistics of per-unit values: count, sum and sum of squares.

    Units that produced nothing count with value 0 (revenue per visitor, not per buyer).
    """

    count: float
    total: float
    total_squares: float

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count cannot be negative")
        if self.total_squares < 0:
            raise ValueError("sum of squares cannot be negative")
        # Cauchy-Schwarz: sum(x^2) >= sum(x)^2 / n (with a little room for rounding).
        if self.count and self.total_squares < self.total**2 / self.count * (1 - 1e-9) - 1e-9:
            raise ValueError("sum of squares is smaller than sum^2 / count: impossible")
        if self.count == 0 and (self.total != 0 or self.total_squares != 0):
            raise ValueError("values without units: count is 0 but sums are not")

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def centred_squares(self) -> float:
        """sum((x - mean)^2), guarded against negative rounding error."""
        if not self.count:
            return 0.0
        return max(self.total_squares - self.total**2 / self.count, 0.0)


@dataclass(frozen=True, slots=True)
class NormalInverseGammaPrior:
    """NIG(mu0, kappa0, alpha0, beta0) prior on (mean, variance) of per-unit values.

    The default is weakly informative (one pseudo-unit at 0, InvGamma(1, 1) variance):
    Jeffreys/reference priors are reported to do worse for Gaussian Thompson sampling
    (docs/STATISTICS.md, "Posteriors").
    """

    mu: float = 0.0
    kappa: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if not (self.kappa > 0 and self.alpha > 0 and self.beta > 0):
            raise ValueError("kappa, alpha and beta of the NIG prior must be positive")


@dataclass(frozen=True, slots=True)
class NormalInverseGammaPosterior:
    """Posterior of a Gaussian mean with unknown variance (Murphy 2007, "Conjugate
    Bayesian analysis of the Gaussian distribution", eqs. 85-89).

    The marginal posterior of the mean is Student-t with 2*alpha degrees of freedom,
    location mu and squared scale beta / (alpha * kappa) (eq. 90).
    """

    mu: float
    kappa: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if not (self.kappa > 0 and self.alpha > 0 and self.beta > 0):
            raise ValueError("kappa, alpha and beta must be positive")

    @classmethod
    def from_summary(
        cls, summary: ValueSummary, prior: NormalInverseGammaPrior | None = None
    ) -> NormalInverseGammaPosterior:
        prior = prior or NormalInverseGammaPrior()
        n = summary.count
        if n == 0:
            return cls(prior.mu, prior.kappa, prior.alpha, prior.beta)
        mean = summary.total / n
        kappa = prior.kappa + n
        return cls(
            mu=(prior.kappa * prior.mu + summary.total) / kappa,
            kappa=kappa,
            alpha=prior.alpha + n / 2.0,
            beta=prior.beta
            + 0.5 * summary.centred_squares
            + prior.kappa * n * (mean - prior.mu) ** 2 / (2.0 * kappa),
        )

    @property
    def degrees_of_freedom(self) -> float:
        return 2.0 * self.alpha

    @property
    def scale(self) -> float:
        return math.sqrt(self.beta / (self.alpha * self.kappa))

    @property
    def mean(self) -> float:
        return self.mu

    def quantile(self, probability: float) -> float:
        return self.mu + self.scale * float(special.stdtrit(self.degrees_of_freedom, probability))

    def credible_interval(self, mass: float = 0.95) -> tuple[float, float]:
        if not 0.0 < mass < 1.0:
            raise ValueError("mass must lie strictly between 0 and 1")
        tail = (1.0 - mass) / 2.0
        return self.quantile(tail), self.quantile(1.0 - tail)


Posterior = BetaPosterior | NormalInverseGammaPosterior


def density_curves(
    posteriors: list[Posterior], points: int = 160, mass: float = 0.9999
) -> tuple[list[float], list[list[float]]]:
    """The posterior densities on one shared grid, for plotting them on one chart.

    The grid spans every posterior's central `mass` interval (so a narrow posterior next
    to a wide one is still drawn), and each density is evaluated there: Beta by its
    closed form (log space, scipy's betaln), the value posterior as its Student-t
    marginal for the mean (Murphy 2007, "Conjugate Bayesian analysis of the Gaussian
    distribution", eq. 110).
    """
    tail = (1.0 - mass) / 2.0
    low = min(p.quantile(tail) for p in posteriors)
    high = max(p.quantile(1.0 - tail) for p in posteriors)
    if not high > low:
        high = low + 1e-9
    step = (high - low) / (points - 1)
    grid = [low + i * step for i in range(points)]
    curves = [[_density(p, x) for x in grid] for p in posteriors]
    return grid, curves


def _density(posterior: Posterior, x: float) -> float:
    if isinstance(posterior, BetaPosterior):
        if not 0.0 < x < 1.0:
            return 0.0
        log_pdf = (
            (posterior.alpha - 1.0) * math.log(x)
            + (posterior.beta - 1.0) * math.log1p(-x)
            - float(special.betaln(posterior.alpha, posterior.beta))
        )
        return math.exp(log_pdf)
    df, scale = posterior.degrees_of_freedom, posterior.scale
    z = (x - posterior.mu) / scale
    log_pdf = (
        float(special.gammaln((df + 1.0) / 2.0))
        - float(special.gammaln(df / 2.0))
        - 0.5 * math.log(df * math.pi)
        - math.log(scale)
        - (df + 1.0) / 2.0 * math.log1p(z * z / df)
    )
    return math.exp(log_pdf)
