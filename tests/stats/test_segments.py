"""Partial pooling of segments: the fitted spread against a direct maximisation of the
multivariate normal likelihood, the posterior against the covariance-form closed form,
golden values, the properties (one segment is the unsegmented posterior; segments that
agree converge to the pooled posterior; segments that differ keep their own data; when
winners swap, what a segment shows about one variant tells about the other), and the
regret targets of the benchmark's scenarios in a short simulation (fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from mabapi.simulation.segments import SegmentScenario, run, zipf_shares
from mabapi.stats.segments import (
    Spread,
    all_value_variants,
    all_variants,
    fit_spread,
    log_likelihood,
    posterior_moments,
)

UNITS = np.array([[2000.0, 1800.0], [1000.0, 1100.0], [500.0, 450.0]])
SUCCESSES = np.array([[200.0, 230.0], [130.0, 110.0], [40.0, 52.0]])


def mean(p: object) -> float:
    return float(p.alpha / (p.alpha + p.beta))  # type: ignore[attr-defined]


def dense_log_likelihood(spread: Spread, z: np.ndarray, noise: np.ndarray) -> float:
    """The same likelihood from scipy's multivariate normal, cell by cell covariance."""
    total = 0.0
    for row, w in zip(z, noise, strict=True):
        seen = np.isfinite(w)
        k = int(seen.sum())
        cov = spread.own * np.eye(k) + spread.shared + np.diag(w[seen])
        total += stats.multivariate_normal(np.zeros(k), cov).logpdf(row[seen])
    return total


class TestSpread:
    def random_case(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        noise = rng.uniform(0.01, 0.2, size=(6, 3))
        noise[2, 1] = np.inf  # a variant never shown in one segment
        z = rng.normal(0, 0.3, size=(6, 3)) + rng.normal(0, 0.2, size=(6, 1))
        return np.where(np.isfinite(noise), z, 0.0), noise

    @pytest.mark.parametrize("spread", [Spread(0.05, 0.02), Spread(0.3, -0.09), Spread(1e-9, 0)])
    def test_the_likelihood_is_the_multivariate_normal_one(self, spread: Spread) -> None:
        """Sherman-Morrison against scipy's dense density: equal up to the constant
        -k/2 log(2 pi) per observed cell."""
        z, noise = self.random_case(1)
        cells = int(np.isfinite(noise).sum())
        dense = dense_log_likelihood(spread, z, noise) + 0.5 * cells * math.log(2 * math.pi)
        assert log_likelihood(spread, z, noise) == pytest.approx(dense, rel=1e-9)

    def test_the_fit_maximises_the_likelihood(self) -> None:
        """Against Nelder-Mead on the dense likelihood from several starts (over own and
        the correlation), undoing the S / (S - 1) correction."""
        z, noise = self.random_case(2)
        fitted = fit_spread(z, noise)
        segments = z.shape[0]
        raw = Spread(
            fitted.own * (segments - 1) / segments, fitted.shared * (segments - 1) / segments
        )

        def negative(x: np.ndarray) -> float:
            own = math.exp(x[0])
            return -dense_log_likelihood(Spread(own, own * (math.exp(x[1]) - 1 / 3)), z, noise)

        options = {"xatol": 1e-8, "fatol": 1e-10}
        best = min(
            (optimize.minimize(negative, x0, method="Nelder-Mead", options=options)
             for x0 in ([-2.0, 0.0], [-4.0, -1.0], [0.0, 1.0])),
            key=lambda r: r.fun,
        )  # fmt: skip
        assert -dense_log_likelihood(raw, z, noise) <= best.fun + 1e-6

    def test_too_few_segments_is_no_spread(self) -> None:
        noise = np.array([[0.1, 0.1], [np.inf, np.inf]])
        assert fit_spread(np.zeros((2, 2)), noise) == Spread(0.0, 0.0)


class TestPosterior:
    def test_the_precision_form_is_the_covariance_form(self) -> None:
        """mean = Sigma (Sigma + V)^-1 z and covariance Sigma - Sigma (Sigma + V)^-1 Sigma,
        per segment, against the precision form the module uses."""
        spread = Spread(0.2, -0.05)
        rng = np.random.default_rng(3)
        z = rng.normal(0, 0.5, size=(4, 3))
        noise = rng.uniform(0.05, 0.5, size=(4, 3))
        means, variances, shrink = posterior_moments(spread, z, noise)
        sigma = spread.own * np.eye(3) + spread.shared
        for i in range(4):
            gain = sigma @ np.linalg.inv(sigma + np.diag(noise[i]))
            np.testing.assert_allclose(means[i], gain @ z[i], rtol=1e-9)
            np.testing.assert_allclose(variances[i], np.diag(sigma - gain @ sigma), rtol=1e-9)
            np.testing.assert_allclose(shrink[i], 1 - np.diag(gain), rtol=1e-9)

    def test_golden_values(self) -> None:
        """Three segments where the winner swaps in the middle one: the variants'
        deviations are fitted as opposite (shared = -own / 2, the bound for two
        variants) and each segment keeps most of its own contrast."""
        pooled = all_variants(UNITS, SUCCESSES)
        spread = pooled[0].spread
        assert spread is not None
        assert spread.own == pytest.approx(0.0049459, rel=1e-3)
        assert spread.shared == pytest.approx(-spread.own / 2, rel=1e-3)
        assert [round(mean(p), 4) for p in pooled[0].posteriors] == [0.0992, 0.1232, 0.097]
        assert [round(mean(p), 4) for p in pooled[1].posteriors] == [0.1251, 0.1001, 0.1274]

    def test_the_center_follows_traffic_not_where_the_bandit_sent_the_variant(self) -> None:
        """Variant 0 shown 9,000 times in segment 0 (10%) and 1,000 times in segment 1
        (20%); the segments have equal traffic: its overall rate (what an unseen segment
        gets) is about 15%, not 11%."""
        units = np.array([[9000.0, 1000.0], [1000.0, 9000.0], [0.0, 0.0]])
        successes = np.array([[900.0, 100.0], [200.0, 900.0], [0.0, 0.0]])
        pooled = all_variants(units, successes)
        assert mean(pooled[0].posteriors[2]) == pytest.approx(0.15, abs=0.002)


class TestProperties:
    @settings(max_examples=40, deadline=None)
    @given(st.integers(0, 10**6), st.floats(0.0, 1.0))
    def test_one_segment_is_the_unsegmented_posterior(self, n: int, rate: float) -> None:
        s = math.floor(n * rate)
        [variant] = all_variants(np.array([[float(n)]]), np.array([[float(s)]]))
        [posterior] = variant.posteriors
        assert (posterior.alpha, posterior.beta) == (1 + s, 1 + n - s)

    def test_segments_that_agree_converge_to_the_pooled_posterior(self) -> None:
        """Twenty segments with the same 5% and 6% rates: the posteriors sit much closer
        to the pooled rate than the segments' own rates do (a posterior may also move
        with the other variant's data, so not always between the two), and with 100
        times the data they all close in on the pooled posterior."""
        rng = np.random.default_rng(5)
        spreads = []
        for n in (2_000, 200_000):
            units = np.full((20, 2), float(n))
            successes = rng.binomial(n, [0.05, 0.06], size=(20, 2)).astype(float)
            pooled = all_variants(units, successes)
            for k in range(2):
                center = mean(pooled[k].pooled)
                own = np.abs(successes[:, k] / units[:, k] - center)
                shrunk = np.array([abs(mean(p) - center) for p in pooled[k].posteriors])
                assert shrunk.mean() < 0.5 * own.mean()
            spreads.append(max(abs(mean(p) - mean(pooled[0].pooled)) for p in pooled[0].posteriors))
        assert spreads[1] < 0.3 * spreads[0]  # the own rates: 0.1 (1 / sqrt(100))
        assert spreads[1] < 2e-4

    def test_segments_that_differ_keep_their_own_data(self) -> None:
        units = np.full((3, 2), 50_000.0)
        successes = np.array([[5_000.0, 6_000.0], [6_000.0, 5_000.0], [5_000.0, 6_000.0]])
        pooled = all_variants(units, successes)
        assert [round(mean(p), 3) for p in pooled[0].posteriors] == [0.1, 0.12, 0.1]
        assert [round(mean(p), 3) for p in pooled[1].posteriors] == [0.12, 0.1, 0.12]

    def test_when_winners_swap_the_shown_variant_tells_about_the_other(self) -> None:
        """Segments where the two variants move in opposite directions (shared < 0). In
        a new segment where B was shown 5,000 times at 10% and A only 50 times, A's
        posterior moves above its overall rate: B doing worse there says A does better."""
        units = np.array([[5000.0, 5000.0]] * 6 + [[50.0, 5000.0]])
        rows = [[500.0, 600.0], [600.0, 500.0]] * 3 + [[6.0, 500.0]]
        pooled = all_variants(units, np.array(rows))
        assert pooled[0].spread is not None
        assert pooled[0].spread.shared < 0
        overall_a = float(np.mean([0.10, 0.12] * 3))
        assert mean(pooled[0].posteriors[6]) > overall_a + 0.003

    @settings(max_examples=60, deadline=None)
    @given(
        st.integers(1, 8).flatmap(
            lambda segments: st.integers(1, 5).flatmap(
                lambda variants: st.lists(
                    st.tuples(st.integers(0, 10**6), st.floats(0.0, 1.0)),
                    min_size=segments * variants,
                    max_size=segments * variants,
                ).map(lambda cells: (segments, variants, cells))
            )
        )
    )
    def test_any_counts_give_proper_posteriors(
        self, case: tuple[int, int, list[tuple[int, float]]]
    ) -> None:
        """Whatever the counts (zeros, all successes, one huge cell), every posterior is a
        proper Beta with its mean in [0, 1]: the service never answers a NaN."""
        segments, variants, cells = case
        units = np.array([float(n) for n, _ in cells]).reshape(segments, variants)
        successes = np.array([math.floor(n * r) for n, r in cells], dtype=float).reshape(
            segments, variants
        )
        for variant in all_variants(units, successes):
            for posterior in variant.posteriors:
                assert math.isfinite(posterior.alpha)
                assert math.isfinite(posterior.beta)
                assert posterior.alpha > 0
                assert posterior.beta > 0
                assert 0.0 <= mean(posterior) <= 1.0

    def test_poolings(self) -> None:
        units, successes = np.array([[100.0], [100.0]]), np.array([[10.0], [30.0]])
        [none] = all_variants(units, successes, pooling="none")
        assert [(p.alpha, p.beta) for p in none.posteriors] == [(11, 91), (31, 71)]
        [full] = all_variants(units, successes, pooling="full")
        assert {(p.alpha, p.beta) for p in full.posteriors} == {(41, 161)}

    def test_an_unseen_segment_gets_the_overall_rate(self) -> None:
        units = np.array([[5000.0, 5000.0], [5000.0, 5000.0], [0.0, 0.0]])
        successes = np.array([[500.0, 400.0], [520.0, 430.0], [0.0, 0.0]])
        pooled = all_variants(units, successes)
        for k in range(2):
            # the Beta(1, 1) prior's pull on the pooled posterior aside
            assert mean(pooled[k].posteriors[2]) == pytest.approx(mean(pooled[k].pooled), abs=2e-4)

    def test_deterministic(self) -> None:
        units = np.array([[900.0, 800.0], [300.0, 350.0], [50.0, 60.0]])
        successes = np.array([[90.0, 100.0], [33.0, 30.0], [4.0, 8.0]])
        first = all_variants(units, successes)
        assert first == all_variants(units, successes)


@pytest.mark.slow
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

    def test_a_mix(self) -> None:
        rates = tuple((0.06, 0.05) if i in (1, 4, 9) else (0.05, 0.06) for i in range(12))
        scenario = SegmentScenario(zipf_shares(12), rates, days=20)
        partial = self.regret(scenario, "partial")
        assert partial < min(self.regret(scenario, "none"), self.regret(scenario, "full"))


class TestValues:
    """The same model for mean values, D a variant's within-segment variance."""

    @staticmethod
    def summaries(means: list[list[float]], n: int, sd: float, seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        draws = [[rng.normal(m, sd, n) for m in row] for row in means]
        return (
            np.full((len(means), len(means[0])), float(n)),
            np.array([[x.sum() for x in row] for row in draws]),
            np.array([[(x**2).sum() for x in row] for row in draws]),
        )

    def test_segments_that_agree_get_the_pooled_mean(self) -> None:
        units, sums, squares = self.summaries([[10.0, 10.5]] * 12, 500, 5.0, 2)
        pooled = all_value_variants(units, sums, squares)
        for k in range(2):
            grand = sums[:, k].sum() / units[:, k].sum()
            raw = np.abs(sums[:, k] / units[:, k] - grand)
            shrunk = np.array([abs(p.mu - grand) for p in pooled[k].posteriors])
            assert shrunk.mean() < 0.5 * raw.mean()  # pulled most of the way to the pooled mean

    def test_segments_that_differ_keep_their_means(self) -> None:
        units, sums, squares = self.summaries([[10.0, 11.0], [14.0, 13.0]], 20_000, 5.0, 3)
        pooled = all_value_variants(units, sums, squares)
        assert [round(p.mu) for p in pooled[0].posteriors] == [10, 14]
        assert [round(p.mu) for p in pooled[1].posteriors] == [11, 13]

    def test_the_mean_is_the_normal_normal_posterior(self) -> None:
        """Given the fitted spread, a segment's mean is mu + Sigma (Sigma + V)^-1 (y - mu),
        with V = within / n and mu the traffic-weighted smoothed mean."""
        units, sums, squares = self.summaries(
            [[10.0, 12.0], [12.0, 11.0], [11.0, 11.5]], 400, 5.0, 1
        )
        pooled = all_value_variants(units, sums, squares)
        spread = pooled[0].spread
        assert spread is not None
        assert spread.own > 0
        within = (squares - sums**2 / units).sum(axis=0) / (units - 1).sum(axis=0)
        grand = sums.sum(axis=0) / units.sum(axis=0)
        mu = ((sums + 2 * grand) / (units + 2)).mean(axis=0)
        root = np.sqrt(within)
        sigma = np.outer(root, root) * (spread.own * np.eye(2) + spread.shared)
        for i in range(3):
            v = np.diag(within / units[i])
            expected = mu + sigma @ np.linalg.solve(sigma + v, sums[i] / units[i] - mu)
            got = [pooled[k].posteriors[i].mu for k in range(2)]
            np.testing.assert_allclose(got, expected, rtol=1e-9)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 10**5), st.floats(-1e4, 1e4), st.floats(0.0, 1e3)),
            min_size=6,
            max_size=6,
        )
    )
    def test_any_summaries_give_proper_posteriors(
        self, cells: list[tuple[int, float, float]]
    ) -> None:
        """Three segments x two variants of any size, mean and spread (zeros, one unit,
        no spread at all): every posterior is finite and proper."""
        units = np.array([float(n) for n, _, _ in cells]).reshape(3, 2)
        sums = np.array([n * m for n, m, _ in cells]).reshape(3, 2)
        squares = np.array([n * (m * m + sd * sd) for n, m, sd in cells]).reshape(3, 2)
        for variant in all_value_variants(units, sums, squares):
            for p in variant.posteriors:
                assert all(math.isfinite(x) for x in (p.mu, p.kappa, p.alpha, p.beta))
                assert p.kappa > 0
                assert p.alpha > 0
                assert p.beta > 0

    def test_one_segment_and_the_other_poolings(self) -> None:
        units, sums, squares = self.summaries([[10.0], [12.0]], 100, 5.0, 4)
        [one] = all_value_variants(units[:1], sums[:1], squares[:1])
        assert one.posteriors[0] == one.pooled
        [full] = all_value_variants(units, sums, squares, pooling="full")
        assert set(full.posteriors) == {full.pooled}
        [none] = all_value_variants(units, sums, squares, pooling="none")
        assert none.posteriors[1].mu == pytest.approx(sums[1, 0] / (units[1, 0] + 1), rel=1e-9)
