"""Probability of being best, checked against closed forms, Monte Carlo and properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import special

from mabapi.stats.allocation import best_arm, largest_remainder_percentages, probability_best
from mabapi.stats.posterior import BetaPosterior, BinomialCounts


def beta(trials: int, successes: int) -> BetaPosterior:
    return BetaPosterior.from_counts(BinomialCounts(trials, successes))


def closed_form_b_beats_a(a: BetaPosterior, b: BetaPosterior) -> float:
    """Evan Miller's exact P(B > A) for Beta variables with integer alpha_B:
    sum_{i<alpha_B} B(aA+i, bA+bB) / ((bB+i) B(1+i, bB) B(aA, bA)), in log space."""
    i = np.arange(int(b.alpha))
    terms = (
        special.betaln(a.alpha + i, a.beta + b.beta)
        - np.log(b.beta + i)
        - special.betaln(1 + i, b.beta)
        - special.betaln(a.alpha, a.beta)
    )
    return float(np.exp(terms).sum())


def monte_carlo(posteriors: list[BetaPosterior], draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = np.stack([rng.beta(p.alpha, p.beta, draws) for p in posteriors])
    counts = np.bincount(samples.argmax(axis=0), minlength=len(posteriors))
    return counts / draws


class TestProbabilityBest:
    def test_golden_value_from_statistics_md(self) -> None:
        result = probability_best([beta(1000, 120), beta(1000, 150)])
        assert round(float(result[1]), 5) == 0.97507
        assert round(float(result[0]), 5) == 0.02493

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ((1000, 120), (1000, 150)),
            ((10, 1), (12, 2)),
            ((0, 0), (5, 5)),
            ((50_000, 2_500), (50_000, 2_600)),
            ((1_000, 60), (10_000_000, 600_100)),  # very unequal counts
            ((10_000_000, 500_000), (10_000_000, 500_300)),
        ],
    )
    def test_two_arms_match_the_closed_form(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        pa, pb = beta(*a), beta(*b)
        exact = closed_form_b_beats_a(pa, pb)
        assert float(probability_best([pa, pb])[1]) == pytest.approx(exact, abs=1e-7)

    @pytest.mark.parametrize(
        ("big", "small"),
        [
            ((10_000_000, 550_000), (1_000, 50)),
            ((10_000_000, 500_300), (1_000, 52)),
            ((1_000_000, 50_100), (1_000, 55)),
            ((10_000_000, 5_000_000), (2_000, 1_000)),
            ((1_000, 120), (1_000, 150)),
        ],
    )
    def test_error_below_1e_9_against_40_digit_arithmetic(
        self, big: tuple[int, int], small: tuple[int, int]
    ) -> None:
        """Evan Miller's closed form evaluated with mpmath at 40 significant digits (the
        sum runs over the small arm's alpha, so it stays short) as the golden value."""
        import mpmath

        a, b = beta(*big), beta(*small)
        mpmath.mp.dps = 40
        exact = mpmath.fsum(
            mpmath.exp(
                mpmath.log(mpmath.beta(a.alpha + i, a.beta + b.beta))
                - mpmath.log(b.beta + i)
                - mpmath.log(mpmath.beta(1 + i, b.beta))
                - mpmath.log(mpmath.beta(a.alpha, a.beta))
            )
            for i in range(int(b.alpha))
        )
        assert abs(float(probability_best([a, b])[1]) - float(exact)) < 1e-9
        assert abs(float(probability_best([b, a])[0]) - float(exact)) < 1e-9

    @pytest.mark.parametrize(
        "arms",
        [
            [(1000, 100), (1000, 110), (1000, 95)],
            [(200, 20 + k) for k in range(10)],
            [(1_000, 50), (10_000_000, 500_000), (1_000, 52)],
        ],
    )
    def test_agrees_with_a_million_draw_monte_carlo(self, arms: list[tuple[int, int]]) -> None:
        posteriors = [beta(*arm) for arm in arms]
        exact = probability_best(posteriors)
        sampled = monte_carlo(posteriors, 1_000_000, seed=20231115)
        # Monte Carlo standard error sqrt(p(1-p)/M) <= 5e-4; allow five of them.
        assert np.abs(exact - sampled).max() < 5 * 5e-4

    def test_sums_to_one_and_is_non_negative(self) -> None:
        rng = np.random.default_rng(7)
        for _ in range(30):
            k = int(rng.integers(2, 30))
            trials = rng.integers(0, 10**6, size=k)
            successes = (trials * rng.uniform(0.01, 0.2, size=k)).astype(int)
            pairs = zip(trials, successes, strict=True)
            result = probability_best([beta(int(n), int(s)) for n, s in pairs])
            assert result.min() >= 0.0
            assert result.sum() == pytest.approx(1.0, abs=1e-12)

    def test_permutation_invariant(self) -> None:
        arms = [(1000, 100), (800, 90), (1200, 118), (50, 6)]
        base = dict(zip(arms, probability_best([beta(*a) for a in arms]), strict=True))
        for order in itertools.permutations(arms):
            result = probability_best([beta(*a) for a in order])
            for arm, value in zip(order, result, strict=True):
                assert value == pytest.approx(base[arm], abs=1e-12)

    def test_identical_arms_split_evenly(self) -> None:
        result = probability_best([beta(5000, 300)] * 4)
        assert np.allclose(result, 0.25, atol=1e-12)

    def test_no_data_is_uniform(self) -> None:
        assert np.allclose(probability_best([beta(0, 0)] * 3), 1 / 3, atol=1e-12)

    def test_one_arm_gets_everything(self) -> None:
        assert probability_best([beta(10, 3)]).tolist() == [1.0]

    def test_no_arms(self) -> None:
        assert probability_best([]).size == 0

    def test_fifty_arms_with_ten_million_trials(self) -> None:
        arms = [beta(10_000_000, 500_000 + 40 * k) for k in range(50)]
        result = probability_best(arms)
        assert result.sum() == pytest.approx(1.0, abs=1e-12)
        assert int(np.argmax(result)) == 49
        assert np.all(np.diff(result) >= -1e-12)  # better arms never get less

    def test_deterministic(self) -> None:
        arms = [beta(1000, 120), beta(1000, 150), beta(900, 130)]
        assert probability_best(arms).tolist() == probability_best(arms).tolist()


class TestLargestRemainder:
    def test_example(self) -> None:
        assert largest_remainder_percentages([0.382, 0.618]) == [38.2, 61.8]

    def test_thirds_sum_to_exactly_100(self) -> None:
        result = largest_remainder_percentages([1 / 3, 1 / 3, 1 / 3])
        assert result == [33.4, 33.3, 33.3]
        # As decimals they sum to 100.0 exactly; fsum avoids float addition-order error.
        assert math.fsum(result) == 100.0

    def test_always_sums_to_exactly_100_with_one_decimal(self) -> None:
        rng = np.random.default_rng(11)
        for _ in range(500):
            shares = rng.dirichlet(np.ones(int(rng.integers(1, 60))))
            result = largest_remainder_percentages(list(shares))
            assert math.fsum(result) == 100.0
            assert all(round(value, 1) == value for value in result)
            for value, share in zip(result, shares, strict=True):
                assert abs(value - 100 * share) < 0.1 + 1e-9

    def test_tiny_share_rounds_to_zero_not_negative(self) -> None:
        assert largest_remainder_percentages([1e-9, 1 - 1e-9]) == [0.0, 100.0]

    def test_empty(self) -> None:
        assert largest_remainder_percentages([]) == []


class TestExtremePosteriors:
    """Found by schemathesis: 5 successes in 10^15 trials, lower is better, squeezed the
    mirrored posterior within ulps of 1 and the quadrature returned nothing (a 500)."""

    def test_falls_back_to_seeded_draws_that_agree_with_an_independent_sample(self) -> None:
        arms = [BetaPosterior(alpha=5.5, beta=1e15), BetaPosterior(alpha=9.0, beta=1e15)]
        result = best_arm(arms, higher_is_better=False)
        assert result.probabilities.sum() == pytest.approx(1.0)
        rng = np.random.default_rng(7)  # a different stream from the fallback's
        draws = np.stack([rng.beta(a.alpha, a.beta, 200_000) for a in arms])
        expected = np.bincount(draws.argmin(axis=0), minlength=2) / 200_000
        assert result.probabilities == pytest.approx(expected, abs=0.01)
        assert result.expected_best == pytest.approx(draws.min(axis=0).mean(), rel=0.01)
        # Deterministic: the fallback's seed is fixed.
        assert np.array_equal(best_arm(arms, higher_is_better=False).probabilities,
                              result.probabilities)  # fmt: skip
