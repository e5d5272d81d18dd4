"""Partial pooling of segments: the shrinkage against golden values and a closed form,
the properties (one segment is the unsegmented posterior; segments that agree converge
to the pooled posterior; segments that differ keep their own data), the concentration
against a direct maximisation, and the regret targets of the benchmark's scenarios in a
short simulation (fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, special

from mabapi.simulation.segments import SegmentScenario, run, zipf_shares
from mabapi.stats.segments import (
    all_variants,
    concentration,
    segment_posteriors,
    value_segment_posteriors,
)


def mean(p: object) -> float:
    return float(p.alpha / (p.alpha + p.beta))  # type: ignore[attr-defined]


class TestShrinkage:
    def test_golden_values(self) -> None:
        units, successes = [2000, 1000, 500], [200, 130, 40]
        pooled = segment_posteriors(units, successes)
        # mu = 371 / 3502; the first mean is (mu 241.26 + 200) / 2241.26 = 0.10064.
        assert pooled.kappa == pytest.approx(241.2615, rel=1e-4)
        got = [round(mean(p), 5) for p in pooled.posteriors]
        assert got == [0.10064, 0.12532, 0.08844]

    def test_the_shrunk_mean_is_the_precision_weighted_average(self) -> None:
        """Given kappa, a segment's mean is (mu kappa + s) / (kappa + n): its own rate and
        the pooled rate weighted by n and kappa (the Beta-binomial closed form)."""
        units, successes = np.array([4000.0, 300.0]), np.array([480.0, 24.0])
        pooled = segment_posteriors(units, successes)
        mu = (successes.sum() + 1) / (units.sum() + 2)
        kappa = pooled.kappa
        for n, s, posterior in zip(units, successes, pooled.posteriors, strict=True):
            assert mean(posterior) == pytest.approx((mu * kappa + s) / (kappa + n), rel=1e-9)
        small = pooled.posteriors[1]
        assert 24 / 300 < mean(small) < mu  # pulled toward the pooled rate, not past it

    def test_concentration_maximises_the_marginal_likelihood(self) -> None:
        units, successes = (
            np.array([900.0, 1100.0, 700.0, 1500.0]),
            np.array([95.0, 130.0, 60.0, 180.0]),
        )
        mu = (successes.sum() + 1) / (units.sum() + 2)

        def negative(log_kappa: float) -> float:
            k = math.exp(log_kappa)
            return -float(np.sum(
                special.betaln(mu * k + successes, (1 - mu) * k + units - successes)
                - special.betaln(mu * k, (1 - mu) * k)
            ))  # fmt: skip

        best = optimize.minimize_scalar(negative, bounds=(0, 18), method="bounded").x
        segments = 4
        corrected = (math.exp(best) + 1) * (segments - 1) / segments - 1
        assert concentration(units, successes) == pytest.approx(corrected, rel=1e-3)


class TestTrafficWeightedCenter:
    def test_the_center_follows_traffic_not_where_the_bandit_sent_the_variant(self) -> None:
        """A variant shown 9,000 times in segment 0 (10%) and 1,000 times in segment 1
        (20%), segments of equal traffic: its overall rate is about 15%, not 11%."""
        units, successes = np.array([9000.0, 1000.0]), np.array([900.0, 200.0])
        weighted = segment_posteriors(units, successes, traffic=[0.5, 0.5])
        by_units = segment_posteriors(units, successes)
        kappa = weighted.kappa
        center = 0.5 * (900 + 2 * 0.11) / 9002 + 0.5 * (200 + 2 * 0.11) / 1002
        assert center == pytest.approx(0.15, abs=0.001)
        for n, k, posterior in zip(units, successes, weighted.posteriors, strict=True):
            assert mean(posterior) == pytest.approx((center * kappa + k) / (kappa + n), rel=1e-3)
        # The thin segment is pulled less toward the heavily shown one than by units.
        assert mean(weighted.posteriors[1]) > mean(by_units.posteriors[1])


class TestProperties:
    @settings(max_examples=40, deadline=None)
    @given(st.integers(0, 10**6), st.floats(0.0, 1.0))
    def test_one_segment_is_the_unsegmented_posterior(self, n: int, rate: float) -> None:
        s = math.floor(n * rate)
        [posterior] = segment_posteriors([n], [s]).posteriors
        assert (posterior.alpha, posterior.beta) == (1 + s, 1 + n - s)

    def test_segments_that_agree_converge_to_the_pooled_posterior(self) -> None:
        """Twenty segments with the same 5% rate: each posterior lies between its own rate
        and the pooled one, and with 100 times the data they all close in on the pooled
        posterior."""
        rng = np.random.default_rng(5)
        spreads = []
        for n in (2_000, 200_000):
            units = np.full(20, float(n))
            successes = rng.binomial(n, 0.05, size=20).astype(float)
            pooled = segment_posteriors(units, successes)
            center = mean(pooled.pooled)
            own = successes / units
            for rate, posterior in zip(own, pooled.posteriors, strict=True):
                assert min(rate, center) - 1e-12 <= mean(posterior) <= max(rate, center) + 1e-12
            spreads.append(max(abs(mean(p) - center) for p in pooled.posteriors))
        assert spreads[1] < 0.3 * spreads[0]  # the own rates: 0.1 (1 / sqrt(100))
        assert spreads[1] < 2e-4

    def test_segments_that_differ_keep_their_own_data(self) -> None:
        units = np.array([50_000.0, 50_000.0])
        successes = np.array([5_000.0, 6_000.0])  # 10% and 12%
        pooled = segment_posteriors(units, successes)
        assert [round(mean(p), 3) for p in pooled.posteriors] == [0.1, 0.12]
        assert pooled.kappa < 5_000

    def test_poolings(self) -> None:
        units, successes = [100, 100], [10, 30]
        none = segment_posteriors(units, successes, pooling="none")
        assert [(p.alpha, p.beta) for p in none.posteriors] == [(11, 91), (31, 71)]
        full = segment_posteriors(units, successes, pooling="full")
        assert {(p.alpha, p.beta) for p in full.posteriors} == {(41, 161)}

    def test_an_unseen_segment_gets_the_pooled_mean(self) -> None:
        pooled = segment_posteriors([5000, 5000, 0], [500, 520, 0])
        assert mean(pooled.posteriors[2]) == pytest.approx(mean(pooled.pooled), rel=1e-9)

    def test_deterministic(self) -> None:
        units = np.array([[900.0, 800.0], [300.0, 350.0], [50.0, 60.0]])
        successes = np.array([[90.0, 100.0], [33.0, 30.0], [4.0, 8.0]])
        first = all_variants(units, successes)
        assert first == all_variants(units, successes)


class TestRegret:
    """The benchmark's scenarios on 12 seeds (benchmarks/segments.py runs 200)."""

    def regret(self, scenario: SegmentScenario, pooling: str) -> float:
        return float(np.mean([run(scenario, pooling, seed) for seed in range(12)]))  # type: ignore[arg-type]

    def test_opposite_winners(self) -> None:
        scenario = SegmentScenario((0.6, 0.4), ((0.10, 0.12), (0.12, 0.10)))
        partial, single = self.regret(scenario, "partial"), self.regret(scenario, "full")
        assert partial <= 0.15 * single

    def test_fifty_alike_segments(self) -> None:
        scenario = SegmentScenario(zipf_shares(50), tuple((0.05, 0.06) for _ in range(50)), days=15)
        partial, independent = self.regret(scenario, "partial"), self.regret(scenario, "none")
        assert partial <= 0.3 * independent


class TestValues:
    """The normal-normal analogue: segment means shrunk by se^2 / (se^2 + tau^2)."""

    @staticmethod
    def summaries(means: list[float], n: int, sd: float, seed: int) -> tuple[list[float], ...]:
        rng = np.random.default_rng(seed)
        draws = [rng.normal(m, sd, n) for m in means]
        return (
            [float(n)] * len(means),
            [float(x.sum()) for x in draws],
            [float((x**2).sum()) for x in draws],
        )

    def test_the_shrunk_mean_is_the_precision_weighted_average(self) -> None:
        units, sums, squares = self.summaries([10.0, 12.0, 11.0], 400, 5.0, 1)
        pooled = value_segment_posteriors(units, sums, squares, traffic=[1 / 3] * 3)
        tau2 = pooled.between_variance
        assert tau2 > 0
        n = np.array(units)
        within = float(np.sum(np.array(squares) - np.array(sums) ** 2 / n) / np.sum(n - 1))
        grand = sum(sums) / sum(units)
        mu = float(np.mean((np.array(sums) + 2 * grand) / (n + 2)))
        for k, posterior in enumerate(pooled.posteriors):
            error = within / units[k]
            shrink = error / (error + tau2)
            expected = shrink * mu + (1 - shrink) * sums[k] / units[k]
            assert posterior.mu == pytest.approx(expected, rel=1e-9)

    def test_segments_that_agree_get_the_pooled_mean(self) -> None:
        units, sums, squares = self.summaries([10.0] * 12, 500, 5.0, 2)
        pooled = value_segment_posteriors(units, sums, squares)
        grand = sum(sums) / sum(units)
        raw = max(abs(s / n - grand) for s, n in zip(sums, units, strict=True))
        shrunk = max(abs(p.mu - grand) for p in pooled.posteriors)
        assert shrunk < 0.5 * raw  # pulled most of the way to the pooled mean

    def test_segments_that_differ_keep_their_means(self) -> None:
        units, sums, squares = self.summaries([10.0, 14.0], 20_000, 5.0, 3)
        pooled = value_segment_posteriors(units, sums, squares)
        assert [round(p.mu) for p in pooled.posteriors] == [10, 14]

    def test_one_segment_and_the_other_poolings(self) -> None:
        units, sums, squares = self.summaries([10.0, 12.0], 100, 5.0, 4)
        one = value_segment_posteriors(units[:1], sums[:1], squares[:1])
        assert one.posteriors[0] == one.pooled
        full = value_segment_posteriors(units, sums, squares, pooling="full")
        assert set(full.posteriors) == {full.pooled}
        none = value_segment_posteriors(units, sums, squares, pooling="none")
        assert none.posteriors[1].mu == pytest.approx((sums[1]) / (units[1] + 1), rel=1e-9)
