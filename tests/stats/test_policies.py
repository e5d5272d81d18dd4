"""Policies and controls: exact formulas, sampling checks, and properties."""

from __future__ import annotations

import numpy as np
import pytest

from mabapi.stats.allocation import probability_best
from mabapi.stats.policies import (
    ArmData,
    BurnIn,
    Controls,
    PolicyConfig,
    PolicyName,
    allocate,
    apply_controls,
    draw,
    draw_cumulative,
    limit_change,
    policy_weights,
    sample_choice,
    top_two_shares,
)
from mabapi.stats.posterior import BetaPosterior, BinomialCounts


def arm(trials: int, successes: int) -> ArmData:
    return ArmData(
        BetaPosterior.from_counts(BinomialCounts(trials, successes)),
        trials,
        successes,
        successes / trials if trials else 0.0,
    )


ARMS = [arm(1000, 100), arm(1000, 120), arm(1000, 110)]


class TestTopTwo:
    def test_matches_a_simulation_of_the_procedure(self) -> None:
        """Russo (2016): draw a leader; with prob beta play it, else resample until
        another arm leads and play that one."""
        posteriors = [a.posterior for a in ARMS]
        exact = top_two_shares(probability_best(posteriors), 0.5)
        rng = np.random.default_rng(1)
        counts = np.zeros(3)
        draws = np.stack([rng.beta(p.alpha, p.beta, 600_000) for p in posteriors]).argmax(0)
        leaders, challengers = draws[:200_000], draws[200_000:]
        pointer = 0
        for leader in leaders[:60_000]:
            if rng.random() < 0.5:
                counts[leader] += 1
                continue
            while challengers[pointer] == leader:
                pointer += 1
            counts[challengers[pointer]] += 1
            pointer += 1
        assert np.abs(counts / counts.sum() - exact).max() < 0.01

    def test_gives_the_runner_up_more_than_thompson(self) -> None:
        best = np.array([0.9, 0.08, 0.02])
        shares = top_two_shares(best, 0.5)
        assert shares.sum() == pytest.approx(1.0)
        assert shares[0] < best[0]
        assert shares[1] > best[1]

    def test_a_certain_leader_still_leaves_room(self) -> None:
        shares = top_two_shares(np.array([1.0, 0.0, 0.0]), 0.5)
        assert shares.tolist() == pytest.approx([0.5, 0.25, 0.25])


class TestPolicies:
    @pytest.mark.parametrize("name", list(PolicyName))
    def test_every_policy_sums_to_one(self, name: PolicyName) -> None:
        weights = policy_weights(PolicyConfig(name), ARMS)
        assert weights.sum() == pytest.approx(1.0)
        assert (weights >= 0).all()

    def test_thompson_is_probability_best(self) -> None:
        weights = policy_weights(PolicyConfig(PolicyName.THOMPSON), ARMS)
        assert weights == pytest.approx(probability_best([a.posterior for a in ARMS]))

    def test_epsilon_greedy(self) -> None:
        weights = policy_weights(PolicyConfig(PolicyName.EPSILON_GREEDY, epsilon=0.3), ARMS)
        assert weights == pytest.approx([0.1, 0.8, 0.1])

    def test_ucb1_tries_untried_arms_first_then_the_highest_index(self) -> None:
        fresh = [arm(1000, 100), arm(0, 0)]
        assert policy_weights(PolicyConfig(PolicyName.UCB1), fresh).tolist() == [0.0, 1.0]
        unequal = [arm(10_000, 1_000), arm(50, 5)]  # same mean, fewer trials: bigger bonus
        assert policy_weights(PolicyConfig(PolicyName.UCB1), unequal).tolist() == [0.0, 1.0]

    def test_uniform(self) -> None:
        assert policy_weights(PolicyConfig(PolicyName.UNIFORM), ARMS) == pytest.approx([1 / 3] * 3)

    def test_lower_is_better_equals_the_mirrored_problem(self) -> None:
        mirrored = [arm(1000, 900), arm(1000, 880), arm(1000, 890)]  # 1 - rate
        for name in (PolicyName.THOMPSON, PolicyName.TOP_TWO_THOMPSON):
            lower = policy_weights(PolicyConfig(name), ARMS, higher_is_better=False)
            assert lower == pytest.approx(policy_weights(PolicyConfig(name), mirrored), abs=1e-9)

    def test_two_arm_and_one_arm_edge_cases(self) -> None:
        two = policy_weights(PolicyConfig(PolicyName.TOP_TWO_THOMPSON), ARMS[:2])
        assert two.sum() == pytest.approx(1.0)
        assert policy_weights(PolicyConfig(), ARMS[:1]).tolist() == [1.0]

    @pytest.mark.parametrize(
        "kwargs", [{"top_two_beta": 0.0}, {"top_two_beta": 1.0}, {"epsilon": -0.1}]
    )
    def test_bad_configs(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="must"):
            PolicyConfig(**kwargs)  # type: ignore[arg-type]


class TestControls:
    weights = np.array([0.05, 0.9, 0.05, 0.0])

    def test_additive_floor(self) -> None:
        result = apply_controls(
            self.weights, Controls(floor=0.02), active=[True] * 4, burned_in=True
        )
        assert result == pytest.approx(0.02 + (1 - 4 * 0.02) * self.weights)

    def test_floor_never_reorders_arms(self) -> None:
        rng = np.random.default_rng(2)
        for _ in range(200):
            weights = rng.dirichlet(np.ones(6))
            floor = float(rng.uniform(0, 0.16))
            result = apply_controls(
                weights, Controls(floor=floor), active=[True] * 6, burned_in=True
            )
            assert np.array_equal(
                np.argsort(result, kind="stable"), np.argsort(weights, kind="stable")
            )
            assert result.sum() == pytest.approx(1.0)
            assert result.min() >= floor - 1e-12

    def test_exploration_is_a_total_split_over_the_free_arms(self) -> None:
        for arms in (2, 5, 20):
            weights = np.zeros(arms)
            weights[0] = 1.0
            controls = Controls(floor=0.0, exploration=0.01)
            result = apply_controls(weights, controls, active=[True] * arms, burned_in=True)
            # Every other arm gets exploration / K; all of them together 1% x (K-1)/K.
            assert result[1:] == pytest.approx([0.01 / arms] * (arms - 1))
            assert result.sum() == pytest.approx(1.0)
        # An explicit per-arm floor above exploration / K wins.
        both = Controls(floor=0.02, exploration=0.01)
        assert both.floor_for(4) == 0.02
        assert Controls(floor=0.0, exploration=0.01).floor_for(4) == 0.0025

    def test_floor_too_large_falls_back_to_even(self) -> None:
        result = apply_controls(
            self.weights, Controls(floor=0.25), active=[True] * 4, burned_in=True
        )
        assert result == pytest.approx([0.25] * 4)

    def test_reserved_share_then_the_rest(self) -> None:
        controls = Controls(floor=0.0, exploration=0.0, reserved={0: 0.2})
        result = apply_controls(self.weights, controls, active=[True] * 4, burned_in=True)
        assert result[0] == pytest.approx(0.2)
        free = self.weights[1:] / self.weights[1:].sum()
        assert result[1:] == pytest.approx(0.8 * free)

    def test_paused_arm_gets_nothing_and_others_take_its_share(self) -> None:
        result = apply_controls(
            self.weights, Controls(floor=0.0), active=[True, False, True, True], burned_in=True
        )
        assert result[1] == 0.0
        assert result.sum() == pytest.approx(1.0)

    def test_burn_in_is_an_even_split(self) -> None:
        result = apply_controls(self.weights, Controls(), active=[True] * 4, burned_in=False)
        assert result == pytest.approx([0.25] * 4)

    def test_burn_in_rule(self) -> None:
        rule = BurnIn(units=100, successes=5, days=3)
        assert not rule.satisfied([arm(1000, 50), arm(99, 10)], days_of_data=5)
        assert not rule.satisfied([arm(1000, 50), arm(100, 4)], days_of_data=5)
        assert not rule.satisfied([arm(1000, 50), arm(100, 5)], days_of_data=2)
        assert rule.satisfied([arm(1000, 50), arm(100, 5)], days_of_data=3)

    def test_max_change(self) -> None:
        previous = np.array([0.25, 0.25, 0.25, 0.25])
        controls = Controls(floor=0.0, max_change=0.05)
        result = apply_controls(
            self.weights, controls, active=[True] * 4, burned_in=True, previous=previous
        )
        assert np.abs(result - previous).max() == pytest.approx(0.05)
        assert result.sum() == pytest.approx(1.0)

    def test_limit_change_keeps_order_and_sum(self) -> None:
        rng = np.random.default_rng(4)
        for _ in range(100):
            previous, target = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
            moved = limit_change(previous, target, 0.03)
            assert np.abs(moved - previous).max() <= 0.03 + 1e-12
            assert moved.sum() == pytest.approx(1.0)

    @pytest.mark.parametrize(
        "kwargs",
        [{"floor": -0.1}, {"floor": 1.0}, {"reserved": {0: 0.6, 1: 0.5}}, {"max_change": 0.0}],
    )
    def test_bad_controls(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValueError, match="must"):
            Controls(**kwargs)  # type: ignore[arg-type]


class TestDraw:
    def test_draws_follow_the_allocation(self) -> None:
        allocation = np.array([0.1, 0.6, 0.3])
        rng = np.random.default_rng(8)
        counts = np.bincount([draw(allocation, rng) for _ in range(30_000)], minlength=3)
        assert counts / counts.sum() == pytest.approx(allocation, abs=0.01)

    def test_seeded_draws_repeat(self) -> None:
        allocation = np.array([0.5, 0.5])
        first = [draw(allocation, np.random.default_rng(5)) for _ in range(5)]
        second = [draw(allocation, np.random.default_rng(5)) for _ in range(5)]
        assert first == second


class TestDrawCumulative:
    """The service's draw (inverse CDF on running sums) against scipy's chi-square test
    and against numpy's own `choice` (the simulator's `draw`)."""

    def test_frequencies_pass_a_chi_square_test(self) -> None:
        from scipy import stats

        shares = [0.1, 0.0, 0.6, 0.3]
        cumulative = list(np.cumsum(shares))
        rng = np.random.default_rng(20261128)
        n = 60_000
        counts = np.bincount(
            [draw_cumulative(cumulative, rng.random()) for _ in range(n)], minlength=4
        )
        assert counts[1] == 0  # a zero share is never drawn
        observed = counts[[0, 2, 3]]
        expected = np.array([0.1, 0.6, 0.3]) * n
        assert stats.chisquare(observed, expected).pvalue > 0.001

    def test_unnormalised_shares_and_the_edges_of_the_unit_interval(self) -> None:
        cumulative = [0.0, 2.0, 2.0, 5.0]  # shares 0, 2, 0, 3 (sum 5)
        assert draw_cumulative(cumulative, 0.0) == 1
        assert draw_cumulative(cumulative, 0.3999) == 1
        assert draw_cumulative(cumulative, 0.4) == 3
        assert draw_cumulative(cumulative, np.nextafter(1.0, 0.0)) == 3

    def test_same_uniforms_same_variants_as_the_inverse_cdf_of_numpy(self) -> None:
        shares = np.array([0.25, 0.5, 0.25])
        uniforms = np.random.default_rng(3).random(1_000)
        expected = np.searchsorted(np.cumsum(shares), uniforms, side="right")
        got = [draw_cumulative(list(np.cumsum(shares)), float(u)) for u in uniforms]
        assert got == list(expected)


class TestSampleChoice:
    @pytest.mark.parametrize("name", [PolicyName.THOMPSON, PolicyName.EPSILON_GREEDY])
    def test_choices_are_distributed_as_the_controlled_allocation(self, name: PolicyName) -> None:
        config = PolicyConfig(name)
        controls = Controls(floor=0.05, reserved={2: 0.2})
        expected, _, _ = allocate(
            ARMS, config=config, controls=controls, active=[True] * 3, days_of_data=1
        )
        rng = np.random.default_rng(6)
        picks = [sample_choice(config, ARMS, controls, rng) for _ in range(40_000)]
        observed = np.bincount(picks, minlength=3) / len(picks)
        assert observed == pytest.approx(expected, abs=0.01)

    def test_burn_in_is_uniform(self) -> None:
        rng = np.random.default_rng(7)
        picks = [
            sample_choice(PolicyConfig(), ARMS, Controls(), rng, burned_in=False)
            for _ in range(9_000)
        ]
        assert np.bincount(picks, minlength=3) / 9_000 == pytest.approx([1 / 3] * 3, abs=0.02)
