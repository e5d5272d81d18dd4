"""Normal-Inverse-Gamma posteriors for value metrics, checked by direct simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mabapi.stats.posterior import (
    NormalInverseGammaPosterior,
    NormalInverseGammaPrior,
    ValueSummary,
)


def summary_of(values: np.ndarray) -> ValueSummary:
    return ValueSummary(values.size, float(values.sum()), float((values**2).sum()))


class TestValueSummary:
    def test_impossible_sums_are_refused(self) -> None:
        with pytest.raises(ValueError, match="impossible"):
            ValueSummary(10, 100.0, 10.0)  # sum^2/n = 1000 > 10
        with pytest.raises(ValueError, match="count is 0"):
            ValueSummary(0, 1.0, 1.0)

    def test_mean_and_centred_squares(self) -> None:
        values = np.array([1.0, 2.0, 3.0, 6.0])
        summary = summary_of(values)
        assert summary.mean == 3.0
        assert summary.centred_squares == pytest.approx(((values - 3.0) ** 2).sum())
        assert ValueSummary(0, 0.0, 0.0).mean is None


class TestNormalInverseGamma:
    def test_update_matches_murphy_2007(self) -> None:
        prior = NormalInverseGammaPrior(mu=1.0, kappa=2.0, alpha=3.0, beta=4.0)
        values = np.array([2.0, 4.0, 4.5, 7.0, 1.0])
        n, mean = values.size, values.mean()
        posterior = NormalInverseGammaPosterior.from_summary(summary_of(values), prior)
        assert posterior.kappa == 2.0 + n
        assert posterior.mu == pytest.approx((2.0 * 1.0 + n * mean) / (2.0 + n))
        assert posterior.alpha == 3.0 + n / 2
        expected_beta = (
            4.0 + 0.5 * ((values - mean) ** 2).sum() + 2.0 * n * (mean - 1.0) ** 2 / (2 * (2 + n))
        )
        assert posterior.beta == pytest.approx(expected_beta)

    def test_no_data_is_the_prior(self) -> None:
        prior = NormalInverseGammaPrior(0.5, 1.0, 2.0, 3.0)
        posterior = NormalInverseGammaPosterior.from_summary(ValueSummary(0, 0, 0), prior)
        assert (posterior.mu, posterior.kappa, posterior.alpha, posterior.beta) == (
            0.5,
            1.0,
            2.0,
            3.0,
        )

    def test_marginal_of_the_mean_is_student_t(self) -> None:
        """Sample sigma^2 ~ InvGamma(alpha, beta), mu ~ N(m, sigma^2 / kappa) and compare the
        quantiles of mu with the closed-form Student-t marginal."""
        posterior = NormalInverseGammaPosterior(mu=2.0, kappa=5.0, alpha=3.0, beta=6.0)
        rng = np.random.default_rng(3)
        variance = stats.invgamma.rvs(3.0, scale=6.0, size=400_000, random_state=rng)
        mu = rng.normal(2.0, np.sqrt(variance / 5.0))
        for probability in (0.025, 0.25, 0.5, 0.75, 0.975):
            assert np.quantile(mu, probability) == pytest.approx(
                posterior.quantile(probability), abs=0.01
            )
        lower, upper = posterior.credible_interval(0.95)
        assert np.mean((mu > lower) & (mu < upper)) == pytest.approx(0.95, abs=0.003)

    def test_posterior_concentrates_on_the_sample_mean(self) -> None:
        rng = np.random.default_rng(9)
        values = rng.lognormal(3.0, 1.0, 200_000)
        posterior = NormalInverseGammaPosterior.from_summary(summary_of(values))
        assert posterior.mean == pytest.approx(values.mean(), rel=1e-4)
        standard_error = values.std() / np.sqrt(values.size)
        assert posterior.scale == pytest.approx(standard_error, rel=0.01)
