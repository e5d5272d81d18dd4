"""Beta posteriors and their intervals against scipy.stats."""

from __future__ import annotations

import pytest
from scipy import stats

from mabapi.stats.posterior import BetaPosterior, BetaPrior, BinomialCounts


class TestBinomialCounts:
    def test_rate_is_none_without_data(self) -> None:
        assert BinomialCounts(0, 0).rate is None
        assert BinomialCounts(10, 3).rate == 0.3

    @pytest.mark.parametrize(("trials", "successes"), [(-1, 0), (1, -1), (3, 4)])
    def test_impossible_counts_are_refused(self, trials: int, successes: int) -> None:
        with pytest.raises(ValueError, match="cannot"):
            BinomialCounts(trials, successes)


class TestBetaPosterior:
    def test_conjugate_update(self) -> None:
        posterior = BetaPosterior.from_counts(BinomialCounts(1000, 120), BetaPrior(2, 3))
        assert (posterior.alpha, posterior.beta) == (122, 883)

    def test_moments_match_scipy(self) -> None:
        posterior = BetaPosterior(121, 881)
        reference = stats.beta(121, 881)
        assert posterior.mean == pytest.approx(reference.mean(), rel=1e-12)
        assert posterior.variance == pytest.approx(reference.var(), rel=1e-12)

    def test_credible_interval_matches_scipy(self) -> None:
        lower, upper = BetaPosterior(121, 881).credible_interval(0.95)
        assert lower == pytest.approx(stats.beta.ppf(0.025, 121, 881), rel=1e-10)
        assert upper == pytest.approx(stats.beta.ppf(0.975, 121, 881), rel=1e-10)
        assert round(lower, 5) == 0.10132
        assert round(upper, 5) == 0.14163

    @pytest.mark.parametrize("mass", [0.0, 1.0, -0.5, 1.5])
    def test_interval_mass_must_be_a_probability(self, mass: float) -> None:
        with pytest.raises(ValueError, match="mass"):
            BetaPosterior(1, 1).credible_interval(mass)

    def test_parameters_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            BetaPosterior(0, 1)
        with pytest.raises(ValueError, match="positive"):
            BetaPrior(1, -1)
