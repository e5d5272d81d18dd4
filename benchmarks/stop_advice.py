"""Stop advice that is never wrong in kind: the first advice other than "continue" must
name the true winner when there is one, and must not crown a winner in an A/A test.

Prints, per scenario, how often the first non-continue advice was right (in an A/A test:
how often no winner was crowned), each kind of advice, its median day, and each target
met or missed. Thompson sampling, daily batches,
the default stop rule (min 7 days, P(best) 95%, value remaining 1%, equivalence +-1%).

    python benchmarks/stop_advice.py            # 200 seeds
    python benchmarks/stop_advice.py --quick    # 20 seeds
"""

from __future__ import annotations

import argparse
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from mabapi.simulation.environments import Environment
from mabapi.simulation.runner import RunResult, run
from mabapi.simulation.scenario import policy_spec
from mabapi.stats.decision import Action, StopRule


@dataclass(frozen=True)
class Scenario:
    name: str
    environment: Environment
    days: int
    traffic: int
    target: str
    target_rate: float


SCENARIOS = (
    Scenario("10% vs 11% (a 10% lift), 5,000/day", Environment(rates=(0.10, 0.11)), 40, 5000,
             "first advice names the winner", 0.97),
    Scenario("5% vs 6%, 2,000/day", Environment(rates=(0.05, 0.06)), 40, 2000,
             "first advice names the winner", 0.97),
    Scenario("A/A, two arms at 10%, 5,000/day", Environment(rates=(0.10, 0.10)), 40, 5000,
             "no false winner", 0.95),
    Scenario("A/A, three arms at 5%, 2,000/day", Environment(rates=(0.05, 0.05, 0.05)), 40,
             2000, "no false winner", 0.95),
)  # fmt: skip


def _one(scenario: Scenario, seed: int) -> RunResult:
    return run(
        scenario.environment,
        policy_spec("thompson"),
        days=scenario.days,
        traffic_per_day=scenario.traffic,
        seed=seed,
        stop_rule=StopRule(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20 seeds, for a smoke test")
    args = parser.parse_args()
    seeds = 20 if args.quick else args.seeds
    print(f"{seeds} seeds per scenario, Thompson sampling, daily batches, default stop rule\n")
    print("| scenario | first advice right (of runs advised) | winner | no difference "
          "| still going | median day | target |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    verdicts = []
    for scenario in SCENARIOS:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(partial(_one, scenario), range(seeds)))
        kinds = Counter(r.first_advice for r in results)
        aa = len(set(scenario.environment.rates)) == 1
        advised = [r for r in results if r.first_advice is not None]
        if aa:  # no false winner: every advice but stop_winner is right, "continue" too
            right = sum(r.first_advice is not Action.STOP_WINNER for r in results) / seeds
        else:  # the advice given names the true winner (runs still going are not wrong)
            right = sum(bool(r.first_advice_correct) for r in advised) / max(len(advised), 1)
        days = [r.first_advice_day for r in results if r.first_advice_day is not None]
        median = f"{np.median(days):g}" if days else "-"
        met = right >= scenario.target_rate
        verdicts.append(met)
        print(f"| {scenario.name} | {right:.1%} | {kinds[Action.STOP_WINNER] / seeds:.0%} "
              f"| {kinds[Action.STOP_NO_DIFFERENCE] / seeds:.0%} | {kinds[None] / seeds:.0%} "
              f"| {median} | {scenario.target} >= {scenario.target_rate:.0%}: "
              f"{'met' if met else 'MISSED'} |")  # fmt: skip
    print(f"\n{sum(verdicts)} of {len(verdicts)} targets met")


if __name__ == "__main__":
    main()
