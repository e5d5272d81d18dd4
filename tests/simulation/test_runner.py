"""The simulator: reproducible, and showing what the policies should do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mabapi.cli import app
from mabapi.simulation.environments import Environment
from mabapi.simulation.runner import PolicySpec, RunResult, aggregate, run
from mabapi.simulation.scenario import from_mapping, load, policy_spec
from mabapi.stats.decision import Action, StopRule
from mabapi.stats.policies import PolicyConfig, PolicyName

TWO_ARMS = Environment(rates=(0.10, 0.12))


def results(
    spec: PolicySpec,
    environment: Environment,
    seeds: int,
    *,
    days: int,
    traffic_per_day: int,
    stop_rule: StopRule | None = None,
) -> list[RunResult]:
    return [
        run(environment, spec, days=days, traffic_per_day=traffic_per_day, seed=seed,
            stop_rule=stop_rule)
        for seed in range(seeds)
    ]  # fmt: skip


class TestReproducible:
    def test_same_seed_same_run_bit_for_bit(self) -> None:
        spec = policy_spec("thompson")
        first = run(TWO_ARMS, spec, days=10, traffic_per_day=500, seed=7, stop_rule=StopRule())
        second = run(TWO_ARMS, spec, days=10, traffic_per_day=500, seed=7, stop_rule=StopRule())
        assert np.array_equal(first.allocations, second.allocations)
        assert np.array_equal(first.units, second.units)
        assert first.regret.tobytes() == second.regret.tobytes()
        other = run(TWO_ARMS, spec, days=10, traffic_per_day=500, seed=8)
        assert not np.array_equal(first.units, other.units)


class TestWhatThePoliciesDo:
    def test_thompson_regret_is_far_below_an_even_split(self) -> None:
        thompson = aggregate(
            "t", results(policy_spec("thompson"), TWO_ARMS, 20, days=30, traffic_per_day=2000)
        )
        uniform = aggregate(
            "u", results(policy_spec("uniform"), TWO_ARMS, 20, days=30, traffic_per_day=2000)
        )
        assert thompson.regret_mean < 0.25 * uniform.regret_mean
        assert thompson.best_arm_share > 0.9
        assert uniform.best_arm_share == pytest.approx(0.5, abs=0.01)
        assert thompson.gain_vs_even > 0

    def test_a_a_test_rarely_declares_a_winner(self) -> None:
        equal = Environment(rates=(0.05, 0.05, 0.05))
        runs = results(
            policy_spec("thompson"), equal, 40, days=30, traffic_per_day=2000,
            stop_rule=StopRule(),
        )  # fmt: skip
        wrong = sum(r.winner_correct is False for r in runs)
        assert wrong / len(runs) <= 0.05

    def test_a_real_lift_is_named_by_day_14_and_never_called_no_difference(self) -> None:
        lift = Environment(rates=(0.10, 0.11))
        runs = results(
            policy_spec("thompson"), lift, 30, days=30, traffic_per_day=5000,
            stop_rule=StopRule(),
        )  # fmt: skip
        assert all(r.first_advice in (Action.STOP_WINNER, Action.STOP_SHIP) for r in runs), (
            "every run advises by day 30, and only ship or winner"
        )
        assert all(r.first_advice_correct and r.first_winner == 1 for r in runs)
        days = [r.first_advice_day for r in runs]
        assert all(d is not None and 7 <= d <= 14 for d in days)

    def test_an_aa_test_is_told_to_ship_either_not_that_one_is_better(self) -> None:
        equal = Environment(rates=(0.10, 0.10, 0.10))
        runs = results(
            policy_spec("thompson"), equal, 30, days=28, traffic_per_day=5000,
            stop_rule=StopRule(),
        )  # fmt: skip
        assert sum(r.first_advice is Action.STOP_SHIP for r in runs) >= 20
        assert sum(r.winner_day is not None for r in runs) <= 1

    def test_decay_follows_a_switch(self) -> None:
        switching = Environment(rates=(0.05, 0.07), switch_day=15, switch_rates=(0.07, 0.05))
        spec = policy_spec("thompson", half_life_days=3)
        runs = results(spec, switching, 10, days=30, traffic_per_day=5000)
        shares = np.mean([r.allocations[22, 0] for r in runs])  # 7 days after the switch
        assert shares > 0.5

    def test_value_environment(self) -> None:
        value = Environment(rates=(0.05, 0.04), value_log_mean=(3.0, 3.6))
        runs = results(policy_spec("thompson"), value, 5, days=20, traffic_per_day=3000)
        assert np.mean([r.allocations[-1, 1] for r in runs]) > 0.8

    def test_custom_allocator(self) -> None:
        spec = PolicySpec("fixed", PolicyConfig(PolicyName.UNIFORM),
                          custom=lambda history, day, rng: np.array([0.3, 0.7]))  # fmt: skip
        result = run(TWO_ARMS, spec, days=3, traffic_per_day=100, seed=1)
        assert np.allclose(result.allocations, [0.3, 0.7])


class TestScenarios:
    def test_toml_file(self, tmp_path: Path) -> None:
        path = tmp_path / "s.toml"
        path.write_text('rates = [0.1, 0.2]\ndays = 5\npolicies = ["ucb1"]\nhalf_life_days = 3\n')
        scenario = load(path)
        assert scenario.days == 5
        assert scenario.policies[0].config.name is PolicyName.UCB1
        assert scenario.policies[0].forgetting.half_life_days == 3

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"days": 3}, "rates"),
            ({"rates": [0.1], "colour": "red"}, "unknown scenario keys"),
            ({"rates": [0.1], "policies": ["magic"]}, "unknown policy"),
            ({"rates": [1.5]}, "probabilities"),
            ({"rates": [0.1], "days": 0}, "positive"),
        ],
    )
    def test_bad_scenarios(self, data: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            from_mapping(data)


class TestCommand:
    def test_simulate_writes_results_and_charts(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        result = CliRunner().invoke(
            app,
            ["simulate", "--rates", "0.1,0.13", "--days", "5", "--traffic", "300",
             "--seeds", "3", "--policies", "thompson,uniform", "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "thompson" in result.output
        assert (out / "results.json").exists()
        assert "regret_mean" in (out / "results.csv").read_text()
        assert (out / "regret.png").stat().st_size > 1000
        assert (out / "allocation_thompson.svg").exists()

    def test_bad_input_exits_2_with_a_message(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(app, ["simulate", "--policies", "nope", "--out", str(tmp_path)])
        assert result.exit_code == 2
        assert "unknown policy" in result.output

    def test_example(self) -> None:
        result = CliRunner().invoke(app, ["simulate", "--example"])
        assert "rates = [0.10, 0.12]" in result.output


class TestEventCadence:
    def test_per_event_updates_learn_faster_than_daily_batches(self) -> None:
        spec = policy_spec("thompson")
        event = [
            run(TWO_ARMS, spec, days=5, traffic_per_day=400, seed=s, cadence="event")
            for s in range(4)
        ]
        assert all(r.units.sum() == 2000 for r in event)
        assert np.mean([r.allocations[-1, 1] for r in event]) > 0.6

    def test_event_runs_are_reproducible(self) -> None:
        spec = policy_spec("top_two_thompson")
        first = run(TWO_ARMS, spec, days=2, traffic_per_day=200, seed=3, cadence="event")
        second = run(TWO_ARMS, spec, days=2, traffic_per_day=200, seed=3, cadence="event")
        assert np.array_equal(first.units, second.units)


class TestLateConversions:
    ENV = Environment(rates=(0.05, 0.06))

    def regrets(self, spec: PolicySpec, reporting: tuple[float, ...] | None) -> float:
        results = [
            run(self.ENV, spec, days=20, traffic_per_day=4000, seed=seed, reporting=reporting)
            for seed in range(12)
        ]
        return float(np.mean([r.regret[-1] for r in results]))

    def test_delayed_reports_cost_regret_and_the_learnt_correction_wins_it_back(self) -> None:
        unaware = policy_spec("thompson")
        aware = PolicySpec(unaware.name, unaware.config, unaware.controls, delay_days=2)
        delayed = (0.5, 0.3, 0.2)
        oracle = self.regrets(unaware, None)
        blind = self.regrets(unaware, delayed)
        corrected = self.regrets(aware, delayed)
        assert blind > 1.3 * oracle  # the delay hurts a delay-unaware policy
        assert corrected < oracle + 0.5 * (blind - oracle)  # half the gap closed, at least

    def test_with_no_delay_the_correction_changes_nothing(self) -> None:
        unaware = policy_spec("thompson")
        aware = PolicySpec(unaware.name, unaware.config, unaware.controls, delay_days=3)
        for seed in range(3):
            plain = run(self.ENV, unaware, days=15, traffic_per_day=2000, seed=seed)
            learnt = run(
                self.ENV, aware, days=15, traffic_per_day=2000, seed=seed, reporting=(1.0,)
            )
            assert np.array_equal(plain.allocations, learnt.allocations)


def test_scenario_files_take_auto_forgetting() -> None:
    scenario = from_mapping({"rates": [0.05, 0.06], "forgetting": "auto", "policies": ["thompson"]})
    assert all(spec.forgetting.auto for spec in scenario.policies)
    with pytest.raises(ValueError, match="forgetting"):
        from_mapping({"rates": [0.05, 0.06], "forgetting": "often"})


def test_scenario_files_take_late_conversions(tmp_path: Path) -> None:
    scenario = from_mapping({
        "rates": [0.05, 0.06], "reporting_delay": [0.5, 0.3, 0.2], "conversion_delay_days": 2,
        "policies": ["thompson"],
    })  # fmt: skip
    assert scenario.reporting == (0.5, 0.3, 0.2)
    assert scenario.policies[0].delay_days == 2
    for bad, message in (
        ({"reporting_delay": [-1.0, 2.0]}, "reporting_delay"),
        ({"reporting_delay": [0.5, 0.5], "cadence": "event"}, "cadence"),
        ({"conversion_delay_days": -1}, "conversion_delay_days"),
    ):
        with pytest.raises(ValueError, match=message):
            from_mapping({"rates": [0.05, 0.06], **bad})
    path = tmp_path / "late.toml"
    path.write_text(
        "rates = [0.05, 0.06]\ndays = 6\ntraffic_per_day = 500\nseeds = 2\n"
        'policies = ["thompson"]\nreporting_delay = [0.5, 0.3, 0.2]\nconversion_delay_days = 2\n'
    )
    result = CliRunner().invoke(app, ["simulate", "--scenario", str(path), "--out",
                                      str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "thompson" in result.output


class TestSegmentedScenarios:
    SCENARIO = """
name = "opposite winners"
days = 6
traffic_per_day = 2000
seeds = 3
[[segments]]
name = "desktop"
share = 0.6
rates = [0.10, 0.13]
[[segments]]
name = "mobile"
share = 0.4
rates = [0.13, 0.10]
"""

    def test_the_three_poolings_side_by_side(self, tmp_path: Path) -> None:
        path = tmp_path / "segments.toml"
        path.write_text(self.SCENARIO)
        result = CliRunner().invoke(app, ["simulate", "--scenario", str(path)])
        assert result.exit_code == 0, result.output
        assert "2 segments, 3 seeds, 6 days" in result.output
        for pooling in ("partial", "none", "full"):
            assert pooling in result.output

    def test_the_file_is_read_as_written(self, tmp_path: Path) -> None:
        from mabapi.simulation.scenario import SegmentedScenario, load_any

        path = tmp_path / "segments.toml"
        path.write_text(self.SCENARIO)
        loaded = load_any(path)
        assert isinstance(loaded, SegmentedScenario)
        assert loaded.segment_names == ("desktop", "mobile")
        assert loaded.scenario.shares == (0.6, 0.4)
        assert loaded.scenario.rates == ((0.10, 0.13), (0.13, 0.10))

    @pytest.mark.parametrize(
        ("top", "tables", "message"),
        [
            ("rates = [0.1, 0.2]\n", "", "unknown keys with segments"),
            ("", "[[segments]]\nshare = 0.1\n", "needs share and rates"),
            ("", "[[segments]]\nshare = 0.1\nrates = [1.5, 0.1]\n", "between 0 and 1"),
        ],
    )
    def test_bad_files_exit_2(self, tmp_path: Path, top: str, tables: str, message: str) -> None:
        path = tmp_path / "bad.toml"
        path.write_text(top + self.SCENARIO + tables)
        result = CliRunner().invoke(app, ["simulate", "--scenario", str(path)])
        assert result.exit_code == 2
        assert message in result.output
