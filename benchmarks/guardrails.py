"""Guardrail error rates: how often a variant that does no harm ever breaches over 30
daily checks (false breaches), and how often a true 20% harm on a 2% guardrail rate is
caught within 7 days (detection), at 5,000 units a day per variant. Also the rule
without its sequential guard, other margins and other traffic, to show what each part
does.

Targets (the default rule: any harm, probability 0.95): false breaches <= 5%,
detection within 7 days >= 90%.

    python -m benchmarks.guardrails             # 1,000 seeds per row
    python -m benchmarks.guardrails --quick     # 100 seeds
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from benchmarks.policies import print_verdicts
from mabapi.simulation.guardrails import GuardrailScenario, breach_rate
from mabapi.stats.guardrails import GuardrailRule

BASE = 0.02


def _rate(rule: GuardrailRule, scenario: GuardrailScenario, within: int, seeds: range) -> float:
    return breach_rate(scenario, rule, seeds, within_days=within)


def measure(rule: GuardrailRule, units: int, *, seeds: int, jobs: int) -> tuple[float, float]:
    """(false-breach rate over 30 checks, detection rate of a 20% harm within 7 days)."""
    chunks = [range(start, min(start + 50, seeds)) for start in range(0, seeds, 50)]
    results = []
    for harm, days, within in ((0.0, 30, 30), (0.2, 7, 7)):
        scenario = GuardrailScenario(BASE, harm, units, days)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            parts = list(pool.map(partial(_rate, rule, scenario, within), chunks))
        results.append(sum(p * len(c) for p, c in zip(parts, chunks, strict=True)) / seeds)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100 seeds, for a smoke test")
    args = parser.parse_args()
    seeds = 100 if args.quick else args.seeds
    rows = [
        ("default: any harm, 0.95", 0.0, 5000, True),
        ("default without the sequential guard", 0.0, 5000, False),
        ("margin 0.05, 0.95", 0.05, 5000, True),
        ("margin 0.05, 0.95, without the guard", 0.05, 5000, False),
        ("default, 1,000 units/day", 0.0, 1000, True),
        ("default, 50,000 units/day", 0.0, 50_000, True),
    ]
    se = math.sqrt(0.05 * 0.95 / seeds)
    print(f"{seeds} seeds per cell; 2% guardrail rate; standard error near 5%: {se:.1%}\n")
    print("| rule | units/day/variant | false breaches (A/A, 30 checks) | 20% harm within 7 days |")
    print("|---|---|---|---|")
    measured = {}
    for label, margin, units, guard in rows:
        rule = GuardrailRule(
            margin=margin,
            probability=0.95,
            higher_is_better=False,
            min_units=100,
            sequential=guard,
        )
        false_rate, detection = measure(rule, units, seeds=seeds, jobs=args.jobs)
        measured[label] = (false_rate, detection)
        print(f"| {label} | {units:,} | {false_rate:.1%} | {detection:.1%} |", flush=True)
    false_rate, detection = measured["default: any harm, 0.95"]
    print_verdicts(
        [
            (f"false breaches {false_rate:.1%} (<= 5%)", false_rate <= 0.05),
            (f"detection within 7 days {detection:.1%} (>= 90%)", detection >= 0.90),
        ]
    )


if __name__ == "__main__":
    main()
