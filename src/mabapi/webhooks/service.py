"""Webhooks: subscribe, list, remove, test; and the delivery of the outbox, one batch
at a time, by whichever process holds the delivery lease."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.db.base import utcnow
from mabapi.db.transactions import background_transaction
from mabapi.errors import InvalidInputError, NotFoundError
from mabapi.webhooks import network, outbox, repository
from mabapi.webhooks.models import Attempt, Delivery, Webhook

# Retries: 10 s, 20 s, 40 s ... at most an hour apart, for 24 hours from the event.
FIRST_RETRY_SECONDS = 10.0
MAX_RETRY_SECONDS = 3600.0
GIVE_UP_AFTER = timedelta(hours=24)
# A claimed delivery is another sender's again after this (its sender died mid-send).
CLAIM_SECONDS = 30.0
BATCH = 20
LEASE_NAME = "webhook-delivery"


def sign(secret: str, body: bytes) -> str:
    """The X-Mabapi-Signature header: sha256=<hex HMAC-SHA256 of the body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def create(
    session: AsyncSession,
    *,
    project_id: str,
    url: str,
    events: Sequence[str],
    secret: str | None,
    allow_private: bool,
) -> Webhook:
    try:
        await network.resolve(url, allow_private=allow_private)
    except network.UnsafeURLError as error:
        raise InvalidInputError(str(error)) from None
    webhook = Webhook(
        id="wh_" + uuid.uuid4().hex,
        project_id=project_id,
        url=url,
        events=sorted(set(events)),
        secret=secret or secrets.token_urlsafe(32),
        created_at=utcnow(),
    )
    await repository.add(session, webhook)
    return webhook


async def require(session: AsyncSession, webhook_id: str, project_id: str | None) -> Webhook:
    webhook = await repository.get(session, webhook_id)
    if webhook is None or (project_id is not None and webhook.project_id != project_id):
        raise NotFoundError(f"no webhook {webhook_id!r}")
    return webhook


async def list_webhooks(session: AsyncSession, project_id: str | None) -> Sequence[Webhook]:
    return await repository.list_for(session, project_id)


async def delete(session: AsyncSession, webhook_id: str, project_id: str | None) -> None:
    await require(session, webhook_id, project_id)
    await repository.remove(session, webhook_id)


async def deliveries(
    session: AsyncSession, webhook_id: str, project_id: str | None, limit: int
) -> list[tuple[Delivery, list[Attempt]]]:
    await require(session, webhook_id, project_id)
    return await repository.deliveries(session, webhook_id, limit)


async def test(session: AsyncSession, webhook_id: str, project_id: str | None) -> str:
    """Queue a `webhook.test` delivery to this webhook alone; returns its delivery id."""
    webhook = await require(session, webhook_id, project_id)
    ids = await outbox.queue(
        session,
        [webhook.id],
        event=outbox.TEST_EVENT,
        experiment_id=None,
        data={"webhook_id": webhook.id, "message": "a test delivery from mabapi"},
    )
    return ids[0]


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones (exponential backoff)."""
    return float(min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


def _final_body(body: str, public_url: str, experiment_id: str | None) -> bytes:
    """The stored body with the dashboard link: what is signed and sent."""
    payload = json.loads(body)
    base = public_url.rstrip("/")
    payload["link"] = f"{base}/ui/experiments/{experiment_id}" if experiment_id else f"{base}/ui"
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    public_url: str
    allow_private: bool


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    config: DeliveryConfig,
    *,
    now: datetime | None = None,
) -> int:
    """Send the deliveries that are due (one batch); returns how many were tried.

    Claimed in one transaction, sent with none open, recorded in another: a process that
    dies in between leaves them due again after CLAIM_SECONDS, so every event is sent at
    least once; receivers dedupe by X-Mabapi-Delivery."""
    now = now or utcnow()
    async with background_transaction(sessionmaker) as session:
        due = await repository.claim_due(
            session, now, now + timedelta(seconds=CLAIM_SECONDS), BATCH
        )
    if not due:
        return 0

    async def send(delivery: Delivery, url: str, secret: str) -> network.Outcome:
        body = _final_body(delivery.body, config.public_url, delivery.experiment_id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mabapi-webhooks",
            "X-Mabapi-Event": delivery.event,
            "X-Mabapi-Delivery": delivery.id,
            "X-Mabapi-Signature": sign(secret, body),
        }
        return await network.post(
            http, url, body=body, headers=headers, allow_private=config.allow_private
        )

    outcomes = await asyncio.gather(*(send(d, url, secret) for d, url, secret in due))
    finished = utcnow()
    async with background_transaction(sessionmaker) as session:
        for (delivery, _, _), outcome in zip(due, outcomes, strict=True):
            attempts = delivery.attempts + 1
            changes: dict[str, object] = {"attempts": attempts}
            if outcome.ok:
                changes.update(status="delivered", delivered_at=finished)
            else:
                retry_at = finished + timedelta(seconds=retry_delay(attempts))
                if retry_at - delivery.created_at > GIVE_UP_AFTER:
                    changes.update(status="failed", next_attempt_at=finished)
                else:
                    changes.update(next_attempt_at=retry_at)
            await repository.record_attempt(
                session,
                delivery.id,
                {
                    "attempted_at": finished,
                    "status_code": outcome.status_code,
                    "error": outcome.error,
                    "duration_ms": outcome.duration_ms,
                },
                changes,
            )
    return len(due)


async def take_lease(
    sessionmaker: async_sessionmaker[AsyncSession], holder: str, seconds: float
) -> bool:
    now = utcnow()
    async with background_transaction(sessionmaker) as session:
        return await repository.take_lease(
            session, LEASE_NAME, holder, now, now + timedelta(seconds=seconds)
        )


async def release_lease(sessionmaker: async_sessionmaker[AsyncSession], holder: str) -> None:
    async with background_transaction(sessionmaker) as session:
        await repository.release_lease(session, LEASE_NAME, holder)
