"""HTTP routes of experiments: create, list, read, change, variants, archive."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mabapi.access.models import Scope
from mabapi.deps import (
    CONFLICT,
    INVALID,
    NOT_FOUND,
    TOO_LARGE,
    UNAVAILABLE,
    ExperimentId,
    PrincipalDep,
    SessionDep,
    needs,
)
from mabapi.experiments import lifecycle
from mabapi.experiments.models import Experiment, ExperimentStatus
from mabapi.experiments.schemas import (
    ExperimentIn,
    ExperimentOut,
    ExperimentPage,
    ExperimentPatch,
    VariantIn,
    VariantPatch,
)

experiments_router = APIRouter(
    prefix="/experiments", tags=["experiments"], responses={**INVALID, **UNAVAILABLE}
)


def _experiment_out(experiment: Experiment) -> ExperimentOut:
    return ExperimentOut.model_validate(experiment)


@experiments_router.post(
    "",
    dependencies=[needs(Scope.ADMIN)],
    status_code=201,
    response_model=ExperimentOut,
    responses={**CONFLICT, **TOO_LARGE},
)
async def create_experiment(
    payload: ExperimentIn, session: SessionDep, principal: PrincipalDep
) -> ExperimentOut:
    """Create an experiment with its variants (the first is the control unless one says so),
    in the key's project."""
    return _experiment_out(
        await lifecycle.create_experiment(
            session, payload=payload, project_id=principal.home_project
        )
    )


@experiments_router.get("", dependencies=[needs(Scope.READ)], response_model=ExperimentPage)
async def list_experiments(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    status: ExperimentStatus | None = None,
    include_archived: bool = False,
) -> ExperimentPage:
    """Experiments, newest first, `limit` at a time."""
    items, total = await lifecycle.list_experiments(
        session,
        limit=limit,
        offset=offset,
        status=status,
        include_archived=include_archived,
        project_id=principal.project_id,
    )
    return ExperimentPage(
        items=[_experiment_out(item) for item in items], total=total, limit=limit, offset=offset
    )


@experiments_router.get(
    "/{experiment_id}",
    dependencies=[needs(Scope.READ)],
    response_model=ExperimentOut,
    responses=NOT_FOUND,
)
async def get_experiment(experiment_id: ExperimentId, session: SessionDep) -> ExperimentOut:
    return _experiment_out(await lifecycle.require_experiment(session, experiment_id))


@experiments_router.patch(
    "/{experiment_id}",
    dependencies=[needs(Scope.ADMIN)],
    response_model=ExperimentOut,
    responses=NOT_FOUND,
)
async def patch_experiment(
    experiment_id: ExperimentId, patch: ExperimentPatch, session: SessionDep
) -> ExperimentOut:
    """Change the name, description or status (draft, running, paused, stopped)."""
    experiment = await lifecycle.update_experiment(
        session, experiment_id=experiment_id, patch=patch
    )
    return _experiment_out(experiment)


@experiments_router.post(
    "/{experiment_id}/variants",
    dependencies=[needs(Scope.ADMIN)],
    status_code=201,
    response_model=ExperimentOut,
    responses={**NOT_FOUND, **CONFLICT},
)
async def add_variant(
    experiment_id: ExperimentId, payload: VariantIn, session: SessionDep
) -> ExperimentOut:
    """Add a variant; it enters the allocation from the next request on."""
    experiment = await lifecycle.add_variant(session, experiment_id=experiment_id, payload=payload)
    return _experiment_out(experiment)


@experiments_router.patch(
    "/{experiment_id}/variants/{variant_id}",
    dependencies=[needs(Scope.ADMIN)],
    response_model=ExperimentOut,
    responses={**NOT_FOUND, **CONFLICT},
)
async def patch_variant(
    experiment_id: ExperimentId,
    variant_id: ExperimentId,
    patch: VariantPatch,
    session: SessionDep,
) -> ExperimentOut:
    """Rename, pause (`{"active": false}`: share 0, given to the others), resume, or make
    a variant the control."""
    experiment = await lifecycle.update_variant(
        session, experiment_id=experiment_id, variant_id=variant_id, patch=patch
    )
    return _experiment_out(experiment)


@experiments_router.post(
    "/{experiment_id}/archive",
    dependencies=[needs(Scope.ADMIN)],
    response_model=ExperimentOut,
    responses=NOT_FOUND,
)
async def archive_experiment(experiment_id: ExperimentId, session: SessionDep) -> ExperimentOut:
    """Hide from the default list and refuse new metrics; data and allocations stay."""
    experiment = await lifecycle.set_archived(session, experiment_id=experiment_id, archived=True)
    return _experiment_out(experiment)


@experiments_router.post(
    "/{experiment_id}/restore",
    dependencies=[needs(Scope.ADMIN)],
    response_model=ExperimentOut,
    responses=NOT_FOUND,
)
async def restore_experiment(experiment_id: ExperimentId, session: SessionDep) -> ExperimentOut:
    """Undo an archive."""
    experiment = await lifecycle.set_archived(session, experiment_id=experiment_id, archived=False)
    return _experiment_out(experiment)
