"""Sticky assignment and conversion attribution: repository + stats. Never commits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, TypeVar

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.assignments import repository
from mabapi.assignments.cache import CachedAllocation, UnitMemo
from mabapi.db.base import utcnow
from mabapi.errors import AppError, ConflictError, InvalidInputError, no_such_experiment
from mabapi.experiments import repository as experiments_repository
from mabapi.experiments import segment_repository as segment_registry
from mabapi.experiments.models import Experiment, ExperimentStatus, MetricKind
from mabapi.guardrails import service as experiments_guardrails
from mabapi.stats.policies import draw_cumulative

ItemT = TypeVar("ItemT", contravariant=True)
ResultT = TypeVar("ResultT", covariant=True)
Result = TypeVar("Result")


class SessionSource(Protocol):
    """Opens the request's session on first use; runs actions after it commits."""

    async def __call__(self) -> AsyncSession: ...

    def after_commit(self, action: Callable[[], None]) -> None: ...


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


@dataclass(frozen=True, slots=True)
class NewAssignment:
    """A unit to assign: the variant drawn for it (None: nothing can be drawn, so only a
    stored assignment can answer) and that variant's share when drawn."""

    experiment_id: str
    unit_id: str
    variant_id: str | None
    probability: float
    segment: str | None = None


class Submit(Protocol[ItemT, ResultT]):
    """A group-commit writer (mabapi.db.group_commit): the result once committed."""

    async def submit(self, item: ItemT) -> ResultT: ...


def prepare_assignment(
    *,
    experiment_id: str,
    unit_id: str,
    allocation: CachedAllocation,
    rng: np.random.Generator,
    memo: UnitMemo | None,
    segment: str | None = None,
) -> AssignResult | NewAssignment:
    """The answer without the database if there is one (a declared winner, or a unit this
    process has seen in the same generation), else the draw to store.

    A winner declared or a reset made in another process shows here within the
    allocation cache's time to live."""
    if allocation.winner_variant_id is not None:
        return AssignResult(
            experiment_id, unit_id, allocation.winner_variant_id, 1.0, new=False, concluded=True
        )
    if memo is not None and (known := memo.get(experiment_id, allocation.live_generation, unit_id)):
        return AssignResult(experiment_id, unit_id, known[0], known[1], new=False)
    cumulative = allocation.cumulative_shares
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return NewAssignment(experiment_id, unit_id, None, 0.0, segment)
    index = draw_cumulative(cumulative, float(rng.random()))
    return NewAssignment(
        experiment_id,
        unit_id,
        allocation.variant_ids[index],
        allocation.shares[index] / total,
        segment,
    )


def _remember(memo: UnitMemo | None, allocation: CachedAllocation, result: AssignResult) -> None:
    # Called only once committed: a unit whose insert was lost with its transaction
    # (database crash, rollback) must not be answered from memory later.
    if memo is not None and not result.concluded:
        memo.put(
            result.experiment_id,
            allocation.live_generation,
            result.unit_id,
            (result.variant_id, result.probability),
        )


async def assign(
    writer: Submit[NewAssignment, AssignResult],
    *,
    experiment_id: str,
    unit_id: str,
    allocation: CachedAllocation,
    rng: np.random.Generator,
    memo: UnitMemo | None = None,
    segment: str | None = None,
) -> AssignResult:
    """The unit's variant: the stored one if it has one, else a fresh Thompson draw from
    the current allocation (of its segment, if given), stored with its probability and
    counted as one impression.

    The database part goes through `writer` (group commit: `assign_many` for many
    requests in one transaction); the answer comes back once it has committed."""
    prepared = prepare_assignment(
        experiment_id=experiment_id,
        unit_id=unit_id,
        allocation=allocation,
        rng=rng,
        memo=memo,
        segment=segment,
    )
    if isinstance(prepared, AssignResult):
        return prepared
    result = await writer.submit(prepared)
    _remember(memo, allocation, result)
    return result


async def assign_batch(
    open_session: SessionSource,
    items: Sequence[tuple[str, str, str | None]],
    *,
    allocations: dict[tuple[str, str | None], CachedAllocation],
    rng: np.random.Generator,
    memo: UnitMemo | None = None,
) -> list[AssignResult]:
    """POST /assign/batch: every (experiment, unit, segment) in the request's one
    transaction, all of them or none (the first refusal is raised); a new unit is drawn
    from its segment's allocation (keyed by (experiment, segment))."""
    prepared = [
        prepare_assignment(
            experiment_id=experiment_id,
            unit_id=unit_id,
            allocation=allocations[experiment_id, segment],
            rng=rng,
            memo=memo,
            segment=segment,
        )
        for experiment_id, unit_id, segment in items
    ]
    pending = [item for item in prepared if isinstance(item, NewAssignment)]
    stored = iter(await assign_many(await open_session(), pending) if pending else [])
    results: list[AssignResult] = []
    for item in prepared:
        answer = next(stored) if isinstance(item, NewAssignment) else item
        if isinstance(answer, Exception):
            raise answer
        results.append(answer)

    def remember_all() -> None:
        for (experiment_id, _, segment), result in zip(items, results, strict=True):
            _remember(memo, allocations[experiment_id, segment], result)

    open_session.after_commit(remember_all)
    return results


async def assign_many(
    session: AsyncSession, items: Sequence[NewAssignment]
) -> list[AssignResult | AppError]:
    """Store many draws in one transaction (group commit and batch): one query for the
    experiments' state, one multi-row INSERT ... ON CONFLICT DO NOTHING, one read of the
    units that already had a variant, two counter upserts. Per item: its answer, or the
    refusal for that item alone."""
    now = utcnow()
    states = await repository.experiment_states(session, {i.experiment_id for i in items})
    results: list[AssignResult | AppError | None] = [None] * len(items)
    drawn: dict[tuple[str, str], NewAssignment] = {}
    for index, item in enumerate(items):
        state = states.get(item.experiment_id)
        if state is None:
            results[index] = no_such_experiment(item.experiment_id)
        elif state.winner_variant_id is not None:
            results[index] = AssignResult(
                item.experiment_id, item.unit_id, state.winner_variant_id, 1.0, False, True
            )
        elif _takes_new_units(state) and item.variant_id is not None:
            drawn.setdefault((item.experiment_id, item.unit_id), item)
    created = await repository.insert_assignments_if_new(
        session,
        [
            {"experiment_id": e, "unit_id": u, "variant_id": item.variant_id,
             "probability": item.probability, "assigned_at": now, "assigned_date": now.date(),
             "segment": item.segment}
            for (e, u), item in drawn.items()
        ],
    )  # fmt: skip
    # The segments of the units stored, registered with them (the cap was applied when
    # their allocation was computed).
    await segment_registry.register_all(
        session, {(e, item.segment) for (e, u), item in drawn.items()
                  if item.segment is not None and (e, u) in created}
    )  # fmt: skip
    stored = await repository.find_assignments(
        session,
        {
            (item.experiment_id, item.unit_id)
            for index, item in enumerate(items)
            if results[index] is None and (item.experiment_id, item.unit_id) not in created
        },
    )
    impressions: dict[tuple[str, str, date], tuple[int, int]] = {}
    answered: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        if results[index] is not None:
            continue
        key = (item.experiment_id, item.unit_id)
        if key in created:
            mine = drawn[key]
            assert mine.variant_id is not None
            new = key not in answered  # the same unit twice in a batch: created once
            answered.add(key)
            results[index] = AssignResult(*key, mine.variant_id, mine.probability, new)
            if new:
                count = (item.experiment_id, mine.variant_id, now.date())
                impressions[count] = (impressions.get(count, (0, 0))[0] + 1, 0)
        elif (row := stored.get(key)) is not None:
            results[index] = AssignResult(*key, row.variant_id, float(row.probability), False)
        else:
            results[index] = _refusal(item, states[item.experiment_id])
    await repository.add_live_many(session, impressions)
    return _filled(results)


def _filled(results: list[Result | None]) -> list[Result]:
    done = [result for result in results if result is not None]
    assert len(done) == len(results), "every item answered"
    return done


def _takes_new_units(state: repository.ExperimentState) -> bool:
    return state.status == ExperimentStatus.RUNNING.value and not state.archived


def _refusal(item: NewAssignment, state: repository.ExperimentState) -> AppError:
    experiment_id = item.experiment_id
    if state.status != ExperimentStatus.RUNNING.value:
        return ConflictError(
            f"experiment {experiment_id!r} is {state.status}: new units are "
            "assigned only while it is running (PATCH its status to running)"
        )
    if state.archived:
        return ConflictError(f"experiment {experiment_id!r} is archived")
    return ConflictError(f"experiment {experiment_id!r} has no active variants")


@dataclass(frozen=True, slots=True)
class Conversion:
    experiment_id: str
    unit_id: str
    value: float | None = None
    event_id: str | None = None
    metric_id: str | None = None  # a guardrail's; None: the primary metric


async def convert(
    writer: Submit[Conversion, ConversionResult],
    conversion: Conversion,
    *,
    allocation: CachedAllocation | None = None,
    memo: UnitMemo | None = None,
) -> ConversionResult:
    """Credit a conversion to the unit's variant (see `convert_many`), through the
    group-commit `writer`: the answer comes back once it has committed.

    With a `memo` (and the experiment's cached `allocation`, for its generation): a
    conversion metric's unit this process has seen counted is answered "already counted"
    without the database, as the database would answer it until a reset."""
    if (
        memo is None
        or allocation is None
        or not allocation.counts_conversions
        or conversion.metric_id is not None
    ):
        return await writer.submit(conversion)
    experiment_id, unit_id = conversion.experiment_id, conversion.unit_id
    generation = allocation.live_generation
    if known := memo.get(experiment_id, generation, unit_id):
        return ConversionResult(experiment_id, unit_id, known[0], counted=False)
    result = await writer.submit(conversion)
    # Committed: counted now or before; either way "already counted" from now on.
    memo.put(experiment_id, generation, unit_id, (result.variant_id, 0.0))
    return result


async def convert_batch(
    session: AsyncSession, items: Sequence[Conversion]
) -> list[ConversionResult]:
    """POST /conversions/batch: all in the request's transaction, or none (the first
    refusal is raised)."""
    results = await convert_many(session, items)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return [result for result in results if isinstance(result, ConversionResult)]


async def convert_many(
    session: AsyncSession, items: Sequence[Conversion]
) -> list[ConversionResult | AppError]:
    """Credit many conversions in one transaction, each to its unit's variant on the day
    the unit was exposed. Conversion metrics: once per unit, however often retried (one
    UPDATE ... WHERE converted_at IS NULL RETURNING per experiment decides which calls
    count). Value metrics: once per event_id, one at a time (`_convert_one`). A unit never
    assigned is a 409 for that item alone."""
    now = utcnow()
    states = await repository.experiment_states(session, {i.experiment_id for i in items})
    results: list[ConversionResult | AppError | None] = [None] * len(items)
    binary: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        state = states.get(item.experiment_id)
        if state is None:
            results[index] = no_such_experiment(item.experiment_id)
        elif item.metric_id is not None:
            continue  # a guardrail's conversion: one at a time, below
        elif state.metric_kind != MetricKind.VALUE.value:
            binary.setdefault(item.experiment_id, []).append(index)
    successes: dict[tuple[str, str, date], tuple[int, int]] = {}
    for experiment_id, indexes in sorted(binary.items()):
        units = {items[index].unit_id for index in indexes}
        converted = await repository.mark_converted_many(session, experiment_id, units, now)
        stored = await repository.find_assignments(
            session, {(experiment_id, unit) for unit in units - converted.keys()}
        )
        counted: set[str] = set()
        for index in indexes:
            unit_id = items[index].unit_id
            if (mine := converted.get(unit_id)) is not None:
                first = unit_id not in counted  # the same unit twice in a batch: once
                counted.add(unit_id)
                results[index] = ConversionResult(experiment_id, unit_id, mine.variant_id, first)
                if first:
                    key = (experiment_id, mine.variant_id, mine.assigned_date)
                    successes[key] = (0, successes.get(key, (0, 0))[1] + 1)
            elif (row := stored.get((experiment_id, unit_id))) is not None:
                results[index] = ConversionResult(experiment_id, unit_id, row.variant_id, False)
            else:
                results[index] = _never_assigned(experiment_id, unit_id)
    # The rest one at a time, in (experiment, unit) order, as every transaction takes the
    # assignment rows' locks; every counter increment waits for the end, where all of
    # them go in one sorted write. Concurrent batches and single conversions of the same
    # units then lock rows in one order and cannot deadlock.
    live: dict[tuple[str, str, date], tuple[int, int, float, float]] = {
        key: (0, n, 0.0, 0.0) for key, (_, n) in successes.items()
    }
    rest = sorted(
        (index for index in range(len(items)) if results[index] is None),
        key=lambda index: (items[index].experiment_id, items[index].unit_id, index),
    )
    for index in rest:
        item = items[index]
        if item.metric_id is not None:
            try:
                results[index] = await _convert_guardrail(session, item, now)
            except AppError as error:
                results[index] = error
            continue
        try:  # value metrics
            results[index] = await _convert_one(
                session,
                live,
                experiment_id=item.experiment_id,
                unit_id=item.unit_id,
                value=item.value,
                event_id=item.event_id,
            )
        except AppError as error:  # raised before this item wrote anything
            results[index] = error
    await repository.add_live_values(session, live)
    return _filled(results)


async def _convert_guardrail(
    session: AsyncSession, item: Conversion, now: datetime
) -> ConversionResult:
    """A conversion on a guardrail metric, credited to the unit's variant on its exposure
    day (once per unit and metric; value guardrails once per event_id). Refused before it
    writes anything: a unit never assigned (409), a metric not declared (422)."""
    assert item.metric_id is not None
    experiment = await _experiment(session, item.experiment_id)
    assignment = await repository.find_assignment(session, item.experiment_id, item.unit_id)
    if assignment is None:
        raise _never_assigned(item.experiment_id, item.unit_id)
    counted = await experiments_guardrails.record_conversion(
        session,
        experiment,
        metric_id=item.metric_id,
        unit_id=item.unit_id,
        variant_id=assignment.variant_id,
        exposure_day=assignment.assigned_date,
        value=item.value,
        event_id=item.event_id,
    )
    return ConversionResult(item.experiment_id, item.unit_id, assignment.variant_id, counted)


def _never_assigned(experiment_id: str, unit_id: str) -> ConflictError:
    return ConflictError(
        f"unit {unit_id!r} was never assigned in {experiment_id!r}: call "
        f"POST /experiments/{experiment_id}/assign first"
    )


async def _convert_one(
    session: AsyncSession,
    live: dict[tuple[str, str, date], tuple[int, int, float, float]],
    *,
    experiment_id: str,
    unit_id: str,
    value: float | None,
    event_id: str | None,
) -> ConversionResult:
    """Credit a value event to the unit's variant, on the day it was exposed: once per
    event_id; the unit's running total keeps the sum of squares per unit exact
    (x_new^2 - x_old^2 is added), which the value posterior needs. The counter
    increments go into `live`, written by the caller once every row is locked."""
    assignment = await repository.find_assignment(session, experiment_id, unit_id, for_update=True)
    if assignment is None:
        raise _never_assigned(experiment_id, unit_id)
    if value is None or event_id is None:
        raise InvalidInputError(
            f"experiment {experiment_id!r} measures values: send value and event_id"
        )
    now = utcnow()
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
    key = (experiment_id, assignment.variant_id, assignment.assigned_date)
    n, s, value_sum, value_sum_squares = live.get(key, (0, 0, 0.0, 0.0))
    live[key] = (
        n,
        s + (1 if first else 0),
        value_sum + value,
        value_sum_squares + total * total - previous * previous,
    )
    return ConversionResult(experiment_id, unit_id, assignment.variant_id, True)


async def reset(session: AsyncSession, *, experiment_id: str) -> None:
    """Start real-time data over: assignments, live counts and value events are deleted,
    a declared winner is cleared and the experiment runs again. Reported daily totals
    (POST /metrics/) are kept."""
    experiment = await _experiment(session, experiment_id)
    await repository.reset_live_data(session, experiment_id)
    await experiments_guardrails.reset(session, experiment_id)
    experiment.live_generation += 1
    experiment.winner_variant_id = None
    experiment.status = ExperimentStatus.RUNNING
    experiment.updated_at = utcnow()
    await session.flush()
