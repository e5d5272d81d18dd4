"""Sticky assignment and conversion attribution: repository + stats. Never commits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.assignments import repository
from mabapi.assignments.cache import AssignmentMemo, CachedAllocation
from mabapi.db.base import utcnow
from mabapi.errors import ConflictError, InvalidInputError, no_such_experiment
from mabapi.experiments import repository as experiments_repository
from mabapi.experiments.models import Experiment, ExperimentStatus, MetricKind
from mabapi.stats.policies import draw


class SessionSource(Protocol):
    """Opens the request's session on first use; runs actions after it commits."""

    async def __call__(self) -> AsyncSession: ...

    def after_commit(self, action: Callable[[], None]) -> None: ...


class AllocationSource(Protocol):
    async def get(self, experiment_id: str) -> CachedAllocation: ...


@dataclass(frozen=True, slots=True)
class AssignResult:
    experiment_id: str
    unit_id: str
    variant_id: str
    probability: float
    new: bool
    concluded: bool = False


@dataclass(frozen=True, slots=True)
class ConversionResult:
    experiment_id: str
    unit_id: str
    variant_id: str
    counted: bool


async def _experiment(session: AsyncSession, experiment_id: str) -> Experiment:
    experiment = await experiments_repository.get_experiment(
        session, experiment_id, with_variants=False
    )
    if experiment is None:
        raise no_such_experiment(experiment_id)
    return experiment


async def assign(
    open_session: SessionSource,
    *,
    experiment_id: str,
    unit_id: str,
    allocation: CachedAllocation,
    rng: np.random.Generator,
    memo: AssignmentMemo | None = None,
) -> AssignResult:
    """The unit's variant: the stored one if it has one, else a fresh Thompson draw from
    the current allocation, stored with its probability and counted as one impression.

    `allocation` is fetched by the caller before this transaction starts (on SQLite a
    second transaction inside this one would wait on the write lock). `open_session` is
    called only when the database is needed. With a `memo`, a unit this process has seen
    in the same generation is answered without the database;
    a winner declared or a reset made in another process shows here within the cache's
    time to live.
    """
    if allocation.winner_variant_id is not None:
        return AssignResult(
            experiment_id, unit_id, allocation.winner_variant_id, 1.0, new=False, concluded=True
        )
    generation = allocation.live_generation
    if memo is not None and (known := memo.get(experiment_id, generation, unit_id)):
        return AssignResult(experiment_id, unit_id, known[0], known[1], new=False)
    result = await _assign_in_database(
        await open_session(),
        experiment_id=experiment_id,
        unit_id=unit_id,
        allocation=allocation,
        rng=rng,
    )
    if memo is not None and not result.concluded:
        # Remembered only once committed: a unit whose insert was lost with the
        # transaction (database crash, rollback) must not be answered from memory later.
        answer = (result.variant_id, result.probability)
        open_session.after_commit(lambda: memo.put(experiment_id, generation, unit_id, answer))
    return result


async def _assign_in_database(
    session: AsyncSession,
    *,
    experiment_id: str,
    unit_id: str,
    allocation: CachedAllocation,
    rng: np.random.Generator,
) -> AssignResult:
    context = await repository.assignment_context(session, experiment_id, unit_id)
    if context is None:
        raise no_such_experiment(experiment_id)
    if context.winner_variant_id is not None:
        return AssignResult(
            experiment_id, unit_id, context.winner_variant_id, 1.0, new=False, concluded=True
        )
    if context.variant_id is not None:
        return AssignResult(
            experiment_id, unit_id, context.variant_id, float(context.probability or 0.0), False
        )
    if context.status != ExperimentStatus.RUNNING.value:
        raise ConflictError(
            f"experiment {experiment_id!r} is {context.status}: new units are "
            "assigned only while it is running (PATCH its status to running)"
        )
    if context.archived:
        raise ConflictError(f"experiment {experiment_id!r} is archived")
    shares = np.asarray(allocation.shares, dtype=np.float64)
    if shares.sum() <= 0:
        raise ConflictError(f"experiment {experiment_id!r} has no active variants")
    index = draw(shares, rng)
    now = utcnow()
    created = await repository.insert_assignment_if_new(
        session,
        experiment_id=experiment_id,
        unit_id=unit_id,
        variant_id=allocation.variant_ids[index],
        probability=float(shares[index] / shares.sum()),
        now=now,
    )
    if not created:  # another request won the race for this unit: theirs stands
        winner = await repository.find_assignment(session, experiment_id, unit_id)
        assert winner is not None
        return AssignResult(experiment_id, unit_id, winner.variant_id, winner.probability, False)
    await repository.add_live(
        session,
        experiment_id=experiment_id,
        variant_id=allocation.variant_ids[index],
        day=now.date(),
        impressions=1,
    )
    return AssignResult(
        experiment_id, unit_id, allocation.variant_ids[index], float(shares[index]), True
    )


async def convert(
    session: AsyncSession,
    *,
    experiment_id: str,
    unit_id: str,
    value: float | None,
    event_id: str | None,
) -> ConversionResult:
    """Credit a conversion to the unit's variant, on the day it was exposed.

    Conversion metrics: once per unit, however often retried. Value metrics: once per
    event_id; the unit's running total keeps the sum of squares per unit exact
    (x_new^2 - x_old^2 is added), which the value posterior needs.
    """
    experiment = await _experiment(session, experiment_id)
    assignment = await repository.find_assignment(session, experiment_id, unit_id, for_update=True)
    if assignment is None:
        raise ConflictError(
            f"unit {unit_id!r} was never assigned in {experiment_id!r}: call "
            f"POST /experiments/{experiment_id}/assign first"
        )
    now = utcnow()
    if experiment.metric_kind == MetricKind.VALUE:
        if value is None or event_id is None:
            raise InvalidInputError(
                f"experiment {experiment_id!r} measures values: send value and event_id"
            )
        if not await repository.insert_event_if_new(
            session,
            experiment_id=experiment_id,
            event_id=event_id,
            unit_id=unit_id,
            value=value,
            now=now,
        ):
            return ConversionResult(experiment_id, unit_id, assignment.variant_id, False)
        total, first = await repository.add_unit_value(session, assignment.id, value, now)
        previous = total - value
        await repository.add_live(
            session,
            experiment_id=experiment_id,
            variant_id=assignment.variant_id,
            day=assignment.assigned_date,
            successes=1 if first else 0,
            value_sum=value,
            value_sum_squares=total * total - previous * previous,
        )
        return ConversionResult(experiment_id, unit_id, assignment.variant_id, True)
    counted = await repository.mark_converted(session, assignment.id, now)
    if counted:
        await repository.add_live(
            session,
            experiment_id=experiment_id,
            variant_id=assignment.variant_id,
            day=assignment.assigned_date,
            successes=1,
        )
    return ConversionResult(experiment_id, unit_id, assignment.variant_id, counted)


async def reset(session: AsyncSession, *, experiment_id: str) -> None:
    """Start real-time data over: assignments, live counts and value events are deleted,
    a declared winner is cleared and the experiment runs again. Reported daily totals
    (POST /metrics/) are kept."""
    experiment = await _experiment(session, experiment_id)
    await repository.reset_live_data(session, experiment_id)
    experiment.live_generation += 1
    experiment.winner_variant_id = None
    experiment.status = ExperimentStatus.RUNNING
    experiment.updated_at = utcnow()
    await session.flush()


def distinct_experiments(items: Sequence[tuple[str, str]]) -> list[str]:
    return sorted({experiment_id for experiment_id, _ in items})
