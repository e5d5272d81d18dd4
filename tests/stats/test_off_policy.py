"""Off-policy estimators: equal to the Open Bandit Pipeline's on the same units (golden
values recorded by benchmarks/ope_peer.py with obp), grouped sums equal to the per-unit
computation, intervals that cover in Monte Carlo, and support refused where weights
cannot see the traffic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mabapi.stats.off_policy import ESTIMATORS, LoggedGroup, evaluate

GOLDEN = json.loads((Path(__file__).parent / "obp_golden.json").read_text())


@pytest.mark.parametrize("case", range(len(GOLDEN["cases"])))
def test_every_estimator_equals_obp_to_1e_9(case: int) -> None:
    recorded = GOLDEN["cases"][case]
    groups = [LoggedGroup(*row) for row in recorded["groups"]]
    result = evaluate(groups, recorded["target"], switch_threshold=recorded["switch_threshold"])
    assert set(recorded["obp"]) == set(ESTIMATORS)
    for name, theirs in recorded["obp"].items():
        ours = result.estimates[name]
        assert ours is not None
        assert ours.value == pytest.approx(theirs, abs=1e-9, rel=0)


def _units(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    splits = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    which = rng.integers(0, 3, n)
    action = (rng.random(n) < splits[which, 1]).astype(int)
    pscore = splits[which, action]
    reward = (rng.random(n) < np.array([0.05, 0.08])[action]).astype(float)
    return action, pscore, reward


def _grouped(action: np.ndarray, pscore: np.ndarray, reward: np.ndarray) -> list[LoggedGroup]:
    cells: dict[tuple[int, float], list[float]] = {}
    for a, p, r in zip(action, pscore, reward, strict=True):
        cell = cells.setdefault((int(a), float(p)), [0.0, 0.0, 0.0])
        cell[0] += 1
        cell[1] += r
        cell[2] += r * r
    return [LoggedGroup("", "ab"[a], p, *sums) for (a, p), sums in cells.items()]


def test_grouped_sums_give_the_per_unit_standard_errors() -> None:
    action, pscore, reward = _units(3, 5000)
    target = {"": {"a": 0.5, "b": 0.5}}
    result = evaluate(_grouped(action, pscore, reward), target)
    w = 0.5 / pscore
    ipw = w * reward
    ipw_estimate = result.estimates["ipw"]
    assert ipw_estimate is not None
    assert ipw_estimate.value == pytest.approx(ipw.mean(), rel=1e-12)
    assert ipw_estimate.standard_error == pytest.approx(
        ipw.std(ddof=1) / math.sqrt(len(ipw)), rel=1e-9
    )
    q = np.array([reward[action == k].mean() for k in (0, 1)])
    dr = 0.5 * q.sum() + w * (reward - q[action])
    dr_estimate = result.estimates["dr"]
    assert dr_estimate is not None
    assert dr_estimate.standard_error == pytest.approx(
        dr.std(ddof=1) / math.sqrt(len(dr)), rel=1e-9
    )
    assert result.diagnostics.effective_sample_size == pytest.approx(
        w.sum() ** 2 / (w * w).sum(), rel=1e-12
    )
    assert result.diagnostics.max_weight == pytest.approx(w.max())
    assert result.logged == pytest.approx(reward.mean())


def test_intervals_cover_the_true_value_in_monte_carlo() -> None:
    """Fixed logging, 400 datasets: every estimator's 95% interval covers the true value
    of the 50/50 policy (0.065) in 91-99% of them (binomial sd at 400 runs: 1.1%)."""
    covered = dict.fromkeys(ESTIMATORS, 0)
    runs = 400
    for seed in range(runs):
        result = evaluate(_grouped(*_units(100 + seed, 4000)), {"": {"a": 0.5, "b": 0.5}})
        for name in ESTIMATORS:
            estimate = result.estimates[name]
            assert estimate is not None
            covered[name] += estimate.low <= 0.065 <= estimate.high
    for name, hits in covered.items():
        assert 0.91 <= hits / runs <= 0.99, (name, hits)


def test_a_variant_no_unit_saw_is_refused_by_every_estimator() -> None:
    groups = [LoggedGroup("", "a", 0.5, 100, 5, 5), LoggedGroup("", "b", 0.5, 100, 7, 7)]
    result = evaluate(groups, {"": {"a": 0.5, "c": 0.5}})
    assert result.diagnostics.unsupported == ("c",)
    assert result.diagnostics.unsupported_share == pytest.approx(0.5)
    assert set(result.refused) == set(ESTIMATORS)
    assert all(result.estimates[name] is None for name in ESTIMATORS)
    assert "c" in result.refused["dr"]


def test_a_context_that_never_saw_a_variant_keeps_only_model_based_estimators() -> None:
    """Mobile never logged b: the weights miss mobile's b traffic (IPW, SNIPW refused),
    the reward model fills it from b's other traffic (DM, DR, Switch-DR kept)."""
    groups = [
        LoggedGroup("", "a", 0.5, 100, 5, 5),
        LoggedGroup("", "b", 0.5, 100, 7, 7),
        LoggedGroup("mobile", "a", 1.0, 100, 4, 4),
    ]
    result = evaluate(groups, {"": {"a": 0.5, "b": 0.5}})
    assert result.diagnostics.unsupported == ("b",)
    assert result.diagnostics.unsupported_share == pytest.approx(0.5 * 100 / 300)
    assert set(result.refused) == {"ipw", "snipw"}
    dm = result.estimates["dm"]
    assert dm is not None
    # q(mobile, b) falls back to b's mean: 0.07.
    assert dm.value == pytest.approx((200 * (0.025 + 0.035) + 100 * (0.02 + 0.035)) / 300)


def test_switch_dr_uses_the_model_above_the_threshold() -> None:
    groups = [LoggedGroup("", "a", 0.99, 990, 40, 40), LoggedGroup("", "b", 0.01, 10, 3, 3)]
    target = {"": {"a": 0.0, "b": 1.0}}
    clipped = evaluate(groups, target, switch_threshold=50.0)
    dm, switch = clipped.estimates["dm"], clipped.estimates["switch-dr"]
    assert dm is not None
    assert switch is not None
    assert switch.value == pytest.approx(dm.value)
    assert clipped.diagnostics.clipped_weight_share == pytest.approx(1.0)
    kept = evaluate(groups, target, switch_threshold=math.inf).estimates
    assert kept["switch-dr"] is not None
    assert kept["dr"] is not None
    assert kept["switch-dr"].value == pytest.approx(kept["dr"].value)


def test_bad_data_is_refused() -> None:
    with pytest.raises(ValueError, match="no logged units"):
        evaluate([], {"": {"a": 1.0}})
    with pytest.raises(ValueError, match="propensity"):
        evaluate([LoggedGroup("", "a", 0.0, 1, 0, 0)], {"": {"a": 1.0}})
