"""Request and response bodies of webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from mabapi.schemas import NO_CONTROL_PATTERN, StrictModel, reject_any_control_character

NoControl = Field(json_schema_extra={"pattern": NO_CONTROL_PATTERN})

EventName = Literal[
    "guardrail.breached", "recommendation.changed", "experiment.concluded", "sample_ratio.mismatch"
]


class WebhookIn(StrictModel):
    url: Annotated[
        str,
        Field(min_length=10, max_length=2048, pattern=r"^https?://[^\s/?#]+"),
        AfterValidator(reject_any_control_character),
    ] = Field(
        description="http(s) URL that receives a JSON POST per event. Loopback, private, "
        "link-local and every other special-purpose address are refused unless "
        "MABAPI_WEBHOOK_ALLOW_PRIVATE=true."
    )
    events: Annotated[list[EventName], Field(min_length=1, max_length=4)]
    secret: (
        Annotated[
            str,
            Field(min_length=16, max_length=128),
            NoControl,
            AfterValidator(reject_any_control_character),
        ]
        | None
    ) = Field(
        default=None,
        description="Standard Webhooks signing secret: whsec_ and the base64 of 24 to 64 "
        "random bytes (absent: one is generated). Shown only in this answer.",
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    project: str
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(
        description="Signs every delivery per Standard Webhooks (webhook-id, "
        "webhook-timestamp, webhook-signature): verify with a standardwebhooks library. "
        "Shown once; store it now."
    )


class WebhookListOut(BaseModel):
    webhooks: list[WebhookOut]


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: str = Field(description="The webhook-id header: receivers dedupe by it.")
    event: str
    experiment_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: list[AttemptOut]
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryListOut(BaseModel):
    deliveries: list[DeliveryOut]


class TestQueuedOut(BaseModel):
    delivery_id: str
