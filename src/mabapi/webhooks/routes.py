"""HTTP routes of webhooks (admin scope, declared on each route)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from mabapi.access.models import Scope
from mabapi.deps import PrincipalDep, SessionDep, SettingsDep, needs
from mabapi.errors import Responses, documented_error
from mabapi.webhooks import service
from mabapi.webhooks.models import Webhook
from mabapi.webhooks.schemas import (
    AttemptOut,
    DeliveryListOut,
    DeliveryOut,
    TestQueuedOut,
    WebhookCreatedOut,
    WebhookIn,
    WebhookListOut,
    WebhookOut,
)

RESPONSES: Responses = {
    404: documented_error("No such webhook (or it belongs to another project)."),
    409: documented_error("The project has MABAPI_WEBHOOK_MAX_PER_PROJECT webhooks already."),
    429: documented_error("Five test deliveries to this webhook are still pending."),
    422: documented_error("The request does not have the documented shape or values."),
}

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=RESPONSES)

WebhookId = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")]


def _out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        url=webhook.url,
        events=list(webhook.events),
        project=webhook.project_id,
        created_at=webhook.created_at,
    )


@router.post(
    "", dependencies=[needs(Scope.ADMIN)], status_code=201, response_model=WebhookCreatedOut
)
async def create_webhook(
    body: WebhookIn, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> WebhookCreatedOut:
    """Subscribe a URL to events of this key's project. The signing secret is in this
    answer only."""
    webhook = await service.create(
        session,
        project_id=principal.home_project,
        url=body.url,
        events=body.events,
        secret=body.secret,
        allow_private=settings.webhook_allow_private,
        max_per_project=settings.webhook_max_per_project,
    )
    return WebhookCreatedOut(**_out(webhook).model_dump(), secret=webhook.secret)


@router.get("", dependencies=[needs(Scope.ADMIN)], response_model=WebhookListOut)
async def list_webhooks(session: SessionDep, principal: PrincipalDep) -> WebhookListOut:
    webhooks = await service.list_webhooks(session, principal.project_id)
    return WebhookListOut(webhooks=[_out(w) for w in webhooks])


@router.delete("/{webhook_id}", dependencies=[needs(Scope.ADMIN)], response_model=WebhookOut)
async def delete_webhook(
    webhook_id: WebhookId, session: SessionDep, principal: PrincipalDep
) -> WebhookOut:
    """Unsubscribe (the answer is what was removed); deliveries not yet sent go with it."""
    webhook = _out(await service.require(session, webhook_id, principal.project_id))
    await service.delete(session, webhook_id, principal.project_id)
    return webhook


@router.get(
    "/{webhook_id}/deliveries", dependencies=[needs(Scope.ADMIN)], response_model=DeliveryListOut
)
async def list_deliveries(
    webhook_id: WebhookId,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveryListOut:
    """The latest deliveries, newest first, each with every attempt."""
    rows = await service.deliveries(session, webhook_id, principal.project_id, limit)
    return DeliveryListOut(
        deliveries=[
            DeliveryOut(
                id=delivery.id,
                event=delivery.event,
                experiment_id=delivery.experiment_id,
                status=delivery.status,
                attempts=[
                    AttemptOut(
                        attempted_at=a.attempted_at,
                        status_code=a.status_code,
                        error=a.error,
                        duration_ms=a.duration_ms,
                    )
                    for a in attempts
                ],
                created_at=delivery.created_at,
                next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
                delivered_at=delivery.delivered_at,
            )
            for delivery, attempts in rows
        ]
    )


@router.post(
    "/{webhook_id}/test",
    dependencies=[needs(Scope.ADMIN)],
    status_code=202,
    response_model=TestQueuedOut,
)
async def test_webhook(
    webhook_id: WebhookId, session: SessionDep, principal: PrincipalDep
) -> TestQueuedOut:
    """Queue a `webhook.test` delivery to this webhook; see its fate in .../deliveries."""
    return TestQueuedOut(delivery_id=await service.test(session, webhook_id, principal.project_id))
