"""Every SQL statement of webhooks."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.dialect import insert_for
from mabapi.webhooks.models import Attempt, Delivery, Lease, Webhook


async def add(session: AsyncSession, webhook: Webhook) -> None:
    session.add(webhook)
    await session.flush()


async def list_for(session: AsyncSession, project_id: str | None) -> Sequence[Webhook]:
    statement = select(Webhook).order_by(Webhook.created_at, Webhook.id)
    if project_id is not None:
        statement = statement.where(Webhook.project_id == project_id)
    return list(await session.scalars(statement))


async def get(session: AsyncSession, webhook_id: str) -> Webhook | None:
    result: Webhook | None = await session.get(Webhook, webhook_id)
    return result


async def remove(session: AsyncSession, webhook_id: str) -> None:
    # Attempts first, then deliveries: SQLite enforces no foreign keys unless asked.
    deliveries = select(Delivery.id).where(Delivery.webhook_id == webhook_id)
    await session.execute(delete(Attempt).where(Attempt.delivery_id.in_(deliveries)))
    await session.execute(delete(Delivery).where(Delivery.webhook_id == webhook_id))
    await session.execute(delete(Webhook).where(Webhook.id == webhook_id))


async def deliveries(
    session: AsyncSession, webhook_id: str, limit: int
) -> list[tuple[Delivery, list[Attempt]]]:
    rows = list(
        await session.scalars(
            select(Delivery)
            .where(Delivery.webhook_id == webhook_id)
            .order_by(Delivery.created_at.desc(), Delivery.id)
            .limit(limit)
        )
    )
    attempts: dict[str, list[Attempt]] = {row.id: [] for row in rows}
    if rows:
        for attempt in await session.scalars(
            select(Attempt)
            .where(Attempt.delivery_id.in_(list(attempts)))
            .order_by(Attempt.attempted_at, Attempt.id)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [(row, attempts[row.id]) for row in rows]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken by one sender: what to send, where, and with which secret."""

    id: str
    webhook_id: str
    event: str
    experiment_id: str | None
    body: str
    attempts: int  # counting this one
    created_at: datetime
    url: str
    secret: str


async def count_webhooks(session: AsyncSession, project_id: str) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(Webhook).where(Webhook.project_id == project_id)
        )
        or 0
    )


async def count_pending(session: AsyncSession, webhook_id: str, event: str) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.webhook_id == webhook_id,
                Delivery.event == event,
                Delivery.status == "pending",
            )
        )
        or 0
    )


async def give_up_stale(session: AsyncSession, created_before: datetime, now: datetime) -> None:
    """Deliveries still pending past the give-up horizon fail, sent or not (one that
    could never be recorded included)."""
    await session.execute(
        update(Delivery)
        .where(
            Delivery.status == "pending",
            Delivery.next_attempt_at <= now,
            Delivery.created_at < created_before,
        )
        .values(status="failed")
    )


async def claim_due(
    session: AsyncSession,
    now: datetime,
    hold_until: datetime,
    limit: int,
    *,
    per_webhook: int,
    busy: Collection[str] = (),
) -> list[Claimed]:
    """Take up to `limit` due deliveries, at most `per_webhook` of any one webhook and
    none of the webhooks in `busy`, oldest due first. Atomic: one conditional
    UPDATE ... RETURNING moves each taken row to `hold_until` and counts the attempt, and
    a row another sender took meanwhile no longer matches its WHERE (PostgreSQL
    re-checks it once that sender commits), so no delivery is ever taken twice."""
    ranked = select(
        Delivery.id.label("id"),
        Delivery.next_attempt_at.label("due"),
        func.row_number()
        .over(
            partition_by=Delivery.webhook_id,
            order_by=(Delivery.next_attempt_at, Delivery.id),
        )
        .label("place"),
    ).where(Delivery.status == "pending", Delivery.next_attempt_at <= now)
    if busy:
        ranked = ranked.where(Delivery.webhook_id.not_in(list(busy)))
    inner = ranked.subquery()
    candidates = (
        select(inner.c.id)
        .where(inner.c.place <= per_webhook)
        .order_by(inner.c.due, inner.c.id)
        .limit(limit)
    )
    taken = (
        await session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(candidates),
                Delivery.status == "pending",
                Delivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=hold_until, attempts=Delivery.attempts + 1)
            .returning(
                Delivery.id,
                Delivery.webhook_id,
                Delivery.event,
                Delivery.experiment_id,
                Delivery.body,
                Delivery.attempts,
                Delivery.created_at,
            )
            .execution_options(synchronize_session=False)
        )
    ).all()
    if not taken:
        return []
    targets = {
        webhook_id: (url, secret)
        for webhook_id, url, secret in await session.execute(
            select(Webhook.id, Webhook.url, Webhook.secret).where(
                Webhook.id.in_({row.webhook_id for row in taken})
            )
        )
    }
    claimed = [
        Claimed(
            id=row.id,
            webhook_id=row.webhook_id,
            event=row.event,
            experiment_id=row.experiment_id,
            body=row.body,
            attempts=row.attempts,
            created_at=row.created_at,
            url=targets[row.webhook_id][0],
            secret=targets[row.webhook_id][1],
        )
        for row in taken
        if row.webhook_id in targets
    ]
    return sorted(claimed, key=lambda c: (c.webhook_id, c.id))


async def hold(session: AsyncSession, delivery_ids: Collection[str], until: datetime) -> None:
    """Push claimed deliveries to `until` (their backoff, should the outcome never be
    recorded)."""
    if delivery_ids:
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(delivery_ids)), Delivery.status == "pending")
            .values(next_attempt_at=until)
            .execution_options(synchronize_session=False)
        )


async def record_outcome(session: AsyncSession, delivery_id: str, changes: dict[str, Any]) -> bool:
    """Write a delivery's new state; False if it is gone (its webhook was deleted)."""
    updated = await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id)
        .values(**changes)
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return updated.first() is not None


async def record_attempt(session: AsyncSession, delivery_id: str, attempt: dict[str, Any]) -> None:
    await session.execute(insert_for(session, Attempt).values(delivery_id=delivery_id, **attempt))


async def take_lease(
    session: AsyncSession, name: str, holder: str, now: datetime, until: datetime
) -> bool:
    """Hold the lease `name` until `until` if it is free, expired or already ours."""
    inserted = await session.execute(
        insert_for(session, Lease)
        .values(name=name, holder=holder, expires_at=until, details={})
        .on_conflict_do_nothing()
        .returning(Lease.name)
    )
    if inserted.first() is not None:
        return True
    result = await session.execute(
        update(Lease)
        .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
        .values(holder=holder, expires_at=until)
    )
    return bool(getattr(result, "rowcount", 0))


async def release_lease(session: AsyncSession, name: str, holder: str) -> None:
    await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


async def subscriptions(session: AsyncSession, project_id: str) -> list[tuple[str, list[str]]]:
    """(webhook id, events it subscribes to) of every webhook of the project."""
    rows = await session.execute(
        select(Webhook.id, Webhook.events).where(Webhook.project_id == project_id)
    )
    return [(webhook_id, list(events or [])) for webhook_id, events in rows]


async def insert_deliveries(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    """Queue deliveries (the outbox's rows), in the caller's transaction."""
    await session.execute(insert_for(session, Delivery), values)
