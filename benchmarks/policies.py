"""Does it pay? mabapi's policies against a fixed split, the original README's rule and
MABWiser, on simulated experiments with daily batches.

    python benchmarks/policies.py [--seeds 200] [--quick] [--jobs 2]

Needs the `bench` extra for MABWiser (`pip install -e '.[bench]'`); without it those rows
are skipped. Prints one table per scenario (mean and standard error over seeds) and the
targets, each marked met or missed. Regret is expected regret: for every
unit, the best arm's expected reward that day minus the served arm's.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from mabapi.simulation.environments import Environment, FloatArray
from mabapi.simulation.runner import Aggregate, History, PolicySpec, aggregate, run
from mabapi.simulation.scenario import policy_spec
from mabapi.stats.decision import StopRule
from mabapi.stats.policies import PolicyConfig, PolicyName


@dataclass(frozen=True)
class Scenario:
    name: str
    environment: Environment
    days: int
    traffic: int
    policies: tuple[str, ...]


def original_readme_rule(history: History, day: int, rng: np.random.Generator) -> FloatArray:
    """The original code: one Beta(1 + s, 1 + f) draw per variant, normalised."""
    units = history.units[:day].sum(axis=0)
    successes = history.successes[:day].sum(axis=0)
    draws = rng.beta(1 + successes, 1 + units - successes)
    result: FloatArray = draws / draws.sum()
    return result


def mabwiser_allocator(kind: str) -> Callable[[History, int, np.random.Generator], FloatArray]:
    """MABWiser refit on all events so far, once a day; the day's traffic split is the
    share of per-request predictions (its TS draws one Beta sample per arm per request)."""

    def allocate(history: History, day: int, rng: np.random.Generator) -> FloatArray:
        from mabwiser.mab import MAB, LearningPolicy

        arms = history.units.shape[1]
        if day == 0:
            return np.full(arms, 1.0 / arms)
        policy = (
            LearningPolicy.ThompsonSampling()
            if kind == "ts"
            else LearningPolicy.EpsilonGreedy(epsilon=0.1)
        )
        mab = MAB(arms=list(range(arms)), learning_policy=policy, seed=int(rng.integers(2**31)))
        units = history.units[:day].sum(axis=0).astype(int)
        successes = history.successes[:day].sum(axis=0).astype(int)
        values = history.value_sum[:day].sum(axis=0)
        decisions = np.repeat(np.arange(arms), units)
        if kind == "ts" or not values.any():
            rewards = np.concatenate(
                [np.r_[np.ones(s), np.zeros(n - s)] for n, s in zip(units, successes, strict=True)]
            )
        else:  # value rewards: each arm's units carry its mean value per unit
            rewards = np.concatenate(
                [np.full(n, v / n if n else 0.0) for n, v in zip(units, values, strict=True)]
            )
        mab.fit(decisions=decisions, rewards=rewards)
        predictions = np.asarray(mab.predict(np.zeros((2000, 1))), dtype=int)
        shares = np.bincount(predictions, minlength=arms) / predictions.size
        return np.asarray(shares, dtype=np.float64)

    return allocate


def spec_for(name: str) -> PolicySpec:
    if name == "original_readme":
        return PolicySpec(name, PolicyConfig(PolicyName.UNIFORM), custom=original_readme_rule)
    if name == "mabwiser_ts":
        return PolicySpec(name, PolicyConfig(PolicyName.UNIFORM), custom=mabwiser_allocator("ts"))
    if name == "mabwiser_eps":
        return PolicySpec(name, PolicyConfig(PolicyName.UNIFORM), custom=mabwiser_allocator("eps"))
    if name == "thompson_conversion_only":
        return PolicySpec(name, use_values=False)
    if name == "thompson_decay_7d":
        return policy_spec("thompson", half_life_days=7)
    if name == "thompson_decay_5d":
        return policy_spec("thompson", half_life_days=5)
    if name == "thompson_floor_0":
        return policy_spec("thompson", floor=0.0)
    if name == "thompson_window_7d":
        return policy_spec("thompson", window_days=7)
    return policy_spec(name)


def _one(scenario: Scenario, name: str, seed: int) -> object:
    return run(
        scenario.environment,
        spec_for(name),
        days=scenario.days,
        traffic_per_day=scenario.traffic,
        seed=seed,
        stop_rule=StopRule(),
    )


def evaluate(scenario: Scenario, name: str, seeds: int, jobs: int) -> Aggregate:
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(partial(_one, scenario, name), range(seeds)))
    return aggregate(name, results)  # type: ignore[arg-type]


CORE = ("thompson", "thompson_floor_0", "top_two_thompson", "uniform", "original_readme",
        "mabwiser_ts", "mabwiser_eps")  # fmt: skip
LOWEST_CONVERSION_BEST_VALUE = Environment(
    rates=(0.050, 0.045, 0.040),
    # Log-normal order values: mean exp(mu + 0.5^2/2); revenue per user 2.27 / 2.52 / 2.80.
    value_log_mean=(3.70, 3.91, 4.14),
    name="revenue: best revenue per user has the lowest conversion",
)


def scenarios() -> list[Scenario]:
    return [
        Scenario("two arms 10% vs 12%", Environment((0.10, 0.12)), 30, 2000, CORE),
        Scenario(
            "ten arms 5.0%..6.5%",
            Environment(tuple(np.round(np.linspace(0.05, 0.065, 10), 5))),
            30,
            10_000,
            CORE,
        ),
        Scenario("A/A: three equal arms at 5%", Environment((0.05, 0.05, 0.05)), 30, 2000, CORE),
        Scenario(
            "best arm changes on day 15 of 30 (5% <-> 6%)",
            Environment((0.05, 0.06), switch_day=15, switch_rates=(0.06, 0.05)),
            30,
            5000,
            (*CORE, "thompson_decay_7d", "thompson_decay_5d"),
        ),
        Scenario(
            LOWEST_CONVERSION_BEST_VALUE.name,
            LOWEST_CONVERSION_BEST_VALUE,
            30,
            5000,
            ("thompson", "thompson_conversion_only", "uniform", "mabwiser_eps"),
        ),
        Scenario(
            "drift: two arms swap on day 30 of 60 (5% <-> 6%)",
            Environment((0.05, 0.06), switch_day=30, switch_rates=(0.06, 0.05)),
            60,
            5000,
            ("thompson", "thompson_decay_7d", "thompson_decay_5d", "thompson_window_7d"),
        ),
        Scenario(
            "drift control: the same two arms, no swap",
            Environment((0.05, 0.06)),
            60,
            5000,
            ("thompson", "thompson_decay_7d", "thompson_decay_5d", "thompson_window_7d"),
        ),
    ]


def mabwiser_installed() -> bool:
    """MABWiser is the `bench` extra; without it, its rows are skipped (and we say so)."""
    try:
        import mabwiser  # noqa: F401
    except ImportError:
        print("MABWiser not installed (pip install -e '.[bench]'): its rows are skipped\n")
        return False
    return True


def print_verdicts(verdicts: list[tuple[str, bool]]) -> None:
    """Each target, met or MISSED, then the count."""
    print()
    for text, met in verdicts:
        print(f"- {text}: {'met' if met else 'MISSED'}")
    print(f"\n{sum(met for _, met in verdicts)} of {len(verdicts)} targets met")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10 seeds, for a smoke test")
    args = parser.parse_args()
    seeds = 10 if args.quick else args.seeds
    have_mabwiser = mabwiser_installed()
    table: dict[str, dict[str, Aggregate]] = {}
    for scenario in scenarios():
        started = time.perf_counter()
        print(f"## {scenario.name} ({scenario.days} days x {scenario.traffic:,}/day, "
              f"{seeds} seeds)\n")  # fmt: skip
        print("| policy | regret (mean ± se) | traffic to best | gain vs even split "
              "| winner declared | wrong winner | median day |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        table[scenario.name] = {}
        for name in scenario.policies:
            if name.startswith("mabwiser") and not have_mabwiser:
                continue
            result = evaluate(scenario, name, seeds, args.jobs)
            table[scenario.name][name] = result
            day = "-" if result.median_winner_day is None else f"{result.median_winner_day:g}"
            print(
                f"| {name} | {result.regret_mean:,.1f} ± {result.regret_se:,.1f} "
                f"| {result.best_arm_share:.1%} "
                f"| {result.gain_vs_even:,.1f} ± {result.gain_vs_even_se:,.1f} "
                f"| {result.winner_rate:.0%} | {result.wrong_winner_rate:.1%} | {day} |"
            )
        print(f"\n({time.perf_counter() - started:.0f} s)\n")
    print_targets(table)


def print_targets(table: dict[str, dict[str, Aggregate]]) -> None:
    def regret(scenario: str, policy: str) -> Aggregate | None:
        return table.get(scenario, {}).get(policy)

    names = [s.name for s in scenarios()]
    lines: list[tuple[str, bool]] = []
    two, uniform = regret(names[0], "thompson"), regret(names[0], "uniform")
    if two and uniform:
        ratio = two.regret_mean / uniform.regret_mean
        lines.append(
            (f"two arms: thompson regret / uniform = {ratio:.3f} (<= 0.25)", ratio <= 0.25)
        )
    for scenario in names[:5]:
        ours = regret(scenario, "thompson")
        if ours is None:
            continue
        for peer in ("original_readme", "mabwiser_ts", "mabwiser_eps"):
            other = regret(scenario, peer)
            if other is None:
                continue
            noise = 2 * float(np.hypot(ours.regret_se, other.regret_se))
            ok = other.regret_mean >= ours.regret_mean - noise - 1e-6
            lines.append((f"{scenario}: {peer} {other.regret_mean:,.1f} vs thompson "
                          f"{ours.regret_mean:,.1f} (± {noise:,.1f})", ok))  # fmt: skip
    aa = regret(names[2], "thompson")
    if aa:
        lines.append((f"A/A wrong-winner rate {aa.wrong_winner_rate:.1%} (<= 5%)",
                      aa.wrong_winner_rate <= 0.05))  # fmt: skip
    for decay in ("thompson_decay_7d", "thompson_decay_5d"):
        switch = regret(names[3], decay)
        if switch is None:
            continue
        day = 15 + 7 - 1
        share = float(switch.mean_allocations[day, 0])
        lines.append((f"switch: new best arm's share 7 days after, {decay}: {share:.1%} "
                      "(>= 50%)", share >= 0.5))  # fmt: skip
    for forgetting in ("thompson_decay_7d", "thompson_decay_5d", "thompson_window_7d"):
        swapped, steady = regret(names[5], forgetting), regret(names[6], forgetting)
        base_swapped, base_steady = regret(names[5], "thompson"), regret(names[6], "thompson")
        if swapped and steady and base_swapped and base_steady:
            r1 = swapped.regret_mean / base_swapped.regret_mean
            r2 = steady.regret_mean / base_steady.regret_mean
            lines.append((f"drift, {forgetting}: regret / stationary {r1:.2f} with the swap "
                          "(<= 0.33)", r1 <= 1 / 3))  # fmt: skip
            lines.append((f"drift, {forgetting}: regret / stationary {r2:.2f} without "
                          "(<= 3)", r2 <= 3))  # fmt: skip
    value, even = regret(names[4], "thompson"), regret(names[4], "uniform")
    conversion = regret(names[4], "thompson_conversion_only")
    if value and even and conversion:
        lines.append((f"revenue: value metric regret {value.regret_mean:,.0f} vs even split "
                      f"{even.regret_mean:,.0f} vs conversion-only {conversion.regret_mean:,.0f}",
                      value.regret_mean < 0.5 * even.regret_mean))  # fmt: skip
    print("## Targets\n")
    for text, ok in lines:
        print(f"- {'met' if ok else 'MISSED'}: {text}")


if __name__ == "__main__":
    main()
