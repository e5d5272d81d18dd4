"""Every SQL statement of reports: which experiments the watcher watches, and the
compare-and-set states (event_states) that announce a change once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, cast, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.base import utcnow
from mabapi.db.dialect import insert_for
from mabapi.experiments.models import EventState, Experiment, ExperimentStatus
from mabapi.webhooks.models import Webhook


async def watched(session: AsyncSession) -> list[str]:
    with_webhooks = select(Webhook.project_id)
    rows = await session.scalars(
        select(Experiment.id)
        .where(
            Experiment.status == ExperimentStatus.RUNNING,
            Experiment.archived_at.is_(None),
            Experiment.project_id.in_(with_webhooks)
            | (cast(Experiment.guardrails, String) != "[]"),
        )
        .order_by(Experiment.id)
    )
    return list(rows)


async def swap_state(
    session: AsyncSession, experiment_id: str, kind: str, *, initial: str, new: str
) -> str | None:
    """Set the state to `new`; the old value if this call changed it, else None (it
    was `new` already, or another process changed it first)."""
    await session.execute(
        insert_for(session, EventState)
        .values(experiment_id=experiment_id, kind=kind, value=initial, updated_at=utcnow())
        .on_conflict_do_nothing()
    )
    old = await session.scalar(
        select(EventState.value).where(
            EventState.experiment_id == experiment_id, EventState.kind == kind
        )
    )
    if old is None or old == new:
        return None
    result = await session.execute(
        update(EventState)
        .where(
            EventState.experiment_id == experiment_id,
            EventState.kind == kind,
            EventState.value == old,
        )
        .values(value=new, updated_at=utcnow())
    )
    return old if getattr(result, "rowcount", 0) == 1 else None


async def held(
    session: AsyncSession, experiment_id: str, value: str, *, now: datetime, hold_seconds: float
) -> bool:
    """True once `value` has been seen on watches at least `hold_seconds` apart with
    nothing else seen in between (the candidate is kept in `event_states`)."""
    kind = "recommendation_seen"
    await session.execute(
        insert_for(session, EventState)
        .values(experiment_id=experiment_id, kind=kind, value=value, updated_at=now)
        .on_conflict_do_nothing()
    )
    row = (
        await session.execute(
            select(EventState.value, EventState.updated_at).where(
                EventState.experiment_id == experiment_id, EventState.kind == kind
            )
        )
    ).one()
    if row.value != value:
        await session.execute(
            update(EventState)
            .where(EventState.experiment_id == experiment_id, EventState.kind == kind)
            .values(value=value, updated_at=now)
        )
        return hold_seconds <= 0
    return bool((now - row.updated_at).total_seconds() >= hold_seconds)
