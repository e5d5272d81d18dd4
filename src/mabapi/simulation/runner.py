"""Run policies over simulated days and seeds; collect regret and decision outcomes.

Each day the allocation is computed from the data before that day with the same
`mabapi.stats.policies.allocate` the service runs, then that day's traffic is split by
per-request draws from it (a multinomial), as real-time assignment would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mabapi.simulation.environments import Environment, FloatArray, Outcome
from mabapi.stats.decision import Action, StopRule, decide
from mabapi.stats.delay import DelayCurve, chain_ladder, effective_units
from mabapi.stats.history import Forgetting, segment_start
from mabapi.stats.policies import ArmData, Controls, PolicyConfig, allocate, sample_choice
from mabapi.stats.posterior import (
    Posterior,
)
from mabapi.stats.sums import Sums, posterior_of

# A custom allocator (benchmarks compare peers): (history, day, rng) -> shares.
Allocator = Callable[["History", int, np.random.Generator], FloatArray]


@dataclass(frozen=True)
class PolicySpec:
    """A named mabapi policy with its controls, as an experiment would configure it."""

    name: str
    config: PolicyConfig = field(default_factory=PolicyConfig)
    controls: Controls = field(default_factory=Controls)
    forgetting: Forgetting = field(default_factory=Forgetting)
    use_values: bool = True  # on value environments: value posterior (else conversions)
    custom: Allocator | None = None  # replaces the mabapi allocation when given
    # Late conversions (the experiment's conversion_delay_days and conversion_delay_cdf):
    # 0 = delay-unaware; cdf None = learnt from the reports so far (chain ladder).
    delay_days: int = 0
    delay_cdf: tuple[float, ...] | None = None


@dataclass
class History:
    """Per-day data so far, shape (days, arms)."""

    units: FloatArray
    successes: FloatArray
    value_sum: FloatArray
    value_sum_squares: FloatArray


@dataclass(frozen=True)
class RunResult:
    allocations: FloatArray  # (days, arms): shares served each day
    units: FloatArray  # (days, arms)
    successes: FloatArray  # (days, arms)
    regret: FloatArray  # (days,): cumulative expected regret
    reward: float  # expected reward collected
    even_split_reward: float  # expected reward of an even split of the same traffic
    realized: float  # realized conversions (or value)
    best_arm_share: float  # share of all traffic on the (day's) best arm
    winner_day: int | None  # first day (1-based) a winner was declared
    winner: int | None
    winner_correct: bool | None
    # The first advice other than "continue", its day, and whether it was right: the true
    # best arm named as better (stop_winner), one of the best arms named to ship
    # (stop_ship), or "no difference" when the arms are equal (an A/A test). None: the
    # run ended still continuing.
    first_advice: Action | None = None
    first_advice_day: int | None = None
    first_advice_correct: bool | None = None
    first_winner: int | None = None  # the arm the first advice named (ship or winner)


def _posteriors(
    history: History, day: int, *, value: bool, forgetting: Forgetting
) -> tuple[list[Posterior], FloatArray, FloatArray]:
    if day == 0:
        zero = np.zeros(history.units.shape[1])
        units, successes, sums, squares = zero, zero, zero, zero
    else:
        ages = day - np.arange(day, dtype=np.float64)
        weights = forgetting.weights(ages)[:, None] if forgetting.active else 1.0
        if forgetting.auto:
            start = segment_start(history.units[:day], history.successes[:day])
            weights = np.where(np.arange(day)[:, None] >= start, weights, 0.0)
        units = (history.units[:day] * weights).sum(axis=0)
        successes = (history.successes[:day] * weights).sum(axis=0)
        sums = (history.value_sum[:day] * weights).sum(axis=0)
        squares = (history.value_sum_squares[:day] * weights).sum(axis=0)
    posteriors: list[Posterior] = [
        posterior_of(Sums(float(n), float(s), float(v), float(q)), values=value)
        for n, s, v, q in zip(units, successes, sums, squares, strict=True)
    ]
    observed = sums if value else successes
    means = np.divide(observed, units, out=np.zeros_like(observed), where=units > 0)
    return posteriors, units, means


def run(
    environment: Environment,
    spec: PolicySpec,
    *,
    days: int,
    traffic_per_day: int,
    seed: int,
    stop_rule: StopRule | None = None,
    cadence: Literal["daily", "event"] = "daily",
    reporting: Sequence[float] | None = None,
) -> RunResult:
    """One simulated experiment. Bit-for-bit reproducible for a given seed.

    cadence "daily": one allocation per day from the data before it, the day's traffic
    split by per-request draws from it (the original README's batches). "event": every
    unit's outcome updates the posterior before the next unit is assigned.

    reporting: late conversions (daily cadence): reporting[a] is the chance that a
    conversion is reported a days after its exposure day (0: the same day), and a day's
    conversions show up to the policy only as they are reported. The regret counts every
    conversion, reported or not.
    """
    rng = np.random.default_rng(seed)
    arms = environment.arms
    history = History(*(np.zeros((days, arms)) for _ in range(4)))
    allocations = np.zeros((days, arms))
    regret = np.zeros(days)
    reward = even = realized = on_best = 0.0
    value = environment.is_value and spec.use_values
    winner_day: int | None = None
    winner: int | None = None
    winner_correct: bool | None = None
    first_advice: Action | None = None
    first_advice_day: int | None = None
    first_advice_correct: bool | None = None
    first_winner: int | None = None
    delays = DelayedReports(days, arms, reporting) if reporting is not None else None
    for day in range(days):
        seen = delays.seen(history, day, spec) if delays is not None else history
        posteriors, units_so_far, means = _posteriors(
            seen, day, value=value, forgetting=spec.forgetting
        )
        if spec.custom is not None:
            shares = spec.custom(delays.seen(history, day) if delays else history, day, rng)
        else:
            arm_data = [
                ArmData(p, int(n), int(s), float(m))
                for p, n, s, m in zip(
                    posteriors, units_so_far, seen.successes[:day].sum(0), means, strict=True
                )
            ]
            shares, _, _ = allocate(
                arm_data,
                config=spec.config,
                controls=spec.controls,
                active=[True] * arms,
                days_of_data=day,
                previous=allocations[day - 1] if day else None,
            )
        if cadence == "event" and spec.custom is None:
            units, outcome = _event_day(
                environment, spec, history, day, traffic_per_day, rng, value=value
            )
            shares = units / units.sum()
        else:
            units = rng.multinomial(traffic_per_day, shares / shares.sum())
            outcome = environment.outcome(day, units, rng)
        allocations[day] = shares
        history.units[day] = units
        history.successes[day] = outcome.successes
        history.value_sum[day] = outcome.value_sum
        history.value_sum_squares[day] = outcome.value_sum_squares
        if delays is not None:
            delays.record(day, outcome.successes, rng)
        expected = environment.expected_reward(day)
        best = float(expected.max())
        collected = float((units * expected).sum())
        reward += collected
        even += traffic_per_day * float(expected.mean())
        regret[day] = (regret[day - 1] if day else 0.0) + traffic_per_day * best - collected
        on_best += float(units[expected == best].sum())
        realized += float(
            outcome.value_sum.sum() if environment.is_value else outcome.successes.sum()
        )
        if stop_rule is not None and winner_day is None:
            posteriors_after, _, _ = _posteriors(
                delays.seen(history, day + 1, spec) if delays is not None else history,
                day + 1,
                value=value,
                forgetting=Forgetting(),
            )
            outcome_decision = decide(
                posteriors_after,
                names=[str(i) for i in range(arms)],
                control=None,
                days_of_data=day + 1,
                rule=stop_rule,
                seed=seed,
                draws=4_000,
            )
            advice = outcome_decision.recommendation
            truly_best = np.flatnonzero(expected == best)
            if first_advice is None and advice.action is not Action.CONTINUE:
                first_advice, first_advice_day = advice.action, day + 1
                first_winner = advice.winner
                if advice.action is Action.STOP_NO_DIFFERENCE:
                    first_advice_correct = truly_best.size > 1
                elif advice.action is Action.STOP_SHIP:  # any of the best arms is right
                    first_advice_correct = advice.winner in truly_best.tolist()
                else:
                    first_advice_correct = truly_best.size == 1 and advice.winner == int(
                        truly_best[0]
                    )
            if advice.action is Action.STOP_WINNER:
                winner_day = day + 1
                winner = advice.winner
                # With several equally good arms (an A/A test) any declared winner is wrong.
                winner_correct = truly_best.size == 1 and winner == int(truly_best[0])
    return RunResult(
        allocations=allocations,
        units=history.units,
        successes=history.successes,
        regret=regret,
        reward=reward,
        even_split_reward=even,
        realized=realized,
        best_arm_share=on_best / (traffic_per_day * days),
        winner_day=winner_day,
        winner=winner,
        winner_correct=winner_correct,
        first_advice=first_advice,
        first_advice_day=first_advice_day,
        first_advice_correct=first_advice_correct,
        first_winner=first_winner,
    )


class DelayedReports:
    """Each day's conversions split by reporting delay, and the history as the service
    sees it when planning a day: conversions reported by then, and (for a delay-aware
    policy) each recent day's units counted as effective exposures."""

    def __init__(self, days: int, arms: int, reporting: Sequence[float]) -> None:
        self.pmf = np.asarray(reporting, dtype=np.float64) / float(np.sum(reporting))
        self.by_delay = np.zeros((days, self.pmf.size, arms))

    def record(self, day: int, successes: npt.NDArray[Any], rng: np.random.Generator) -> None:
        for arm, count in enumerate(np.asarray(successes, dtype=np.int64)):
            self.by_delay[day, :, arm] = rng.multinomial(count, self.pmf)

    def seen(self, history: History, day: int, spec: PolicySpec | None = None) -> History:
        """The data before `day` as known when planning it: day d is `day - 1 - d` days
        old, and its conversions reported at delays 0..age are in."""
        ages = day - 1 - np.arange(day)
        cumulative = np.cumsum(self.by_delay[:day], axis=1)  # (day, delays, arms)
        index = np.clip(ages, 0, self.pmf.size - 1)
        successes = np.zeros_like(history.successes)
        successes[:day] = cumulative[np.arange(day), index]
        units = history.units.copy()
        if spec is not None and spec.delay_days > 0 and day > 0:
            curve = (
                DelayCurve(spec.delay_cdf)
                if spec.delay_cdf is not None
                else self.learnt(cumulative.sum(axis=2), day, spec.delay_days)
            )
            units[:day] = effective_units(
                history.units[:day], successes[:day], curve.share(ages.astype(np.float64))[:, None]
            )
        return History(units, successes, history.value_sum, history.value_sum_squares)

    @staticmethod
    def learnt(cumulative: FloatArray, day: int, days: int) -> DelayCurve:
        """Chain ladder on what has been reported: day d known at ages 0..day - 1 - d,
        from the last 8 L + 8 days (as the service reads)."""
        last = cumulative.shape[1] - 1
        triangle = {
            d: [float(cumulative[d, min(a, last)]) for a in range(min(day - 1 - d, days) + 1)]
            for d in range(max(0, day - 8 * days - 8), day)
        }
        return chain_ladder(triangle, days)


def _event_day(
    environment: Environment,
    spec: PolicySpec,
    history: History,
    day: int,
    traffic: int,
    rng: np.random.Generator,
    *,
    value: bool,
) -> tuple[npt.NDArray[np.int64], Outcome]:
    """One day of per-event updating: each unit sees the posterior after the last one."""
    arms = environment.arms
    units = history.units[:day].sum(axis=0)
    successes = history.successes[:day].sum(axis=0)
    sums = history.value_sum[:day].sum(axis=0)
    squares = history.value_sum_squares[:day].sum(axis=0)
    today_units = np.zeros(arms, dtype=np.int64)
    today = Outcome(np.zeros(arms, dtype=np.int64), np.zeros(arms), np.zeros(arms))
    rates = environment.rates_on(day)
    burn_in = spec.controls.burn_in
    for _ in range(traffic):
        arm_data = [
            ArmData(
                posterior_of(Sums(units[i], successes[i], sums[i], squares[i]), values=value),
                int(units[i]),
                int(successes[i]),
                float((sums[i] if value else successes[i]) / units[i]) if units[i] else 0.0,
            )
            for i in range(arms)
        ]
        burned_in = burn_in.satisfied(arm_data, day)
        arm = sample_choice(spec.config, arm_data, spec.controls, rng, burned_in=burned_in)
        converted = rng.random() < rates[arm]
        amount = 0.0
        if converted and environment.value_log_mean is not None:
            amount = float(
                rng.lognormal(environment.value_log_mean[arm], environment.value_log_sigma)
            )
        units[arm] += 1
        successes[arm] += converted
        sums[arm] += amount
        squares[arm] += amount * amount
        today_units[arm] += 1
        today.successes[arm] += converted
        today.value_sum[arm] += amount
        today.value_sum_squares[arm] += amount * amount
    return today_units, today


@dataclass(frozen=True)
class Aggregate:
    policy: str
    runs: int
    regret_mean: float
    regret_se: float
    best_arm_share: float
    gain_vs_even: float  # expected conversions (or value) gained over an even split
    gain_vs_even_se: float
    winner_rate: float  # share of runs that declared a winner
    wrong_winner_rate: float  # share of runs that declared a wrong winner
    median_winner_day: float | None
    regret_curves: FloatArray  # (runs, days)
    mean_allocations: FloatArray  # (days, arms)


def aggregate(policy: str, results: Sequence[RunResult]) -> Aggregate:
    final = np.array([r.regret[-1] for r in results])
    gains = np.array([r.reward - r.even_split_reward for r in results])
    days = [r.winner_day for r in results if r.winner_day is not None]
    wrong = [r for r in results if r.winner_correct is False]
    count = len(results)
    root = np.sqrt(max(count, 1))
    return Aggregate(
        policy=policy,
        runs=count,
        regret_mean=float(final.mean()),
        regret_se=float(final.std(ddof=1) / root) if count > 1 else 0.0,
        best_arm_share=float(np.mean([r.best_arm_share for r in results])),
        gain_vs_even=float(gains.mean()),
        gain_vs_even_se=float(gains.std(ddof=1) / root) if count > 1 else 0.0,
        winner_rate=len(days) / count if count else 0.0,
        wrong_winner_rate=len(wrong) / count if count else 0.0,
        median_winner_day=float(np.median(days)) if days else None,
        regret_curves=np.vstack([r.regret for r in results]),
        mean_allocations=np.mean([r.allocations for r in results], axis=0),
    )
