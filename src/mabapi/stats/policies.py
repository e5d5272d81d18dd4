"""Allocation policies and the controls applied on top of them.

Each policy gives a batch allocation (traffic shares, for `/allocations`) and a
per-request draw (one variant, for real-time assignment and per-event simulation) whose
distribution is that allocation. The controls (burn-in, additive floor, reserved shares,
paused variants, maximum change per update) are applied the same way to every policy.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from mabapi.stats.allocation import FloatArray, probability_best
from mabapi.stats.posterior import BetaPosterior, Posterior


class PolicyName(enum.StrEnum):
    THOMPSON = "thompson"
    TOP_TWO_THOMPSON = "top_two_thompson"
    UCB1 = "ucb1"
    EPSILON_GREEDY = "epsilon_greedy"
    UNIFORM = "uniform"


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    name: PolicyName = PolicyName.THOMPSON
    # Top-two Thompson sampling: probability of playing the leader (Russo 2016: 0.5).
    top_two_beta: float = 0.5
    # Epsilon-greedy: share explored uniformly at random.
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.top_two_beta < 1.0:
            raise ValueError("top_two_beta must lie strictly between 0 and 1")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError("epsilon must lie between 0 and 1")


@dataclass(frozen=True, slots=True)
class ArmData:
    """What a policy sees of one variant: its posterior and its raw totals."""

    posterior: Posterior
    units: int
    successes: int
    mean: float  # observed mean per unit (rate or value), 0 with no units


@dataclass(frozen=True, slots=True)
class BurnIn:
    """Even split until every variant has `units` units, `successes` successes, and the
    experiment has `days` days of data (GrowthBook and Amplitude use 100 units)."""

    units: int = 0
    successes: int = 0
    days: int = 0

    def satisfied(self, arms: Sequence[ArmData], days_of_data: int) -> bool:
        return days_of_data >= self.days and all(
            arm.units >= self.units and arm.successes >= self.successes for arm in arms
        )


@dataclass(frozen=True, slots=True)
class Controls:
    """`floor`: each free arm's least share (additive: p_i = f + (1 - K f) w_i).
    `exploration`: a total share kept for measuring, split evenly over the K free arms
    (a floor of exploration / K each; whichever of the two floors is larger applies)."""

    floor: float = 0.0
    exploration: float = 0.001
    reserved: Mapping[int, float] = field(default_factory=dict)  # arm index -> fixed share
    burn_in: BurnIn = field(default_factory=BurnIn)
    max_change: float | None = None  # largest change of any share per update

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor < 1.0:
            raise ValueError("floor must lie in [0, 1)")
        if not 0.0 <= self.exploration < 1.0:
            raise ValueError("exploration must lie in [0, 1)")
        if any(not 0.0 < share < 1.0 for share in self.reserved.values()):
            raise ValueError("each reserved share must lie strictly between 0 and 1")
        if sum(self.reserved.values()) >= 1.0:
            raise ValueError("reserved shares must add up to less than 1")
        if self.max_change is not None and not 0.0 < self.max_change <= 1.0:
            raise ValueError("max_change must lie in (0, 1]")

    def floor_for(self, free_arms: int) -> float:
        """The per-arm floor with `free_arms` arms sharing the traffic."""
        return max(self.floor, self.exploration / max(free_arms, 1))


def _argmax_split(values: FloatArray) -> FloatArray:
    """All weight on the maximum, split evenly between exact ties."""
    best = values == values.max()
    result: FloatArray = best / best.sum()
    return result


def policy_weights(
    config: PolicyConfig,
    arms: Sequence[ArmData],
    *,
    higher_is_better: bool = True,
) -> FloatArray:
    """The policy's traffic shares before controls (sum to 1)."""
    count = len(arms)
    if count == 0:
        return np.zeros(0)
    if config.name is PolicyName.UNIFORM or count == 1:
        return np.full(count, 1.0 / count)
    sign = 1.0 if higher_is_better else -1.0
    if config.name is PolicyName.THOMPSON:
        return probability_best([a.posterior for a in arms], higher_is_better=higher_is_better)
    if config.name is PolicyName.TOP_TWO_THOMPSON:
        best = probability_best([a.posterior for a in arms], higher_is_better=higher_is_better)
        return top_two_shares(best, config.top_two_beta)
    means = sign * np.array([arm.mean for arm in arms])
    if config.name is PolicyName.EPSILON_GREEDY:
        return config.epsilon / count + (1.0 - config.epsilon) * _argmax_split(means)
    # UCB1 (Auer, Cesa-Bianchi & Fischer 2002): mean + sqrt(2 ln N / n_i); untried first.
    units = np.array([arm.units for arm in arms], dtype=np.float64)
    if (units == 0).any():
        return _argmax_split((units == 0).astype(np.float64))
    scale = _ucb_scale(arms)
    index = means + scale * np.sqrt(2.0 * math.log(units.sum()) / units)
    return _argmax_split(index)


def _ucb_scale(arms: Sequence[ArmData]) -> float:
    """UCB1 assumes rewards in [0, 1]; for value metrics scale the bonus by the spread."""
    if all(isinstance(arm.posterior, BetaPosterior) for arm in arms):
        return 1.0
    means = [abs(arm.mean) for arm in arms]
    return max(max(means), 1e-12)


def top_two_shares(best: FloatArray, beta: float) -> FloatArray:
    """Exact top-two Thompson sampling shares (Russo 2016) from P(best).

    The leader I is drawn with P(best); with probability beta it is played, otherwise
    the posterior is resampled until another arm J leads, which happens with
    P(best_J) / (1 - P(best_I)). So share_i = beta p_i + (1 - beta) p_i sum_{j != i}
    p_j / (1 - p_j).
    """
    p = np.asarray(best, dtype=np.float64)
    if p.size == 1:
        return np.ones(1)
    certain = p >= 1.0 - 1e-15
    if certain.any():
        # The leader always wins the resample too; the challenger is then any other arm.
        others = ~certain
        result = np.where(certain, beta, (1.0 - beta) / others.sum())
        return np.asarray(result / result.sum(), dtype=np.float64)
    ratio = p / (1.0 - p)
    challenger = p * (ratio.sum() - ratio)
    shares: FloatArray = beta * p + (1.0 - beta) * challenger
    normalised: FloatArray = shares / shares.sum()
    return normalised


def apply_controls(
    weights: FloatArray,
    controls: Controls,
    *,
    active: Sequence[bool],
    burned_in: bool,
    previous: FloatArray | None = None,
) -> FloatArray:
    """Final traffic shares: paused arms get 0, reserved arms their fixed share, the rest
    the policy's weights (or an even split during burn-in) with the additive floor
    p_i = f + (1 - K f) w_i (docs/STATISTICS.md: it never reorders arms; K f >= 1 falls back
    to an even split), then at most `max_change` movement from `previous`."""
    count = len(weights)
    active_mask = np.asarray(active, dtype=bool)
    reserved = {i: s for i, s in controls.reserved.items() if 0 <= i < count and active_mask[i]}
    free = active_mask.copy()
    for index in reserved:
        free[index] = False
    result = np.zeros(count)
    free_count = int(free.sum())
    reserved_total = sum(reserved.values())
    if free_count == 0:
        if reserved:  # only reserved arms are live: they share everything pro rata
            for index, share in reserved.items():
                result[index] = share / reserved_total
        return result
    free_weights = np.asarray(weights, dtype=np.float64)[free]
    if not burned_in or free_weights.sum() <= 0:
        free_weights = np.full(free_count, 1.0 / free_count)
    else:
        free_weights = free_weights / free_weights.sum()
    floor = controls.floor_for(free_count)
    if floor * free_count >= 1.0:
        free_weights = np.full(free_count, 1.0 / free_count)
    else:
        free_weights = floor + (1.0 - free_count * floor) * free_weights
    result[free] = (1.0 - reserved_total) * free_weights
    for index, share in reserved.items():
        result[index] = share
    if controls.max_change is not None and previous is not None and len(previous) == count:
        result = limit_change(
            np.asarray(previous, dtype=np.float64),
            result,
            controls.max_change,
            paused=~active_mask,
        )
    return result


def limit_change(
    previous: FloatArray,
    target: FloatArray,
    max_change: float,
    *,
    paused: npt.NDArray[np.bool_] | None = None,
) -> FloatArray:
    """Move from `previous` toward `target` by the largest step that changes no share by
    more than `max_change`. A convex combination, so shares still sum to 1 and arms keep
    the order they have in both; paused arms are cut at once (a pause is deliberate)."""
    if previous.sum() <= 0:
        return target
    step = float(np.abs(target - previous).max())
    fraction = 1.0 if step <= max_change else max_change / step
    moved = previous + fraction * (target - previous)
    if paused is not None:
        moved[paused] = 0.0
    total = moved.sum()
    result: FloatArray = moved / total if total > 0 else target
    return result


def draw(allocation: FloatArray, rng: np.random.Generator) -> int:
    """One variant for one request, distributed as the allocation."""
    return int(rng.choice(len(allocation), p=allocation / allocation.sum()))


def draw_cumulative(cumulative: Sequence[float], uniform: float) -> int:
    """One variant for one request from running sums of the shares (the last is the
    total) and a uniform draw in [0, 1): the inverse-CDF method, as `draw` but without
    numpy's per-call validation (about 20x cheaper; the service draws on every new unit).
    A zero share is an empty slice and is never drawn."""
    index = bisect.bisect_right(cumulative, uniform * cumulative[-1])
    return min(index, len(cumulative) - 1)


def allocate(
    arms: Sequence[ArmData],
    *,
    config: PolicyConfig,
    controls: Controls,
    active: Sequence[bool],
    days_of_data: int,
    higher_is_better: bool = True,
    previous: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, bool]:
    """The whole allocation step, as the service and the simulator both run it.

    Returns (shares after controls, the policy's weights over the free arms, whether the
    burn-in is over). Reserved and paused arms take no part in the policy's weights.
    """
    free = [i for i, live in enumerate(active) if live and i not in controls.reserved]
    weights = np.zeros(len(arms))
    if free:
        weights[free] = policy_weights(
            config, [arms[i] for i in free], higher_is_better=higher_is_better
        )
    burned_in = controls.burn_in.satisfied([arms[i] for i in free], days_of_data)
    shares = apply_controls(
        weights, controls, active=active, burned_in=burned_in, previous=previous
    )
    return shares, weights, burned_in


def sample_choice(
    config: PolicyConfig,
    arms: Sequence[ArmData],
    controls: Controls,
    rng: np.random.Generator,
    *,
    burned_in: bool = True,
    higher_is_better: bool = True,
) -> int:
    """One request's variant under per-event updating, without the quadrature.

    Thompson sampling draws one sample per posterior and takes the best (its share is
    exactly P(best)); top-two resamples for a challenger with probability 1 - beta
    (Russo 2016). The floor, reserved shares and burn-in are mixtures: with probability
    sum(reserved) a reserved arm by its share, else with probability K f (or during
    burn-in, always) a uniformly random free arm, else the policy's choice. So the choice
    is distributed exactly as `apply_controls` would allocate. All arms are active here.
    """
    count = len(arms)
    reserved = dict(controls.reserved)
    roll = rng.random()
    reserved_total = sum(reserved.values())
    if roll < reserved_total:
        keys = list(reserved)
        shares = np.array([reserved[k] for k in keys]) / reserved_total
        return int(keys[rng.choice(len(keys), p=shares)])
    free = [i for i in range(count) if i not in reserved]
    explore = 1.0 if not burned_in else min(len(free) * controls.floor_for(len(free)), 1.0)
    if rng.random() < explore:
        return free[int(rng.integers(len(free)))]
    sub = [arms[i] for i in free]
    sign = 1.0 if higher_is_better else -1.0
    if config.name in (PolicyName.THOMPSON, PolicyName.TOP_TWO_THOMPSON):
        leader = int(_sampled_best(sub, rng, sign, 1)[0])
        if config.name is PolicyName.TOP_TWO_THOMPSON and rng.random() >= config.top_two_beta:
            # Resample until another arm leads; at most 1,000 tries (then keep the leader).
            challengers = _sampled_best(sub, rng, sign, 1000)
            others = np.flatnonzero(challengers != leader)
            if others.size:
                return free[int(challengers[others[0]])]
        return free[leader]
    weights = policy_weights(config, sub, higher_is_better=higher_is_better)
    return free[int(rng.choice(len(sub), p=weights / weights.sum()))]


def _sampled_best(
    arms: Sequence[ArmData], rng: np.random.Generator, sign: float, size: int
) -> npt.NDArray[np.int64]:
    """The best arm under each of `size` joint posterior draws."""
    draws = np.empty((len(arms), size))
    for index, arm in enumerate(arms):
        posterior = arm.posterior
        if isinstance(posterior, BetaPosterior):
            draws[index] = rng.beta(posterior.alpha, posterior.beta, size)
        else:
            draws[index] = posterior.mu + posterior.scale * rng.standard_t(
                posterior.degrees_of_freedom, size
            )
    best: npt.NDArray[np.int64] = np.argmax(sign * draws, axis=0)
    return best
