"""Stop advice, measured by outcomes: how soon the first advice other than "continue"
comes, whether it names the better arm, and whether an A/A test is ever told one arm is
*better*.

Thompson sampling with the service's default exploration, daily batches, the default
stop rule checked after every day (docs/STATISTICS.md, "Stop advice"). Per scenario:
each kind of first advice, the share of runs whose first advice names the better arm
(ship or winner) by day 14 and by day 28 (30 for the needles), the share naming a worse
arm, the share ever told "X is better" (an A/A test must stay at or below 5%), the true
relative loss of what a ship advice named (calibration: at most the ship threshold on
average), and each target met or missed.

    python -m benchmarks.stop_advice            # 200 seeds, about 6 minutes on two cores
    python -m benchmarks.stop_advice --quick    # 20 seeds
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from mabapi.simulation.environments import Environment
from mabapi.simulation.runner import RunResult, run
from mabapi.simulation.scenario import policy_spec
from mabapi.stats.decision import Action, StopRule, days_to_decision
from mabapi.stats.posterior import BetaPosterior, BinomialCounts

LIFT = "real lift"
NEEDLE = "needle"
AA = "A/A"
INFO = "information"


@dataclass(frozen=True)
class Scenario:
    name: str
    environment: Environment
    traffic: int
    kind: str
    days: int = 28
    targets: dict[str, float] = field(default_factory=dict)
    # Runs per seed asked for: 5 where the rates sit within a percent of their targets
    # (200 runs put +-0.8% around a 1.5% rate, too coarse to call met or missed).
    seeds_scale: int = 1


def _needle(arms: int, low: float, high: float) -> Environment:
    return Environment(rates=(low,) * (arms - 1) + (high,))


LIFT_TARGETS = {"by day 14": 0.95, "by day 28": 0.99, "worse arm": 0.01}
# Revenue per visitor 10% higher: the same 5% conversion, order values x1.1.
VALUE = Environment(rates=(0.05, 0.05), value_log_mean=(3.0, 3.0 + math.log(1.1)))

SCENARIOS = (
    Scenario("K=2: 10% vs 11%, 5,000/day", _needle(2, 0.10, 0.11), 5000, LIFT,
             targets=LIFT_TARGETS),
    Scenario("K=5: 10% x4 vs 11%, 5,000/day", _needle(5, 0.10, 0.11), 5000, LIFT,
             targets=LIFT_TARGETS),
    Scenario("value: revenue/visitor +10%, 5,000/day", VALUE, 5000, LIFT,
             targets=LIFT_TARGETS, seeds_scale=5),
    Scenario("K=12 needle: 1.0% x11 vs 1.6%, 20,000/day", _needle(12, 0.01, 0.016), 20000,
             NEEDLE, days=30, targets={"by day 30": 0.90, "worse arm": 0.01}),
    Scenario("K=20 needle: 1.0% x19 vs 1.6%, 20,000/day", _needle(20, 0.01, 0.016), 20000,
             NEEDLE, days=30, targets={"by day 30": 0.90, "worse arm": 0.01}),
    Scenario("K=12: 10% x11 vs 11%, 5,000/day", _needle(12, 0.10, 0.11), 5000, INFO, days=30),
    Scenario("K=20: 10% x19 vs 11%, 5,000/day", _needle(20, 0.10, 0.11), 5000, INFO, days=30),
    Scenario("A/A: two arms at 10%, 5,000/day", Environment(rates=(0.10,) * 2), 5000, AA,
             targets={"told better": 0.05}),
    Scenario("A/A: three arms at 10%, 5,000/day", Environment(rates=(0.10,) * 3), 5000, AA,
             targets={"told better": 0.05}),
    Scenario("A/A: four arms at 5%, 2,000/day", Environment(rates=(0.05,) * 4), 2000, AA,
             targets={"told better": 0.05}),
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


def _named_better_by(results: list[RunResult], day: int) -> float:
    named = sum(
        bool(r.first_advice_correct)
        and r.first_advice is not Action.STOP_NO_DIFFERENCE
        and r.first_advice_day is not None
        and r.first_advice_day <= day
        for r in results
    )
    return named / len(results)


def _ship_loss(scenario: Scenario, results: list[RunResult]) -> str:
    """Mean true relative loss of the arm a first stop_ship named."""
    expected = scenario.environment.expected_reward(0)
    losses = [
        (expected.max() - expected[r.first_winner]) / expected[r.first_winner]
        for r in results
        if r.first_advice is Action.STOP_SHIP and r.first_winner is not None
    ]
    return f"{np.mean(losses):.3%}" if losses else "-"


FORECAST_DAY = 7  # the forecast is checked as made after this many days


def forecast_error(scenario: Scenario, results: list[RunResult]) -> str:
    """For runs still at "continue" after FORECAST_DAY days: the days_to_decision the
    summary would have said then (from the data so far and the last 7 days' traffic)
    against the days it really took. Median of actual / forecast, and the share of
    runs whose decision came within a factor of 2 of the forecast."""
    if scenario.environment.is_value:
        return "-"
    ratios = []
    for r in results:
        if r.first_advice_day is None or r.first_advice_day <= FORECAST_DAY:
            continue
        units = r.units[:FORECAST_DAY].sum(axis=0)
        successes = r.successes[:FORECAST_DAY].sum(axis=0)
        posteriors = [
            BetaPosterior.from_counts(BinomialCounts(float(n), float(k)))
            for n, k in zip(units, successes, strict=True)
        ]
        per_day = r.units[FORECAST_DAY - 7 : FORECAST_DAY].mean(axis=0)
        said = days_to_decision(
            posteriors, units, per_day, days_of_data=FORECAST_DAY, rule=StopRule()
        )
        if said is not None:
            ratios.append((r.first_advice_day - FORECAST_DAY) / said)
    if not ratios:
        return "-"
    within = float(np.mean([0.5 <= x <= 2.0 for x in ratios]))
    return f"{np.median(ratios):.2f} ({within:.0%} within 2x, {len(ratios)} runs)"


def measure(scenario: Scenario, results: list[RunResult]) -> dict[str, float]:
    seeds = len(results)
    expected = scenario.environment.expected_reward(0)
    best = set(np.flatnonzero(expected == expected.max()).tolist())
    wrong = sum(r.first_winner is not None and r.first_winner not in best for r in results) / seeds
    return {
        "by day 14": _named_better_by(results, 14),
        "by day 28": _named_better_by(results, 28),
        "by day 30": _named_better_by(results, 30),
        "worse arm": wrong,
        "told better": sum(r.winner_day is not None for r in results) / seeds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20 seeds, for a smoke test")
    parser.add_argument("--only", default="", help="only scenarios whose name contains this")
    args = parser.parse_args()
    seeds = 20 if args.quick else args.seeds
    rule = StopRule()
    print(f"{seeds} seeds per scenario (each row says its runs); Thompson sampling, "
          f"daily batches, the default stop rule (ship at expected loss <= "
          f"{rule.ship_loss_threshold:.1%}; value metrics half that on days 7-13)\n")  # fmt: skip
    print("| scenario | winner first | ship first | no difference first | still going "
          "| median day | better arm named by 14 / 28 (30) | worse arm named "
          "| ever told \"better\" | true loss of a ship "
          "| days taken / days forecast on day 7 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    verdicts: list[str] = []
    for scenario in (s for s in SCENARIOS if args.only in s.name):
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            runs = seeds * scenario.seeds_scale
            results = list(pool.map(partial(_one, scenario), range(runs)))
        kinds = Counter(r.first_advice for r in results)
        days = [r.first_advice_day for r in results if r.first_advice_day is not None]
        median = f"{np.median(days):g}" if days else "-"
        got = measure(scenario, results)
        late = "by day 30" if scenario.days == 30 else "by day 28"
        print(f"| {scenario.name} ({runs} runs) | {kinds[Action.STOP_WINNER] / runs:.1%} "
              f"| {kinds[Action.STOP_SHIP] / runs:.1%} "
              f"| {kinds[Action.STOP_NO_DIFFERENCE] / runs:.1%} | {kinds[None] / runs:.1%} "
              f"| {median} | {got['by day 14']:.1%} / {got[late]:.1%} "
              f"| {got['worse arm']:.1%} | {got['told better']:.1%} "
              f"| {_ship_loss(scenario, results)} "
              f"| {forecast_error(scenario, results)} |")  # fmt: skip
        for name, target in scenario.targets.items():
            upper = name in ("worse arm", "told better")
            met = got[name] <= target if upper else got[name] >= target
            sign = "<=" if upper else ">="
            verdicts.append(f"- {scenario.name}: {name} {got[name]:.1%} (target {sign} "
                            f"{target:.0%}): {'met' if met else 'MISSED'}")  # fmt: skip
    print()
    print("\n".join(verdicts))
    met_count = sum(line.endswith(": met") for line in verdicts)
    print(f"\n{met_count} of {len(verdicts)} targets met")


if __name__ == "__main__":
    main()
