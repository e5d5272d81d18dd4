"""mabapi's off-policy estimators against the Open Bandit Pipeline's on the same units.

    pip install -e '.[bench]'        # obp is in the bench extra (it pulls torch)
    python -m benchmarks.ope_peer            # prints the table of both and the differences
    python -m benchmarks.ope_peer --write    # records them as tests/stats/obp_golden.json

The logged data are adaptive-looking (propensities from a handful of splits, a segmented
context, conversions and values); obp gets one row per unit with the same reward model
mabapi fits (each variant's mean in the unit's context), and Switch-DR the same tau. The
golden file keeps the grouped data and obp's answers, so the test suite checks the
estimators against the peer without installing it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from mabapi.stats.off_policy import LoggedGroup, evaluate, reward_model

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "stats" / "obp_golden.json"
VARIANTS = ("a", "b", "c")
CONTEXTS = ("", "mobile")
SPLITS = ((0.6, 0.3, 0.1), (0.2, 0.7, 0.1), (0.05, 0.9, 0.05), (1 / 3, 1 / 3, 1 / 3))
TARGETS: dict[str, dict[str, dict[str, float]]] = {
    "uniform": {"": {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}},
    "only c": {"": {"a": 0.0, "b": 0.0, "c": 1.0}},
    "by segment": {"": {"a": 0.5, "b": 0.5, "c": 0.0}, "mobile": {"a": 0.1, "b": 0.1, "c": 0.8}},
}
SWITCH_TAU = 8.0


def logged_units(seed: int, units: int, values: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    context = rng.integers(0, len(CONTEXTS), units)
    split = rng.integers(0, len(SPLITS), units)
    probs = np.array(SPLITS)[split]
    action = np.array([rng.choice(3, p=p) for p in probs])
    pscore = probs[np.arange(units), action]
    rate = np.array([[0.04, 0.05, 0.07], [0.06, 0.03, 0.09]])[context, action]
    converted = rng.random(units) < rate
    reward = converted * (rng.gamma(2.0, 20.0, units) if values else 1.0)
    return {"context": context, "action": action, "pscore": pscore, "reward": reward}


def groups_of(data: dict[str, np.ndarray]) -> list[LoggedGroup]:
    cells: dict[tuple[str, str, float], list[float]] = {}
    for x, a, p, r in zip(
        data["context"], data["action"], data["pscore"], data["reward"], strict=True
    ):
        cell = cells.setdefault((CONTEXTS[x], VARIANTS[a], float(p)), [0.0, 0.0, 0.0])
        cell[0] += 1
        cell[1] += float(r)
        cell[2] += float(r) ** 2
    return [LoggedGroup(x, a, p, *sums) for (x, a, p), sums in sorted(cells.items())]


def peer(data: dict[str, np.ndarray], target: dict[str, dict[str, float]]) -> dict[str, float]:
    """obp's five estimates, per unit, with mabapi's reward model."""
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        SelfNormalizedInverseProbabilityWeighting,
        SwitchDoublyRobust,
    )

    units = len(data["action"])
    model = reward_model(groups_of(data))
    dist = np.zeros((units, len(VARIANTS), 1))
    fitted = np.zeros((units, len(VARIANTS), 1))
    for i, x in enumerate(data["context"]):
        policy = target.get(CONTEXTS[x]) or target[""]
        for j, a in enumerate(VARIANTS):
            dist[i, j, 0] = policy.get(a, 0.0)
            fitted[i, j, 0] = model[(CONTEXTS[x], a)]
    common = {"reward": data["reward"], "action": data["action"], "pscore": data["pscore"]}
    return {
        "dm": DirectMethod().estimate_policy_value(
            action_dist=dist, estimated_rewards_by_reg_model=fitted
        ),
        "ipw": InverseProbabilityWeighting().estimate_policy_value(**common, action_dist=dist),
        "snipw": SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(
            **common, action_dist=dist
        ),
        "dr": DoublyRobust().estimate_policy_value(
            **common, action_dist=dist, estimated_rewards_by_reg_model=fitted
        ),
        "switch-dr": SwitchDoublyRobust(lambda_=SWITCH_TAU).estimate_policy_value(
            **common, action_dist=dist, estimated_rewards_by_reg_model=fitted
        )
        if "lambda_" in SwitchDoublyRobust.__dataclass_fields__
        else SwitchDoublyRobust(tau=SWITCH_TAU).estimate_policy_value(
            **common, action_dist=dist, estimated_rewards_by_reg_model=fitted
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record tests/stats/obp_golden.json")
    args = parser.parse_args()
    cases: list[dict[str, Any]] = []
    worst = 0.0
    print("| data | target | estimator | obp | mabapi | difference |")
    print("|---|---|---|---|---|---|")
    for seed, units, values in ((1, 4000, False), (2, 3000, True)):
        data = logged_units(seed, units, values)
        groups = groups_of(data)
        for name, target in TARGETS.items():
            theirs = peer(data, target)
            ours = evaluate(groups, target, switch_threshold=SWITCH_TAU).estimates
            for estimator, value in theirs.items():
                mine = ours[estimator]
                assert mine is not None
                worst = max(worst, abs(mine.value - float(value)))
                print(
                    f"| {'values' if values else 'conversions'} {units} | {name} | {estimator} "
                    f"| {float(value):.12f} | {mine.value:.12f} | {abs(mine.value - value):.1e} |"
                )
            cases.append(
                {
                    "groups": [
                        [
                            g.context,
                            g.variant,
                            g.propensity,
                            g.units,
                            g.reward_sum,
                            g.reward_sum_squares,
                        ]
                        for g in groups
                    ],
                    "target": target,
                    "switch_threshold": SWITCH_TAU,
                    "obp": {k: float(v) for k, v in theirs.items()},
                }
            )
    print(f"\nlargest difference: {worst:.1e} (target: at most 1e-9)")
    if args.write:
        GOLDEN.write_text(json.dumps({"source": "obp", "cases": cases}, indent=1) + "\n")
        print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
