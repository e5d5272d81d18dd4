"""Experiments and variants: create, list, change, archive, conclude. Flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.base import utcnow
from mabapi.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    no_such_experiment,
)
from mabapi.experiments import repository
from mabapi.experiments.models import (
    Experiment,
    ExperimentStatus,
    Variant,
)
from mabapi.experiments.schemas import (
    MAX_VARIANTS,
    ExperimentIn,
    ExperimentPatch,
    ExperimentSettings,
    VariantIn,
    VariantPatch,
    value_type,
)
from mabapi.webhooks import outbox


def experiment_settings(experiment: Experiment) -> ExperimentSettings:
    return ExperimentSettings.model_validate(experiment.settings or {})


async def require_experiment(session: AsyncSession, experiment_id: str) -> Experiment:
    experiment = await repository.get_experiment(session, experiment_id)
    if experiment is None:
        raise no_such_experiment(experiment_id)
    return experiment


def _variant_rows(variants: Sequence[VariantIn]) -> list[Variant]:
    has_control = any(variant.is_control for variant in variants)
    return [
        Variant(
            id=variant.id,
            name=variant.name or variant.id,
            # With no control named, the first variant listed is the control.
            is_control=variant.is_control or (not has_control and position == 0),
            active=True,
            position=position,
            value=variant.value,
        )
        for position, variant in enumerate(variants)
    ]


async def create_experiment(
    session: AsyncSession, *, payload: ExperimentIn, project_id: str = "default"
) -> Experiment:
    # Ids are unique across projects; the message is the same whoever holds the id.
    if await repository.get_experiment(session, payload.id, with_variants=False) is not None:
        raise ConflictError(f"experiment id {payload.id!r} is already taken; pick another id")
    experiment = Experiment(
        id=payload.id,
        project_id=project_id,
        name=payload.name or payload.id,
        description=payload.description,
        status=payload.status,
        algorithm=str(payload.settings.policy.algorithm),
        metric_kind=payload.metric_kind.value,
        higher_is_better=payload.higher_is_better,
        settings=payload.settings.model_dump(mode="json"),
        guardrails=[guardrail.model_dump(mode="json") for guardrail in payload.guardrails],
        variants=_variant_rows(payload.variants),
    )
    await repository.add_experiment(session, experiment)
    return await require_experiment(session, payload.id)


async def list_experiments(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    status: ExperimentStatus | None,
    include_archived: bool,
    project_id: str | None = None,
    search: str = "",
) -> tuple[Sequence[Experiment], int]:
    return await repository.list_experiments(
        session,
        limit=limit,
        offset=offset,
        project_id=project_id,
        status=status,
        include_archived=include_archived,
        search=search,
    )


async def update_experiment(
    session: AsyncSession, *, experiment_id: str, patch: ExperimentPatch
) -> Experiment:
    experiment = await require_experiment(session, experiment_id)
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True, mode="json")
    if patch.settings is not None:
        known = {variant.id for variant in experiment.variants}
        unknown = sorted(set(patch.settings.policy.reserved) - known)
        if unknown:
            raise InvalidInputError(
                f"settings.policy.reserved names unknown variant(s): {', '.join(unknown)}"
            )
        changes["algorithm"] = str(patch.settings.policy.algorithm)
    for field, value in changes.items():
        setattr(experiment, field, value)
    experiment.updated_at = utcnow()
    await session.flush()
    return experiment


async def update_variant(
    session: AsyncSession, *, experiment_id: str, variant_id: str, patch: VariantPatch
) -> Experiment:
    """Rename, pause (active: false), resume, or make a variant the control."""
    experiment = await require_experiment(session, experiment_id)
    variant = next((v for v in experiment.variants if v.id == variant_id), None)
    if variant is None:
        raise NotFoundError(f"experiment {experiment_id!r} has no variant {variant_id!r}")
    if patch.is_control:
        for other in experiment.variants:
            other.is_control = other.id == variant_id
    elif patch.is_control is False:
        variant.is_control = False
    if patch.name is not None:
        variant.name = patch.name
    if patch.active is not None:
        variant.active = patch.active
    if patch.value is not None:
        _same_value_type(experiment, patch.value, but=variant_id)
        variant.value = patch.value
    experiment.updated_at = utcnow()
    await session.flush()
    return experiment


def _same_value_type(experiment: Experiment, value: Any, *, but: str) -> None:
    """A 409 when `value` has another type than the other variants' values."""
    kind = value_type(value)
    others = {value_type(v.value) for v in experiment.variants if v.id != but} - {None}
    if kind is not None and others and others != {kind}:
        raise ConflictError(
            f"experiment {experiment.id!r} has {others.pop()} values; this one is a {kind} "
            "(one type per experiment)"
        )


async def add_variant(
    session: AsyncSession, *, experiment_id: str, payload: VariantIn
) -> Experiment:
    experiment = await require_experiment(session, experiment_id)
    if any(variant.id == payload.id for variant in experiment.variants):
        raise ConflictError(f"variant {payload.id!r} already exists in {experiment_id!r}")
    if len(experiment.variants) >= MAX_VARIANTS:
        raise ConflictError(
            f"experiment {experiment_id!r} already has the maximum {MAX_VARIANTS} variants"
        )
    if payload.is_control and any(variant.is_control for variant in experiment.variants):
        raise ConflictError(
            f"experiment {experiment_id!r} already has a control; add this variant without "
            "is_control"
        )
    _same_value_type(experiment, payload.value, but=payload.id)
    position = await repository.next_variant_position(session, experiment_id)
    await repository.add_variant(
        session,
        Variant(
            experiment_id=experiment_id,
            id=payload.id,
            name=payload.name or payload.id,
            is_control=payload.is_control,
            active=True,
            position=position,
            value=payload.value,
        ),
    )
    await repository.touch_experiment(session, experiment_id)
    session.expunge(experiment)
    return await require_experiment(session, experiment_id)


async def set_archived(session: AsyncSession, *, experiment_id: str, archived: bool) -> Experiment:
    experiment = await require_experiment(session, experiment_id)
    if archived and experiment.archived_at is None:
        experiment.archived_at = utcnow()
        experiment.updated_at = experiment.archived_at
    elif not archived and experiment.archived_at is not None:
        experiment.archived_at = None
        experiment.updated_at = utcnow()
    await session.flush()
    return experiment


async def conclude(session: AsyncSession, *, experiment_id: str, winner: str) -> Experiment:
    """End the test: status stopped, and every unit gets `winner` from now on."""
    experiment = await require_experiment(session, experiment_id)
    if not any(variant.id == winner for variant in experiment.variants):
        # 422, not 404: the experiment exists; the body names something it does not have.
        names = ", ".join(variant.id for variant in experiment.variants) or "none"
        raise InvalidInputError(
            f"winner {winner!r} is not a variant of {experiment_id!r} (its variants: {names})"
        )
    announce = experiment.winner_variant_id != winner
    experiment.winner_variant_id = winner
    experiment.status = ExperimentStatus.STOPPED
    experiment.updated_at = utcnow()
    await session.flush()
    if announce:  # once per conclusion, not per repeated call
        await outbox.emit(
            session,
            project_id=experiment.project_id,
            event="experiment.concluded",
            experiment_id=experiment.id,
            data={
                "experiment": {"id": experiment.id, "name": experiment.name},
                "winner": winner,
                "concluded_at": experiment.updated_at.isoformat(),
            },
        )
    return experiment
