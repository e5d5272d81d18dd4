"""Drift on autopilot: `forgetting: "auto"` (forget only when a change-point test fires)
against no forgetting, a fixed 7-day half-life, floorless exact TS and MABWiser, daily
batches, 60 days x 5,000 units.

Targets: on a stationary problem, auto's regret within 15% of no forgetting; with weekly
seasonality that moves every arm alike (5% vs 5.5%, every rate x1.3 on weekends, 56
days), within 5%; when the best arm swaps on day 30, at most 0.4x of no forgetting.

    python benchmarks/drift.py             # 200 seeds
    python benchmarks/drift.py --quick     # 20 seeds
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np

from benchmarks.policies import mabwiser_allocator, mabwiser_installed, print_verdicts
from mabapi.simulation.environments import Environment
from mabapi.simulation.runner import PolicySpec, run
from mabapi.simulation.scenario import policy_spec
from mabapi.stats.policies import PolicyConfig, PolicyName

WEEKENDS = "5% vs 5.5%, every rate x1.3 on weekends, 56 days"
SCENARIOS = {
    "stationary, 5% vs 6%": Environment((0.05, 0.06)),
    "swap on day 30, 5% <-> 6%": Environment(
        (0.05, 0.06), switch_day=30, switch_rates=(0.06, 0.05)
    ),
    "stationary with weekly seasonality (+-20%, all arms)": Environment(
        (0.05, 0.06), weekly_amplitude=0.2
    ),
    WEEKENDS: Environment((0.05, 0.055), weekend_factor=1.3),
    "5 arms, the best (6%) drops to 4.5% on day 30": Environment(
        (0.05, 0.05, 0.05, 0.05, 0.06), switch_day=30, switch_rates=(0.05, 0.05, 0.05, 0.05, 0.045)
    ),
}
NONE = "mabapi, no forgetting (default)"
AUTO = 'mabapi, forgetting "auto"'
HALF_LIFE = "mabapi, half-life 7 days"
EXACT = "floorless exact TS"
MABWISER = "MABWiser TS"


def spec_for(name: str) -> PolicySpec:
    if name == MABWISER:
        return PolicySpec(
            "mabwiser_ts", PolicyConfig(PolicyName.UNIFORM), custom=mabwiser_allocator("ts")
        )
    if name == EXACT:
        return policy_spec("thompson", floor=0.0, exploration=0.0)
    if name == AUTO:
        return policy_spec("thompson", forgetting="auto")
    if name == HALF_LIFE:
        return policy_spec("thompson", half_life_days=7)
    return policy_spec("thompson")


def _regret(environment: Environment, name: str, seed: int) -> float:
    days = 56 if environment.weekend_factor != 1.0 else 60
    result = run(environment, spec_for(name), days=days, traffic_per_day=5000, seed=seed)
    return float(result.regret[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20 seeds, for a smoke test")
    args = parser.parse_args()
    seeds = 20 if args.quick else args.seeds
    names = [NONE, AUTO, HALF_LIFE, EXACT] + ([MABWISER] if mabwiser_installed() else [])
    print(f"{seeds} seeds per row; regret: mean ± standard error\n")
    print("| scenario | policy | regret | vs no forgetting |")
    print("|---|---|---|---|")
    results: dict[tuple[str, str], float] = {}
    for label, environment in SCENARIOS.items():
        for name in names:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                regrets = np.array(
                    list(pool.map(partial(_regret, environment, name), range(seeds)))
                )
            mean, se = float(regrets.mean()), float(regrets.std(ddof=1) / math.sqrt(seeds))
            results[label, name] = mean
            print(f"| {label} | {name} | {mean:,.1f} ± {se:,.1f} | "
                  f"{mean / results[label, NONE]:.2f}x |")  # fmt: skip
    stationary = results["stationary, 5% vs 6%", AUTO] / results["stationary, 5% vs 6%", NONE]
    swap = results["swap on day 30, 5% <-> 6%", AUTO] / results["swap on day 30, 5% <-> 6%", NONE]
    weekends = results[WEEKENDS, AUTO] / results[WEEKENDS, NONE]
    verdicts = [
        (f"stationary: auto / none = {stationary:.2f} (<= 1.15)", stationary <= 1.15),
        (
            f"weekly seasonality, all arms alike: auto / none = {weekends:.2f} (<= 1.05)",
            weekends <= 1.05,
        ),
        (f"swap on day 30: auto / none = {swap:.2f} (<= 0.40)", swap <= 0.40),
    ]
    print_verdicts(verdicts)


if __name__ == "__main__":
    main()
