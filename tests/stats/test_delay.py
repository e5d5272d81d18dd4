"""Late conversions: the delay curve, the chain ladder and effective exposures."""

from __future__ import annotations

import numpy as np
import pytest

from mabapi.stats.delay import DelayCurve, chain_ladder, effective_units


class TestDelayCurve:
    def test_share_by_age_is_one_beyond_the_last_day(self) -> None:
        curve = DelayCurve((0.5, 0.8, 1.0))
        assert curve.days == 2
        shares = curve.share(np.array([0.0, 1.0, 2.0, 3.0, 40.0]))
        assert shares.tolist() == [0.5, 0.8, 1.0, 1.0, 1.0]

    @pytest.mark.parametrize(
        "cdf", [(), (0.5, 0.4, 1.0), (0.5, 0.9), (0.0, 1.0), (float("nan"), 1.0), (1.2, 1.0)]
    )
    def test_refuses_what_is_not_a_delay_curve(self, cdf: tuple[float, ...]) -> None:
        with pytest.raises(ValueError, match="delay curve"):
            DelayCurve(cdf)


class TestChainLadder:
    def test_a_full_triangle_gives_the_ratios_of_column_sums(self) -> None:
        # Two matured days reported 50/30/20 and 40/40/20 of 100 and 200 conversions.
        triangle = {0: [50.0, 80.0, 100.0], 1: [80.0, 160.0, 200.0]}
        curve = chain_ladder(triangle, 2)
        # f0 = (80 + 160) / (50 + 80), f1 = (100 + 200) / (80 + 160); F(0) = 1 / (f0 f1).
        f0, f1 = 240 / 130, 300 / 240
        assert curve.cdf == pytest.approx((1 / (f0 * f1), 1 / f1, 1.0))

    def test_young_days_are_censored_not_read_as_zero(self) -> None:
        matured = {0: [50.0, 80.0, 100.0]}
        with_young = {**matured, 1: [60.0], 2: [55.0, 88.0]}
        # The young rows only add what they have seen: day 2 adds to f0 (88 / 55 = 1.6,
        # the same as day 0's 80 / 50), day 1 adds nothing.
        assert chain_ladder(with_young, 2).cdf == pytest.approx(chain_ladder(matured, 2).cdf)

    def test_no_data_claims_no_delay(self) -> None:
        assert chain_ladder({}, 3).cdf == (1.0, 1.0, 1.0, 1.0)
        assert chain_ladder({0: [0.0, 0.0, 0.0]}, 2).cdf == (1.0, 1.0, 1.0)

    def test_learns_the_true_curve_from_simulated_reports(self) -> None:
        rng = np.random.default_rng(3)
        pmf = np.array([0.5, 0.3, 0.2])
        triangle = {}
        for day in range(40):
            conversions = rng.binomial(4000, 0.05)
            cumulative = np.cumsum(rng.multinomial(conversions, pmf)).astype(float)
            age = min(39 - day, 2)  # today is day 39: the last two days are censored
            triangle[day] = cumulative[: age + 1].tolist()
        curve = chain_ladder(triangle, 2)
        assert curve.cdf == pytest.approx((0.5, 0.8, 1.0), abs=0.02)


class TestEffectiveUnits:
    def test_units_times_share_but_never_below_the_observed_conversions(self) -> None:
        units = np.array([1000.0, 1000.0, 10.0])
        successes = np.array([20.0, 700.0, 10.0])
        shares = np.array([0.5, 0.5, 0.5])
        assert effective_units(units, successes, shares).tolist() == [500.0, 700.0, 10.0]

    def test_corrected_rate_is_unbiased_when_reports_follow_the_curve(self) -> None:
        """Monte Carlo: conversions at 6% reported 50% by age 0; successes / n_eff
        averages 6%, while successes / n averages 3%."""
        rng = np.random.default_rng(7)
        units = np.full(20_000, 4000.0)
        reported = rng.binomial(rng.binomial(4000, 0.06, units.size), 0.5).astype(float)
        corrected = reported / effective_units(units, reported, np.full(units.size, 0.5))
        assert corrected.mean() == pytest.approx(0.06, rel=0.005)
        assert (reported / units).mean() == pytest.approx(0.03, rel=0.01)
