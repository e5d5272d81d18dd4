"""Webhooks: subscribe, list, remove, test; and the delivery of the outbox by whichever
process holds the delivery lease.

Every delivery is on its own: claimed atomically (never by two senders), sent with no
transaction open, and its outcome recorded in a transaction of its own, so one
receiver's failure, a deleted webhook or a text too long to store never touches another
delivery. Deliveries are signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import standardwebhooks
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.db.base import utcnow
from mabapi.db.transactions import background_transaction
from mabapi.errors import ConflictError, InvalidInputError, NotFoundError, RateLimitedError
from mabapi.webhooks import network, outbox, repository
from mabapi.webhooks.models import Attempt, Delivery, Webhook
from mabapi.webhooks.repository import Claimed

# Retries: 10 s, 20 s, 40 s ... at most an hour apart, for 24 hours from the event.
FIRST_RETRY_SECONDS = 10.0
MAX_RETRY_SECONDS = 3600.0
GIVE_UP_AFTER = timedelta(hours=24)
# A claimed delivery waits at least this long before it is due again, should its outcome
# never be recorded (its sender died, or the database refused the record): far longer
# than one send can take (network.TIMEOUT_SECONDS, redirects included).
CLAIM_SECONDS = 30.0
# Deliveries one claim takes (a round of `deliver_due`), in flight at once in a process,
# and in flight at once to one webhook: a slow receiver holds at most PER_WEBHOOK of the
# IN_FLIGHT slots, so it delays only its own deliveries.
BATCH = 20
IN_FLIGHT = 32
PER_WEBHOOK = 2
# `webhook.test` deliveries that may wait for one webhook at once (429 beyond).
QUEUED_TESTS = 5
LEASE_NAME = "webhook-delivery"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = (24, 64)
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
log = logging.getLogger("mabapi.webhooks")


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """`secret` if it is a Standard Webhooks secret (whsec_ + base64 of 24 to 64 bytes)."""
    low, high = SECRET_BYTES
    encoded = secret.removeprefix(SECRET_PREFIX)
    problem = (
        f"a webhook secret is {SECRET_PREFIX} followed by the base64 of {low} to {high} "
        "random bytes (the Standard Webhooks form; leave it out to have one generated)"
    )
    if not secret.startswith(SECRET_PREFIX) or not _BASE64.fullmatch(encoded):
        raise InvalidInputError(problem)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(problem) from None
    if not low <= len(key) <= high:
        raise InvalidInputError(problem)
    return secret


def signing_key(secret: str) -> bytes:
    """The HMAC key: the decoded bytes of a whsec_ secret; a secret of another form
    (webhooks created before Standard Webhooks) is used as its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign(secret: str, body: bytes) -> str:
    """The deprecated X-Mabapi-Signature header: sha256=<hex HMAC-SHA256 of the body with
    the secret's UTF-8 bytes>. Sent for one more release beside the standard headers."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_headers(secret: str, delivery_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: webhook-id (the delivery id, the same on every
    retry), webhook-timestamp (this attempt, Unix seconds) and webhook-signature
    (v1,<base64 HMAC-SHA256 of "id.timestamp.body">)."""
    signer = standardwebhooks.Webhook(signing_key(secret))
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signer.sign(delivery_id, at, body.decode()),
    }


async def create(
    session: AsyncSession,
    *,
    project_id: str,
    url: str,
    events: Sequence[str],
    secret: str | None,
    allow_private: bool,
    max_per_project: int,
) -> Webhook:
    if await repository.count_webhooks(session, project_id) >= max_per_project:
        raise ConflictError(
            f"project {project_id!r} has {max_per_project} webhooks, the most allowed "
            "(MABAPI_WEBHOOK_MAX_PER_PROJECT); delete one first, or subscribe one webhook "
            "to several events"
        )
    try:
        await network.resolve(url, allow_private=allow_private)
    except network.UnsafeURLError as error:
        raise InvalidInputError(str(error)) from None
    webhook = Webhook(
        id="wh_" + uuid.uuid4().hex,
        project_id=project_id,
        url=url,
        events=sorted(set(events)),
        secret=new_secret() if secret is None else check_secret(secret),
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
    if await repository.count_pending(session, webhook.id, outbox.TEST_EVENT) >= QUEUED_TESTS:
        raise RateLimitedError(
            f"{QUEUED_TESTS} test deliveries to this webhook are still pending, the most "
            "allowed; see them in GET /webhooks/{id}/deliveries and try again once sent",
            retry_after=int(FIRST_RETRY_SECONDS),
        )
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


def _next_state(claimed: Claimed, outcome: network.Outcome, at: datetime) -> dict[str, object]:
    """The delivery's new state after this attempt: delivered, due again after its
    backoff, or failed once the next try would fall past GIVE_UP_AFTER."""
    if outcome.ok:
        return {"status": "delivered", "delivered_at": at}
    retry_at = at + timedelta(seconds=retry_delay(claimed.attempts))
    if retry_at - claimed.created_at > GIVE_UP_AFTER:
        return {"status": "failed", "next_attempt_at": at}
    return {"status": "pending", "next_attempt_at": retry_at}


async def claim(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    limit: int,
    busy: Collection[str] = (),
) -> list[Claimed]:
    """Take due deliveries (see repository.claim_due). Each is held until its backoff
    (at least CLAIM_SECONDS), so one whose outcome is never recorded still backs off;
    deliveries pending past GIVE_UP_AFTER fail here, so it also gives up."""
    if limit <= 0:
        return []
    async with background_transaction(sessionmaker) as session:
        await repository.give_up_stale(session, now - GIVE_UP_AFTER, now)
        claimed = await repository.claim_due(
            session,
            now,
            now + timedelta(seconds=CLAIM_SECONDS),
            limit,
            per_webhook=PER_WEBHOOK,
            busy=busy,
        )
        by_delay: dict[float, list[str]] = {}
        for item in claimed:
            delay = retry_delay(item.attempts)
            if delay > CLAIM_SECONDS:
                by_delay.setdefault(delay, []).append(item.id)
        for delay, ids in by_delay.items():
            await repository.hold(session, ids, now + timedelta(seconds=delay))
    return claimed


async def send(
    http: httpx.AsyncClient, config: DeliveryConfig, claimed: Claimed
) -> network.Outcome:
    body = _final_body(claimed.body, config.public_url, claimed.experiment_id)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "mabapi-webhooks",
        **standard_headers(claimed.secret, claimed.id, utcnow(), body),
        # Deprecated (one more release): the old headers, for receivers not yet moved.
        "X-Mabapi-Event": claimed.event,
        "X-Mabapi-Delivery": claimed.id,
        "X-Mabapi-Signature": sign(claimed.secret, body),
    }
    return await network.post(
        http, claimed.url, body=body, headers=headers, allow_private=config.allow_private
    )


async def record(
    sessionmaker: async_sessionmaker[AsyncSession],
    claimed: Claimed,
    outcome: network.Outcome,
    at: datetime,
) -> None:
    """Record one attempt in a transaction of its own. A delivery deleted meanwhile (its
    webhook was) is skipped. If the attempt cannot be stored, the delivery's state is
    written without it; if even that fails, the claim's hold stands (it backs off)."""
    changes = _next_state(claimed, outcome, at)
    attempt = {
        "attempted_at": at,
        "status_code": outcome.status_code,
        "error": None if outcome.error is None else network.bounded(outcome.error),
        "duration_ms": outcome.duration_ms,
    }
    try:
        async with background_transaction(sessionmaker) as session:
            if await repository.record_outcome(session, claimed.id, changes):
                await repository.record_attempt(session, claimed.id, attempt)
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("recording the attempt of delivery %s failed", claimed.id)
    try:
        async with background_transaction(sessionmaker) as session:
            await repository.record_outcome(session, claimed.id, changes)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("recording the state of delivery %s failed", claimed.id)


async def deliver(
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    config: DeliveryConfig,
    claimed: Claimed,
) -> network.Outcome:
    """Send one claimed delivery and record its outcome; never raises (but for
    cancellation): whatever goes wrong stays with this delivery."""
    try:
        outcome = await send(http, config, claimed)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.exception("sending delivery %s failed", claimed.id)
        outcome = network.Outcome(None, network.bounded(f"{type(error).__name__}"), 0)
    # What was sent is recorded even if the sender is told to stop meanwhile (shutdown):
    # a record takes milliseconds, and a cancelled one would leave the delivery to be
    # sent again.
    recording = asyncio.ensure_future(record(sessionmaker, claimed, outcome, utcnow()))
    try:
        await asyncio.shield(recording)
    except asyncio.CancelledError:
        await recording
        raise
    return outcome


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    config: DeliveryConfig,
    *,
    now: datetime | None = None,
) -> int:
    """Claim one batch of due deliveries, send them at once, record each on its own;
    returns how many were tried. Every event is sent at least once (a sender that dies
    mid-send leaves its claim due again later); receivers dedupe by webhook-id."""
    claimed = await claim(sessionmaker, now=now or utcnow(), limit=BATCH)
    await asyncio.gather(*(deliver(sessionmaker, http, config, item) for item in claimed))
    return len(claimed)


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
