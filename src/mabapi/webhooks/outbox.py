"""Emitting events: one outbox row per subscribed webhook, written in the caller's
transaction, so an event exists exactly when what caused it committed. The delivery loop
(`webhooks/delivery.py`) sends them. Flushes, never commits."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.base import utcnow
from mabapi.webhooks import repository

EVENTS = (
    "guardrail.breached",
    "recommendation.changed",
    "experiment.concluded",
    "sample_ratio.mismatch",
)
# Sent only by `POST /webhooks/{id}/test`, to the one webhook tested.
TEST_EVENT = "webhook.test"


def new_delivery_id() -> str:
    return uuid.uuid4().hex


def body_of(event: str, delivery_id: str, created_at: datetime, data: dict[str, Any]) -> str:
    """The JSON every delivery sends (and signs), before the dashboard link is added."""
    envelope = {
        "event": event,
        "delivery_id": delivery_id,
        "created_at": created_at.isoformat(),
        **data,
    }
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True, default=str)


async def emit(
    session: AsyncSession,
    *,
    project_id: str,
    event: str,
    experiment_id: str | None,
    data: dict[str, Any],
) -> int:
    """Queue `event` for every webhook of `project_id` that subscribes to it; returns how
    many deliveries were queued. `data` is the event's payload: the experiment, the
    numbers behind it."""
    rows = await repository.subscriptions(session, project_id)
    targets = [webhook_id for webhook_id, events in rows if event in (events or [])]
    if targets:
        await queue(session, targets, event=event, experiment_id=experiment_id, data=data)
    return len(targets)


async def queue(
    session: AsyncSession,
    webhook_ids: list[str],
    *,
    event: str,
    experiment_id: str | None,
    data: dict[str, Any],
) -> list[str]:
    now = utcnow()
    values: list[dict[str, Any]] = []
    for webhook_id in webhook_ids:
        delivery_id = new_delivery_id()
        values.append(
            {
                "id": delivery_id,
                "webhook_id": webhook_id,
                "event": event,
                "experiment_id": experiment_id,
                "body": body_of(event, delivery_id, now, data),
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
    await repository.insert_deliveries(session, values)
    return [value["id"] for value in values]
