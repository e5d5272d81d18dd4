"""Every SQL statement of webhooks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
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


async def claim_due(
    session: AsyncSession, now: datetime, hold_until: datetime, limit: int
) -> list[tuple[Delivery, str, str]]:
    """Due deliveries with their webhook's URL and secret, each pushed to `hold_until`
    so no other sender takes it meanwhile (a sender that dies leaves it due again then)."""
    rows = (
        await session.execute(
            select(Delivery, Webhook.url, Webhook.secret)
            .join(Webhook, Webhook.id == Delivery.webhook_id)
            .where(Delivery.status == "pending", Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        )
    ).all()
    if rows:
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_([row[0].id for row in rows]))
            .values(next_attempt_at=hold_until)
        )
    return [(row[0], row[1], row[2]) for row in rows]


async def record_attempt(
    session: AsyncSession, delivery_id: str, attempt: dict[str, Any], changes: dict[str, Any]
) -> None:
    await session.execute(insert_for(session, Attempt).values(delivery_id=delivery_id, **attempt))
    await session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**changes))


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
