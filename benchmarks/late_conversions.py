"""Late conversions: delay-aware Thompson sampling against delay-unaware mabapi, floorless
exact TS and MABWiser, and the no-delay oracle (the same experiment with every conversion
reported at once), daily batches.

A day's conversions are reported over the following days (the client re-posts each past
day's growing totals); policies see only what has been reported. Regret counts every
conversion. Targets:

- with a delay, the learnt correction (`conversion_delay_days` only) closes at least half
  of the regret gap between delay-unaware TS and the no-delay oracle;
- with no delay at all, turning the correction on costs at most 5% of regret.

    python benchmarks/late_conversions.py            # 200 seeds
    python benchmarks/late_conversions.py --quick    # 20 seeds, a smoke test
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from benchmarks.policies import mabwiser_allocator, mabwiser_installed, print_verdicts
from mabapi.simulation.environments import Environment
from mabapi.simulation.runner import DelayedReports, History, PolicySpec, run
from mabapi.simulation.scenario import policy_spec
from mabapi.stats.policies import PolicyConfig, PolicyName
from mabapi.stats.posterior import BetaPosterior, BetaPrior, BinomialCounts


@dataclass(frozen=True)
class Scenario:
    name: str
    environment: Environment
    days: int
    traffic: int
    reporting: tuple[float, ...]  # (1.0,): every conversion reported the same day
    delay_days: int  # what the delay-aware policies are told (the setting)


TWO = Environment(rates=(0.05, 0.06), name="5% vs 6%")
FIVE = Environment(rates=(0.05, 0.05, 0.05, 0.05, 0.06), name="5 arms, 6% vs 5%")
WEEK = (0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.06, 0.04)

SCENARIOS = (
    Scenario("5% vs 6%, 30 d x 4,000/d, reported 50/30/20% over 3 days", TWO, 30, 4_000,
             (0.5, 0.3, 0.2), 2),
    Scenario("5% vs 6%, 30 d x 4,000/d, reported over 8 days", TWO, 30, 4_000, WEEK, 7),
    Scenario("5 arms, 6% vs 5%, 30 d x 10,000/d, reported over 8 days", FIVE, 30, 10_000,
             WEEK, 7),
    Scenario("5% vs 6%, 30 d x 4,000/d, no delay (setting 7 days)", TWO, 30, 4_000, (1.0,), 7),
)  # fmt: skip

UNAWARE = "mabapi, delay-unaware (setting 0)"
LEARNT = "mabapi, conversion_delay_days (curve learnt)"
GIVEN = "mabapi, conversion_delay_cdf (true curve given)"
EXACT = "floorless exact TS"
MABWISER = "MABWiser TS"
ORACLE = "no-delay oracle (mabapi, all reported at once)"


def policies(scenario: Scenario, with_mabwiser: bool) -> list[str]:
    names = [UNAWARE, LEARNT]
    if len(scenario.reporting) > 1:
        names += [GIVEN, EXACT]
        if with_mabwiser:
            names.append(MABWISER)
        names.append(ORACLE)
    return names


def spec_for(name: str, scenario: Scenario) -> PolicySpec:
    """Built in the worker process (MABWiser's allocator is a closure: not picklable)."""
    if name == MABWISER:
        return PolicySpec(
            "mabwiser_ts", PolicyConfig(PolicyName.UNIFORM), custom=mabwiser_allocator("ts")
        )
    if name == EXACT:
        return policy_spec("thompson", floor=0.0, exploration=0.0)
    base = policy_spec("thompson")
    if name == LEARNT:
        return PolicySpec(base.name, base.config, base.controls, delay_days=scenario.delay_days)
    if name == GIVEN:
        cdf = tuple(float(x) for x in np.cumsum(scenario.reporting) / sum(scenario.reporting))
        return PolicySpec(
            base.name, base.config, base.controls, delay_days=len(cdf) - 1, delay_cdf=cdf
        )
    return base


def _regret(scenario: Scenario, name: str, seed: int) -> float:
    result = run(
        scenario.environment,
        spec_for(name, scenario),
        days=scenario.days,
        traffic_per_day=scenario.traffic,
        seed=seed,
        reporting=None if name == ORACLE else scenario.reporting,
    )
    return float(result.regret[-1])


def _covered(correct: bool, seed: int) -> tuple[bool, bool]:
    """An even split of 5% vs 6% for 14 days at 4,000/day, reported 50/30/20%: does each
    arm's 95% credible interval, as the summary would compute it today, hold its rate?"""
    rng = np.random.default_rng(seed)
    environment, days, traffic = TWO, 14, 4_000
    history = History(*(np.zeros((days, 2)) for _ in range(4)))
    reports = DelayedReports(days, 2, (0.5, 0.3, 0.2))
    for day in range(days):
        units = rng.multinomial(traffic, [0.5, 0.5])
        outcome = environment.outcome(day, units, rng)
        history.units[day] = units
        history.successes[day] = outcome.successes
        reports.record(day, outcome.successes, rng)
    spec = PolicySpec("thompson", delay_days=2 if correct else 0)
    # The summary reads on the last day itself: that day is age 0.
    seen = reports.seen(history, days, spec)
    result = []
    for arm, rate in enumerate(environment.rates):
        posterior = BetaPosterior.from_counts(
            BinomialCounts(float(seen.units[:days, arm].sum()),
                           float(seen.successes[:days, arm].sum())), BetaPrior()
        )  # fmt: skip
        lower, upper = posterior.credible_interval(0.95)
        result.append(lower <= rate <= upper)
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20 seeds, for a smoke test")
    args = parser.parse_args()
    seeds = 20 if args.quick else args.seeds
    with_mabwiser = mabwiser_installed()
    print(f"{seeds} seeds per row; regret: mean ± standard error\n")
    print("| scenario | policy | regret | vs delay-unaware |")
    print("|---|---|---|---|")
    verdicts: list[tuple[str, bool]] = []
    for scenario in SCENARIOS:
        results: dict[str, tuple[float, float]] = {}
        for name in policies(scenario, with_mabwiser):
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                regrets = np.array(list(pool.map(partial(_regret, scenario, name), range(seeds))))
            results[name] = (float(regrets.mean()), float(regrets.std(ddof=1) / math.sqrt(seeds)))
        unaware = results[UNAWARE][0]
        for name, (mean, se) in results.items():
            print(f"| {scenario.name} | {name} | {mean:,.1f} ± {se:,.1f} | "
                  f"{mean / unaware:.2f}x |")  # fmt: skip
        learnt = results[LEARNT][0]
        if len(scenario.reporting) > 1:
            oracle = results[ORACLE][0]
            closed = (unaware - learnt) / (unaware - oracle) if unaware > oracle else float("nan")
            verdicts.append((f"{scenario.name}: the learnt correction closes {closed:.0%} of "
                             "the gap to the oracle (>= 50%)", closed >= 0.5))  # fmt: skip
        else:
            cost = learnt / unaware - 1
            verdicts.append((f"{scenario.name}: the correction costs {cost:+.1%} (<= +5%)",
                             cost <= 0.05))  # fmt: skip
    coverage_seeds = 100 if args.quick else 1000
    print(f"\nCoverage of the summary's 95% intervals ({coverage_seeds} seeds, even split, "
          "14 days, reported 50/30/20%):\n")  # fmt: skip
    print("| correction | 5% arm | 6% arm |")
    print("|---|---|---|")
    for correct in (False, True):
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            hits = np.array(list(pool.map(partial(_covered, correct), range(coverage_seeds))))
        share = hits.mean(axis=0)
        print(f"| {'learnt curve' if correct else 'none'} | {share[0]:.1%} | {share[1]:.1%} |")
        if correct:
            # Within 1.5 points of 95% (the binomial standard error over 1,000 seeds is 0.7).
            near = bool(np.all(np.abs(share - 0.95) <= 0.015))
            verdicts.append((f"corrected 95% intervals cover {share[0]:.1%} and {share[1]:.1%} "
                             "(within 93.5-96.5%)", near))  # fmt: skip
    print_verdicts(verdicts)


if __name__ == "__main__":
    main()
