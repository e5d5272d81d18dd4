"""The default exploration against floorless exact Thompson sampling and MABWiser: a
needle (one better arm) among K = 2, 5, 10 and 20, daily batches and per-event updates.

The default keeps a total share of 0.1% for measuring, split over the K arms; the old
default was a floor of 1% per arm (K% of all traffic). Target: the default beats or ties
(within two standard errors) floorless exact TS and MABWiser TS in every scenario.

    python benchmarks/exploration.py               # 100 seeds daily, 40 per-event
    python benchmarks/exploration.py --quick       # 10 seeds, a smoke test
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from benchmarks.policies import mabwiser_allocator, mabwiser_installed, print_verdicts
from mabapi.simulation.environments import Environment
from mabapi.simulation.runner import PolicySpec, run
from mabapi.simulation.scenario import policy_spec
from mabapi.stats.policies import PolicyConfig, PolicyName

Cadence = Literal["daily", "event"]


@dataclass(frozen=True)
class Scenario:
    arms: int
    environment: Environment
    days: int
    traffic: int
    cadence: Cadence


def needle(arms: int, base: float, best: float) -> Environment:
    return Environment(rates=(base,) * (arms - 1) + (best,), name=f"{arms} arms")


SCENARIOS = (
    Scenario(2, needle(2, 0.05, 0.06), 30, 4_000, "daily"),
    Scenario(5, needle(5, 0.05, 0.06), 30, 10_000, "daily"),
    Scenario(10, needle(10, 0.05, 0.06), 30, 10_000, "daily"),
    Scenario(20, needle(20, 0.010, 0.016), 30, 20_000, "daily"),
    Scenario(2, needle(2, 0.05, 0.06), 20, 1_000, "event"),
    Scenario(20, needle(20, 0.010, 0.016), 20, 1_000, "event"),
)


def policies(cadence: Cadence, with_mabwiser: bool) -> list[str]:
    names = ["default (exploration 0.1%)", "floorless exact TS", "old default (floor 1% per arm)"]
    if with_mabwiser and cadence == "daily":
        names.append("MABWiser TS")
    return names


def spec_for(name: str) -> PolicySpec:
    """Built in the worker process (MABWiser's allocator is a closure: not picklable)."""
    if name == "MABWiser TS":
        return PolicySpec(
            "mabwiser_ts", PolicyConfig(PolicyName.UNIFORM), custom=mabwiser_allocator("ts")
        )
    if name == "floorless exact TS":
        return policy_spec("thompson", floor=0.0, exploration=0.0)
    if name == "old default (floor 1% per arm)":
        return policy_spec("thompson", floor=0.01, exploration=0.0)
    return policy_spec("thompson")


def _regret(scenario: Scenario, name: str, seed: int) -> float:
    result = run(
        scenario.environment,
        spec_for(name),
        days=scenario.days,
        traffic_per_day=scenario.traffic,
        seed=seed,
        cadence=scenario.cadence,
    )
    return float(result.regret[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--event-seeds", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10 seeds, for a smoke test")
    args = parser.parse_args()
    with_mabwiser = mabwiser_installed()
    print("| scenario | policy | regret (mean ± se) | vs floorless |")
    print("|---|---|---|---|")
    verdicts: list[tuple[str, bool]] = []
    for scenario in SCENARIOS:
        seeds = (
            10 if args.quick else (args.seeds if scenario.cadence == "daily" else args.event_seeds)
        )
        label = (f"{scenario.arms} arms, {scenario.environment.rates[-1]:.1%} vs "
                 f"{scenario.environment.rates[0]:.1%}, {scenario.days} d x "
                 f"{scenario.traffic:,}/d, {scenario.cadence}, {seeds} seeds")  # fmt: skip
        results: dict[str, tuple[float, float]] = {}
        for name in policies(scenario.cadence, with_mabwiser):
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                regrets = np.array(list(pool.map(partial(_regret, scenario, name), range(seeds))))
            results[name] = (float(regrets.mean()), float(regrets.std(ddof=1) / math.sqrt(seeds)))
        floorless = results["floorless exact TS"][0]
        for name, (mean, se) in results.items():
            print(f"| {label} | {name} | {mean:,.1f} ± {se:,.1f} | {mean / floorless:.2f}x |")
        default, default_se = results["default (exploration 0.1%)"]
        for peer in ("floorless exact TS", "MABWiser TS"):
            if peer in results:
                mean, se = results[peer]
                # A tie: within two standard errors of the difference (independent seeds).
                met = default <= mean + 2 * math.hypot(default_se, se)
                verdicts.append((f"{label}: default beats or ties {peer}", met))
    print_verdicts(verdicts)


if __name__ == "__main__":
    main()
