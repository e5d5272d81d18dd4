"""Guardrails: their data (reported rows, real-time conversions), the daily check that
records a breach (and announces it), clearing, and what the summary shows. Flushes,
never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.base import utcnow
from mabapi.errors import InvalidInputError, NotFoundError
from mabapi.experiments.lifecycle import require_experiment
from mabapi.experiments.models import (
    GUARDRAIL_REPORTED,
    Experiment,
    GuardrailBreach,
    MetricKind,
    Variant,
)
from mabapi.experiments.schemas import GuardrailIn
from mabapi.guardrails import repository as store
from mabapi.stats.guardrails import (
    GuardrailCheck,
    GuardrailRule,
    check,
    relative_difference,
)
from mabapi.stats.sums import EMPTY, Sums, posterior_of
from mabapi.webhooks import outbox

# Most severe first: a variant stopped by one guardrail and floored by another is stopped.
_SEVERITY = {"stop": 0, "floor": 1}


def declared(experiment: Experiment) -> list[GuardrailIn]:
    return [GuardrailIn.model_validate(item) for item in experiment.guardrails or []]


def declared_metric(experiment: Experiment, metric_id: str) -> GuardrailIn:
    for guardrail in declared(experiment):
        if guardrail.metric_id == metric_id:
            return guardrail
    names = ", ".join(g.metric_id for g in declared(experiment)) or "none"
    raise InvalidInputError(
        f"experiment {experiment.id!r} has no guardrail {metric_id!r} (its guardrails: "
        f"{names}); declare it with PATCH /experiments/{experiment.id} "
        '{"guardrails": [...]}, or leave metric_id out for the primary metric'
    )


def reference_variant(variants: Sequence[Variant]) -> Variant | None:
    """What guardrails compare with: the control, or the first variant if none is."""
    return next((v for v in variants if v.is_control), variants[0] if variants else None)


class GuardrailRow(Protocol):
    """What a reported guardrail row carries (a `metrics.schemas.MetricIn` naming a
    metric_id); a protocol, because guardrails sit below metrics."""

    @property
    def experiment_id(self) -> str: ...
    @property
    def metric_id(self) -> str | None: ...
    @property
    def variant_id(self) -> str: ...
    @property
    def date(self) -> date: ...
    @property
    def impressions(self) -> int: ...
    @property
    def successes(self) -> int: ...
    @property
    def value_sum(self) -> float | None: ...
    @property
    def value_sum_squares(self) -> float | None: ...


async def record_rows(
    session: AsyncSession, experiments: dict[str, Experiment], rows: Sequence[GuardrailRow]
) -> None:
    """Reported guardrail totals (rows naming a metric_id): checked against each
    experiment's declared guardrails, then set like the primary metric's."""
    now = utcnow()
    values = []
    for index, row in enumerate(rows):
        experiment = experiments[row.experiment_id]
        assert row.metric_id is not None
        guardrail = declared_metric(experiment, row.metric_id)
        if row.variant_id not in {v.id for v in experiment.variants}:
            raise NotFoundError(
                f"experiment {experiment.id!r} has no variant {row.variant_id!r}; guardrail "
                "rows need an existing variant (post the primary metric first, or add it with "
                f"POST /experiments/{experiment.id}/variants)"
            )
        if guardrail.kind is MetricKind.VALUE and row.value_sum is None:
            raise InvalidInputError(
                f"guardrail {row.metric_id!r} measures values: rows need value_sum and "
                f"value_sum_squares (row {index} lacks them)"
            )
        values.append(
            {
                "experiment_id": row.experiment_id,
                "metric_id": row.metric_id,
                "variant_id": row.variant_id,
                "date": row.date,
                "source": GUARDRAIL_REPORTED,
                "impressions": row.impressions,
                "successes": row.successes,
                "value_sum": row.value_sum or 0.0,
                "value_sum_squares": row.value_sum_squares or 0.0,
                "updated_at": now,
            }
        )
    await store.set_reported(session, values)


async def record_conversion(
    session: AsyncSession,
    experiment: Experiment,
    *,
    metric_id: str,
    unit_id: str,
    variant_id: str,
    exposure_day: date,
    value: float | None,
    event_id: str | None,
) -> bool:
    """A real-time conversion on a guardrail, credited to the unit's variant on its
    exposure day: once per unit (conversions) or once per event_id (values). True when
    counted now."""
    guardrail = declared_metric(experiment, metric_id)
    key = {"experiment_id": experiment.id, "metric_id": metric_id}
    if guardrail.kind is MetricKind.CONVERSION:
        if not await store.count_unit_once(session, **key, unit_id=unit_id, variant_id=variant_id):
            return False
        await store.add_live(
            session, **key, variant_id=variant_id, day=exposure_day, successes=1,
            value_sum=0.0, value_sum_squares=0.0,
        )  # fmt: skip
        return True
    if value is None or event_id is None:
        raise InvalidInputError(f"guardrail {metric_id!r} measures values: send value and event_id")
    if not await store.event_is_new(session, **key, event_id=event_id):
        return False
    first = await store.count_unit_once(session, **key, unit_id=unit_id, variant_id=variant_id)
    total = await store.add_unit_value(session, **key, unit_id=unit_id, value=value)
    previous = total - value
    await store.add_live(
        session, **key, variant_id=variant_id, day=exposure_day, successes=1 if first else 0,
        value_sum=value, value_sum_squares=total * total - previous * previous,
    )  # fmt: skip
    return True


# A guardrail's totals per variant: the one sums type (`impressions` are its units).
GuardrailTotals = Sums


async def totals_between(
    session: AsyncSession,
    experiment_id: str,
    guardrail: GuardrailIn,
    since: date | None,
    before: date,
    live_units: dict[str, float],
) -> dict[str, GuardrailTotals]:
    sums = await store.sums_between(session, experiment_id, guardrail.metric_id, since, before)
    result = {}
    for variant in set(sums) | set(live_units):
        n, s, v, q = sums.get(variant, (0.0, 0.0, 0.0, 0.0))
        result[variant] = GuardrailTotals(n + live_units.get(variant, 0.0), s, v, q)
    return result


_EMPTY = EMPTY


@dataclass(frozen=True, slots=True)
class VariantCheck:
    variant_id: str
    totals: GuardrailTotals
    result: GuardrailCheck | None  # None: not checked (the reference, or no data yet)


@dataclass(frozen=True, slots=True)
class GuardrailState:
    guardrail: GuardrailIn
    reference: str
    look: int  # 0 before the first day with data
    control: GuardrailTotals
    checks: list[VariantCheck]


async def _states(session: AsyncSession, experiment: Experiment, day: date) -> list[GuardrailState]:
    """Each guardrail checked on the data dated before `day` (the day's check)."""
    guardrails = declared(experiment)
    variants = list(experiment.variants)
    reference = reference_variant(variants)
    if not guardrails or reference is None:
        return []
    states = []
    for guardrail in guardrails:
        # After an admin clears a breach, checks start over from that day's data.
        since = await store.restart_day(session, experiment.id, guardrail.metric_id)
        live_units, first_live = await store.live_units_between(session, experiment.id, since, day)
        totals = await totals_between(session, experiment.id, guardrail, since, day, live_units)
        first = await store.first_day(session, experiment.id, guardrail.metric_id, since)
        starts = [d for d in (first, first_live) if d is not None]
        look = (day - min(starts)).days if starts else 0
        rule = GuardrailRule(
            margin=guardrail.max_relative_harm,
            probability=guardrail.probability,
            higher_is_better=guardrail.higher_is_better,
            min_units=guardrail.min_units,
        )
        control = totals.get(reference.id, _EMPTY)
        checks = []
        for variant in variants:
            mine = totals.get(variant.id, _EMPTY)
            result = None
            if (
                variant.id != reference.id
                and look >= 1
                and mine.impressions
                and control.impressions
            ):
                result = check(
                    posterior_of(mine, values=guardrail.kind is MetricKind.VALUE),
                    posterior_of(control, values=guardrail.kind is MetricKind.VALUE),
                    rule=rule,
                    look=look,
                    units=(mine.impressions, control.impressions),
                )
            checks.append(VariantCheck(variant.id, mine, result))
        states.append(GuardrailState(guardrail, reference.id, look, control, checks))
    return states


def breach_view(breach: GuardrailBreach) -> dict[str, Any]:
    return {
        "metric_id": breach.metric_id,
        "probability_harm": breach.probability_harm,
        "action": breach.action,
        "since": breach.since.isoformat(),
    }


def _found(
    states: Sequence[GuardrailState], already: set[tuple[str, str]], experiment_id: str, day: date
) -> list[GuardrailBreach]:
    """The breaches today's check finds that are not open yet, as unsaved rows."""
    found = []
    for state in states:
        guardrail = state.guardrail
        for item in state.checks:
            result = item.result
            if result is None or not result.breached:
                continue
            if (guardrail.metric_id, item.variant_id) in already:
                continue
            found.append(
                GuardrailBreach(
                    experiment_id=experiment_id,
                    metric_id=guardrail.metric_id,
                    variant_id=item.variant_id,
                    action=guardrail.action,
                    since=day,
                    probability_harm=result.probability_harm,
                    details=_details(state, item, result),
                    breached_at=utcnow(),
                )
            )
    return found


async def status(
    session: AsyncSession, experiment: Experiment, *, day: date
) -> dict[str, GuardrailBreach]:
    """The breach that applies to each breached variant: the open (recorded) ones, and
    those the check on the data before `day` finds that the watcher has not recorded yet.
    Reads only: recording (and announcing) a breach is `enforce`'s, run by the watcher."""
    return applying(await breaches(session, experiment, day=day))


async def breaches(
    session: AsyncSession, experiment: Experiment, *, day: date
) -> list[GuardrailBreach]:
    """Open breaches, then those the check on the data before `day` finds (unsaved).
    Reads only; `applying` picks the one that acts on each variant."""
    if not experiment.guardrails:
        return []
    recorded = list(await store.open_breaches(session, experiment.id))
    already = {(b.metric_id, b.variant_id) for b in recorded}
    states = await _states(session, experiment, day)
    return [*recorded, *_found(states, already, experiment.id, day)]


async def enforce(
    session: AsyncSession, experiment: Experiment, *, day: date
) -> dict[str, GuardrailBreach]:
    """Check every guardrail on the data before `day`; record (and announce) each new
    breach. Returns the open breach that applies to each breached variant. The watcher's:
    reads use `status`, which finds the same breaches without writing them."""
    if not experiment.guardrails:
        return {}
    already = {
        (b.metric_id, b.variant_id) for b in await store.open_breaches(session, experiment.id)
    }
    for breach in _found(await _states(session, experiment, day), already, experiment.id, day):
        inserted = await store.insert_breach(
            session,
            {
                "experiment_id": breach.experiment_id,
                "metric_id": breach.metric_id,
                "variant_id": breach.variant_id,
                "action": breach.action,
                "since": breach.since,
                "probability_harm": breach.probability_harm,
                "details": breach.details,
                "breached_at": breach.breached_at,
            },
        )
        if inserted:
            await outbox.emit(
                session,
                project_id=experiment.project_id,
                event="guardrail.breached",
                experiment_id=experiment.id,
                data={
                    "experiment": {"id": experiment.id, "name": experiment.name},
                    "variant_id": breach.variant_id,
                    "since": breach.since.isoformat(),
                    **breach.details,
                },
            )
    return applying(await store.open_breaches(session, experiment.id))


def applying(breaches: Sequence[GuardrailBreach]) -> dict[str, GuardrailBreach]:
    """Per variant, its most severe open breach (stop before floor, then the earliest)."""
    result: dict[str, GuardrailBreach] = {}
    for breach in sorted(breaches, key=lambda b: (_SEVERITY.get(b.action, 9), b.breached_at)):
        result.setdefault(breach.variant_id, breach)
    return result


def _details(state: GuardrailState, item: VariantCheck, result: GuardrailCheck) -> dict[str, Any]:
    guardrail = state.guardrail
    return {
        "guardrail": guardrail.model_dump(mode="json"),
        "control_id": state.reference,
        "check": result.look,
        "probability_harm": result.probability_harm,
        "probability_any_harm": result.probability_any_harm,
        "required_any_harm": result.required_any_harm,
        "variant": _totals_json(item.totals),
        "control": _totals_json(state.control),
    }


def _totals_json(totals: GuardrailTotals) -> dict[str, float | None]:
    return {
        "units": totals.impressions,
        "successes": totals.successes,
        "value_sum": totals.value_sum,
        "mean": (totals.value_sum / totals.impressions if totals.impressions else None)
        if totals.value_sum
        else totals.mean(values=False),
    }


async def clear_guardrail(session: AsyncSession, *, experiment_id: str, metric_id: str) -> int:
    """An admin's decision: the metric's open breaches stop applying (kept as records,
    with when they were cleared), and its checks start over on the data from today on
    (the harm was accepted or fixed). Returns how many were open."""
    experiment = await require_experiment(session, experiment_id)
    if metric_id not in {g.metric_id for g in declared(experiment)}:
        names = ", ".join(g.metric_id for g in declared(experiment)) or "none"
        raise NotFoundError(
            f"experiment {experiment_id!r} has no guardrail {metric_id!r} (its guardrails: {names})"
        )
    return await store.clear_breaches(session, experiment.id, metric_id, utcnow())


async def reset(session: AsyncSession, experiment_id: str) -> None:
    await store.delete_live(session, experiment_id)
    await store.clear_breaches(session, experiment_id, None, utcnow())


@dataclass(frozen=True, slots=True)
class VariantReport:
    variant_id: str
    units: float
    successes: float
    mean: float | None
    relative_difference: tuple[float, float, float] | None  # mean, lower, upper (95%)
    probability_harm: float | None
    breach: GuardrailBreach | None


@dataclass(frozen=True, slots=True)
class GuardrailReport:
    guardrail: GuardrailIn
    reference: str
    check: int
    variants: list[VariantReport]


async def report(
    session: AsyncSession,
    experiment: Experiment,
    *,
    day: date,
    breach_day: date,
    found: Sequence[GuardrailBreach] | None = None,
) -> list[GuardrailReport]:
    """What the summary shows per guardrail and variant: the rate (or mean), the relative
    difference to the control with its 95% interval and P(harm) on the data before `day`,
    and the breach that applies, as the allocation for `breach_day` sees it (`status`)."""
    if not experiment.guardrails:
        return []
    if found is None:
        found = await breaches(session, experiment, day=breach_day)
    open_by_key = {(b.metric_id, b.variant_id): b for b in found}
    reports = []
    for state in await _states(session, experiment, day):
        guardrail = state.guardrail
        control_posterior = posterior_of(state.control, values=guardrail.kind is MetricKind.VALUE)
        variants = []
        for index, item in enumerate(state.checks):
            totals = item.totals
            mean = (
                (totals.value_sum / totals.impressions if totals.impressions else None)
                if guardrail.kind is MetricKind.VALUE
                else totals.mean(values=False)
            )
            difference = None
            if (
                item.variant_id != state.reference
                and totals.impressions
                and state.control.impressions
            ):
                difference = relative_difference(
                    posterior_of(totals, values=guardrail.kind is MetricKind.VALUE),
                    control_posterior,
                    seed=index,
                )
            variants.append(
                VariantReport(
                    variant_id=item.variant_id,
                    units=totals.impressions,
                    successes=totals.successes,
                    mean=mean,
                    relative_difference=difference,
                    probability_harm=None if item.result is None else item.result.probability_harm,
                    breach=open_by_key.get((guardrail.metric_id, item.variant_id)),
                )
            )
        reports.append(GuardrailReport(guardrail, state.reference, state.look, variants))
    return reports


def check_day(today: date, for_date: date | None = None) -> date:
    """The day whose check applies: data before min(for_date, today) (complete days)."""
    return today if for_date is None else min(for_date, today)


async def guardrail_series(session: AsyncSession, experiment: Experiment) -> dict[str, Any]:
    """Per guardrail, each variant's rate (or mean) over everything up to each day: the
    dashboard's guardrail charts."""
    result: dict[str, Any] = {}
    live = await store.live_units_by_day(session, experiment.id) if experiment.guardrails else {}
    variant_ids = [v.id for v in experiment.variants]
    for guardrail in declared(experiment):
        rows = await store.daily_rows(session, experiment.id, guardrail.metric_id)
        days = sorted({row[0] for row in rows} | {day for day, _ in live})
        units = dict.fromkeys(variant_ids, 0.0)
        amounts = dict.fromkeys(variant_ids, 0.0)
        by_day: dict[tuple[date, str], tuple[float, float, float]] = {
            (d, v): (n, s, x) for d, v, n, s, x in rows
        }
        series: dict[str, list[float | None]] = {v: [] for v in variant_ids}
        for day in days:
            for variant in variant_ids:
                n, s, x = by_day.get((day, variant), (0.0, 0.0, 0.0))
                units[variant] += n + live.get((day, variant), 0.0)
                amounts[variant] += x if guardrail.kind is MetricKind.VALUE else s
                series[variant].append(
                    amounts[variant] / units[variant] if units[variant] else None
                )
        result[guardrail.metric_id] = {"labels": [d.isoformat() for d in days], "series": series}
    return result
