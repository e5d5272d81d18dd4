"""When does the bandit decide, against a fixed-horizon A/B test sized for 80% power?

Two arms at 5% base rate, 2,000 units a day. For each effect, the fixed horizon is the
day a two-proportion z-test (two-sided 5%, 80% power, 50/50 split) has its sample size:
1, 3 and 6 weeks. The A/B test is simulated on an even split and read once, on that
day. The bandits (`thompson`, the default, and `top_two_thompson`) run with the
summary's default stop rule, checked every day, for three fixed horizons at most; their
decision is the first advice other than "continue" (a ship or a winner).

Printed per effect: how often each method's decision names the better arm, how often a
worse one, and the median and 95th-percentile day of a correct decision over all runs
(a run with no correct decision counts as never: "-" when more than half, or more than
5%, of runs have none), and the ratio of the bandit's median day to the fixed horizon.

    python benchmarks/decision_speed.py            # 100 seeds
    python benchmarks/decision_speed.py --quick    # 10 seeds
    python benchmarks/decision_speed.py --ship-loss 0.001   # a stricter ship rule
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import optimize, stats

from mabapi.simulation.environments import Environment
from mabapi.simulation.runner import run
from mabapi.simulation.scenario import policy_spec
from mabapi.stats.decision import Action, StopRule

BASE = 0.05
TRAFFIC = 2_000  # units a day, both arms together
ALPHA, POWER = 0.05, 0.80


def sample_size(p1: float, p2: float) -> float:
    """Units per arm of the two-sided two-proportion z-test (Fleiss, *Statistical Methods
    for Rates and Proportions*, 3rd ed., eq. 4.14, without continuity correction)."""
    z_a, z_b = stats.norm.ppf(1 - ALPHA / 2), stats.norm.ppf(POWER)
    mean = (p1 + p2) / 2
    spread = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return float(spread**2 / (p2 - p1) ** 2)


def effect_for(days: int) -> float:
    """The rate of the better arm whose fixed horizon is `days` at TRAFFIC a day."""
    per_arm = TRAFFIC / 2 * days
    root: float = optimize.brentq(lambda p2: sample_size(BASE, p2) - per_arm, BASE + 1e-6, 0.5)
    return root


@dataclass(frozen=True)
class Outcome:
    day: int | None  # day of the first stop_winner
    correct: bool | None


def fixed_horizon(rates: tuple[float, float], days: int, seed: int) -> Outcome:
    rng = np.random.default_rng(seed)
    per_arm = TRAFFIC // 2 * days
    successes = rng.binomial(per_arm, rates)
    p = successes / per_arm
    pooled = successes.sum() / (2 * per_arm)
    error = math.sqrt(pooled * (1 - pooled) * 2 / per_arm)
    z = (p[1] - p[0]) / error if error > 0 else 0.0
    if abs(z) < stats.norm.ppf(1 - ALPHA / 2):
        return Outcome(None, None)
    return Outcome(days, bool(z > 0))


def bandit(
    policy: str, rates: tuple[float, float], days: int, ship_loss: float, seed: int
) -> Outcome:
    result = run(
        Environment(rates=rates),
        policy_spec(policy),
        days=days,
        traffic_per_day=TRAFFIC,
        seed=seed,
        stop_rule=StopRule(ship_loss_threshold=ship_loss),
    )
    if result.first_advice not in (Action.STOP_WINNER, Action.STOP_SHIP):
        return Outcome(None, None)
    return Outcome(result.first_advice_day, result.first_advice_correct)


def percentile_day(outcomes: list[Outcome], q: float) -> float | None:
    """The q-quantile of the day of a correct decision, runs without one counting as
    never (None when the quantile falls among those)."""
    days = sorted(o.day if o.correct and o.day is not None else math.inf for o in outcomes)
    value = float(np.quantile(np.array(days), q, method="higher"))
    return None if math.isinf(value) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10 seeds, for a smoke test")
    parser.add_argument(
        "--ship-loss", type=float, default=StopRule().ship_loss_threshold,
        help="the stop rule's ship_loss_threshold (default: the service's)",
    )  # fmt: skip
    args = parser.parse_args()
    seeds = 10 if args.quick else args.seeds
    print(f"Two arms, base rate {BASE:.0%}, {TRAFFIC:,} units a day, {seeds} seeds, "
          f"ship_loss_threshold {args.ship_loss:.2%}\n")  # fmt: skip
    print("| fixed horizon | effect | method | correct decision | by the horizon "
          "| median day | 95th percentile day | median / horizon | worse arm named |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for weeks in (1, 3, 6):
        horizon = 7 * weeks
        best = effect_for(horizon)
        rates = (BASE, best)
        methods = {
            "fixed-horizon z-test": partial(fixed_horizon, rates, horizon),
            "thompson": partial(bandit, "thompson", rates, 3 * horizon, args.ship_loss),
            "top_two_thompson": partial(
                bandit, "top_two_thompson", rates, 3 * horizon, args.ship_loss
            ),
        }
        for name, method in methods.items():
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                outcomes = list(pool.map(method, range(seeds)))
            right = [o for o in outcomes if o.correct]
            wrong = sum(o.correct is False for o in outcomes)
            by_horizon = sum(o.day is not None and o.day <= horizon for o in right)
            median, p95 = percentile_day(outcomes, 0.5), percentile_day(outcomes, 0.95)
            ratio = f"{median / horizon:.2f}" if median is not None else "-"
            print(f"| {weeks} week(s), day {horizon} | {BASE:.1%} -> {best:.2%} "
                  f"(+{best / BASE - 1:.0%}) | {name} | {len(right) / seeds:.0%} "
                  f"| {by_horizon / seeds:.0%} | {median if median is not None else '-'} "
                  f"| {p95 if p95 is not None else 'never'} | {ratio} "
                  f"| {wrong / seeds:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
