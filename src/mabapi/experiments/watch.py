"""The watcher: what no request announces. Run by the process holding the webhook
delivery lease every MABAPI_WEBHOOK_WATCH_SECONDS over running experiments that have
guardrails or whose project has webhooks: guardrails are checked (a breach is recorded
even when no traffic asks for an allocation), and a change of the recommendation or a
new sample-ratio mismatch is announced once (compare-and-set on `event_states`)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import String, cast, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.db.base import utcnow
from mabapi.db.dialect import insert_for
from mabapi.db.transactions import background_transaction
from mabapi.errors import AppError
from mabapi.experiments import guardrails
from mabapi.experiments.models import EventState, Experiment, ExperimentStatus
from mabapi.experiments.reporting import Summary, summarize
from mabapi.webhooks import outbox
from mabapi.webhooks.models import Webhook

log = logging.getLogger("mabapi.webhooks")


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


def _numbers(summary: Summary) -> dict[str, Any]:
    return {
        "variants": {
            item.variant.id: {
                "impressions": item.totals.impressions,
                "successes": item.totals.successes,
                "probability_best": item.probability_best,
            }
            for item in summary.variants
        },
        "days_of_data": summary.days_of_data,
    }


async def watch_one(session: AsyncSession, experiment_id: str) -> None:
    summary = await summarize(session, experiment_id=experiment_id)
    experiment = summary.experiment
    await guardrails.enforce(session, experiment, day=utcnow().date())
    about = {"id": experiment.id, "name": experiment.name}
    recommendation = summary.recommendation
    names = [item.variant.id for item in summary.variants if item.variant.active]
    action = recommendation.action.value
    old = await swap_state(session, experiment.id, "recommendation", initial="continue", new=action)
    if old is not None:
        winner = recommendation.winner
        await outbox.emit(
            session,
            project_id=experiment.project_id,
            event="recommendation.changed",
            experiment_id=experiment.id,
            data={
                "experiment": about,
                "from": old,
                "to": action,
                "winner": None if winner is None else names[winner],
                "reason": recommendation.reason,
                **_numbers(summary),
            },
        )
    srm = summary.sample_ratio
    state = "mismatch" if srm is not None and srm.mismatch else "ok"
    old = await swap_state(session, experiment.id, "sample_ratio", initial="ok", new=state)
    if old is not None and state == "mismatch" and srm is not None:
        ids = [item.variant.id for item in summary.variants]
        await outbox.emit(
            session,
            project_id=experiment.project_id,
            event="sample_ratio.mismatch",
            experiment_id=experiment.id,
            data={
                "experiment": about,
                "p_value": srm.p_value,
                "observed": dict(zip(ids, srm.observed.tolist(), strict=True)),
                "expected": dict(zip(ids, srm.expected.tolist(), strict=True)),
            },
        )


async def watch_all(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """One round over the watched experiments; returns how many were looked at."""
    async with background_transaction(sessionmaker) as session:
        ids = await watched(session)
    for experiment_id in ids:
        try:
            async with background_transaction(sessionmaker) as session:
                await watch_one(session, experiment_id)
        except AppError:  # deleted, archived or emptied meanwhile
            continue
        except Exception:
            log.exception("watching experiment %s failed", experiment_id)
    return len(ids)
