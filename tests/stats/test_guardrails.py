"""Guardrail statistics against independent computations: P(harm) against Monte Carlo
and mpmath integration, the sequential boundaries against their closed form and
simulated random walks, and the error rates of the whole rule in simulation (fixed
seeds): false breaches in A/A over 30 daily checks, and detection of a 20% harm."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from scipy import stats

from mabapi.simulation.guardrails import GuardrailScenario, breach_rate, first_breach
from mabapi.stats.guardrails import (
    MAX_LOOKS,
    GuardrailRule,
    _spent,
    check,
    guard_boundary,
    guard_level,
    probability_harm,
    relative_difference,
)
from mabapi.stats.posterior import BetaPosterior, NormalInverseGammaPosterior, Posterior


def monte_carlo(
    variant: Posterior, control: Posterior, margin: float, higher_is_better: bool
) -> float:
    rng = np.random.default_rng(7)
    n = 2_000_000

    def draw(p: Posterior) -> np.ndarray:
        if isinstance(p, BetaPosterior):
            return rng.beta(p.alpha, p.beta, n)
        return p.mu + p.scale * rng.standard_t(p.degrees_of_freedom, n)

    v, c = draw(variant), draw(control)
    if higher_is_better:
        return float(np.mean(v < c - margin * np.abs(c)))
    return float(np.mean(v > c + margin * np.abs(c)))


NIG = NormalInverseGammaPosterior
CASES = [
    (BetaPosterior(51, 951), BetaPosterior(41, 961), 0.05, False),
    (BetaPosterior(501, 9501), BetaPosterior(401, 9601), 0.0, False),
    (BetaPosterior(6, 96), BetaPosterior(401, 9601), 0.1, True),  # narrow control
    (BetaPosterior(401, 9601), BetaPosterior(6, 96), 0.1, False),  # narrow variant
    (NIG(-1.9, 200, 100, 150), NIG(-2.0, 180, 90, 120), 0.02, False),  # negative values
    (NIG(10.0, 50, 25, 400), NIG(11.0, 60, 30, 500), 0.05, True),
]  # fmt: skip


class TestProbabilityOfHarm:
    @pytest.mark.parametrize(("variant", "control", "margin", "higher"), CASES)
    def test_matches_monte_carlo(
        self, variant: Posterior, control: Posterior, margin: float, higher: bool
    ) -> None:
        exact = probability_harm(variant, control, margin=margin, higher_is_better=higher)
        simulated = monte_carlo(variant, control, margin, higher)
        assert exact == pytest.approx(simulated, abs=1.5e-3)

    def test_matches_mpmath_integration(self) -> None:
        """P(theta_v > 1.05 theta_c) = integral of f_v(x) I_{x / 1.05}(a_c, b_c) dx."""
        variant, control = BetaPosterior(51, 951), BetaPosterior(41, 961)
        mpmath.mp.dps = 30

        def integrand(x: mpmath.mpf) -> mpmath.mpf:
            density = x ** (variant.alpha - 1) * (1 - x) ** (variant.beta - 1)
            density /= mpmath.beta(variant.alpha, variant.beta)
            return density * mpmath.betainc(
                control.alpha, control.beta, 0, x / 1.05, regularized=True
            )

        reference = float(mpmath.quad(integrand, [0, 0.03, 0.05, 0.08, 1]))
        exact = probability_harm(variant, control, margin=0.05, higher_is_better=False)
        assert exact == pytest.approx(reference, abs=1e-7)

    def test_golden_value(self) -> None:
        # 2.5% vs 2.0% refunds on 20,000 units each, 5% margin. The normal approximation
        # on the log scale gives Phi((log(501/401) - log 1.05) / sqrt(1/501 + 1/401 -
        # 1/20002 - 1/20002)) = 0.9953.
        variant, control = BetaPosterior(501, 19501), BetaPosterior(401, 19601)
        value = probability_harm(variant, control, margin=0.05, higher_is_better=False)
        assert value == pytest.approx(0.995766, abs=1e-6)
        z = (math.log(501 / 401) - math.log(1.05)) / math.sqrt(1 / 501 + 1 / 401 - 2 / 20002)
        assert value == pytest.approx(stats.norm.cdf(z), abs=1e-3)

    def test_identical_posteriors_are_a_coin_flip_without_margin(self) -> None:
        same = BetaPosterior(30, 970)
        assert probability_harm(same, same, margin=0.0, higher_is_better=False) == pytest.approx(
            0.5, abs=1e-6
        )
        assert probability_harm(same, same, margin=0.1, higher_is_better=False) < 0.5

    def test_direction(self) -> None:
        worse, better = BetaPosterior(300, 9700), BetaPosterior(200, 9800)
        assert probability_harm(worse, better, margin=0.0, higher_is_better=False) > 0.999
        assert probability_harm(worse, better, margin=0.0, higher_is_better=True) < 0.001


class TestSequentialGuard:
    def test_first_boundary_is_the_normal_quantile_of_the_first_spend(self) -> None:
        alpha = 0.05
        assert guard_boundary(alpha, 1) == pytest.approx(stats.norm.isf(_spent(alpha, 1)), abs=2e-3)

    def test_golden_boundaries(self) -> None:
        got = [round(guard_boundary(0.05, k), 2) for k in (1, 7, 8, 30, 60)]
        assert got == [2.63, 2.24, 2.30, 2.83, 3.10]
        assert guard_boundary(0.05, MAX_LOOKS + 50) == guard_boundary(0.05, MAX_LOOKS)
        assert guard_level(0.05, 7) == pytest.approx(stats.norm.cdf(guard_boundary(0.05, 7)))

    def test_random_walks_cross_as_often_as_alpha_is_spent(self) -> None:
        """Under no harm, the share of standardized sums crossing by check k is the
        alpha spent by k, and never more than alpha."""
        rng = np.random.default_rng(11)
        looks, walks = 60, 200_000
        bounds = np.array([guard_boundary(0.05, k) for k in range(1, looks + 1)])
        z = np.cumsum(rng.standard_normal((walks, looks), dtype=np.float32), axis=1)
        z /= np.sqrt(np.arange(1, looks + 1))
        crossed = np.cumsum(z >= bounds, axis=1) > 0
        for k in (1, 3, 7, 14, 30, 60):
            spent = _spent(0.05, k)
            tolerance = 4 * math.sqrt(spent / walks) + 5e-4
            assert crossed[:, k - 1].mean() == pytest.approx(spent, abs=tolerance)
        assert crossed[:, -1].mean() < 0.05

    def test_needs_units_and_both_conditions(self) -> None:
        rule = GuardrailRule(margin=0.05, probability=0.95, higher_is_better=False, min_units=100)
        harmful, control = BetaPosterior(61, 941), BetaPosterior(21, 981)
        assert check(harmful, control, rule=rule, look=1, units=(1000, 1000)).breached
        assert not check(harmful, control, rule=rule, look=1, units=(99, 1000)).breached
        slight = BetaPosterior(24, 978)  # P(any harm) far below the guard
        result = check(slight, control, rule=rule, look=1, units=(1000, 1000))
        assert not result.breached
        assert result.probability_any_harm < result.required_any_harm


@pytest.mark.slow
class TestErrorRates:
    """The target scenario at the default rule (any harm, probability 0.95): 2% refunds,
    5,000 units a day per variant."""

    RULE = GuardrailRule(margin=0.0, probability=0.95, higher_is_better=False, min_units=100)

    def test_a_variant_doing_no_harm_rarely_ever_breaches_over_30_checks(self) -> None:
        scenario = GuardrailScenario(0.02, 0.0, 5000, 30)
        assert breach_rate(scenario, self.RULE, range(200)) <= 0.05

    def test_a_20_percent_harm_is_caught_within_a_week(self) -> None:
        scenario = GuardrailScenario(0.02, 0.2, 5000, 7)
        assert breach_rate(scenario, self.RULE, range(200)) >= 0.90

    def test_deterministic(self) -> None:
        scenario = GuardrailScenario(0.02, 0.2, 5000, 7)
        assert [first_breach(scenario, self.RULE, s) for s in range(5)] == [
            first_breach(scenario, self.RULE, s) for s in range(5)
        ]


class TestRelativeDifference:
    def test_against_the_delta_method(self) -> None:
        """Large counts: (p_v - p_c) / p_c ~ Normal(r, (1 + r)^2 (1/s_v + 1/s_c)) roughly."""
        variant, control = BetaPosterior(1201, 48801), BetaPosterior(1001, 49001)
        result = relative_difference(variant, control, seed=3)
        assert result is not None
        mean, low, high = result
        ratio = (1201 / 50002) / (1001 / 50002) - 1
        sd = (1 + ratio) * math.sqrt(1 / 1201 + 1 / 1001)
        assert mean == pytest.approx(ratio, abs=0.005)
        assert low == pytest.approx(ratio - 1.96 * sd, abs=0.01)
        assert high == pytest.approx(ratio + 1.96 * sd, abs=0.01)
        assert relative_difference(variant, control, seed=3) == result  # seeded
