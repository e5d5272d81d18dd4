"""Request and response bodies of keys and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from mabapi.access.models import Scope
from mabapi.schemas import Identifier, Printable, StrictModel, reject_control_characters

KeyName = Annotated[
    str, Field(max_length=200), Printable, AfterValidator(reject_control_characters)
]


class KeyIn(StrictModel):
    scope: Scope = Field(description="client, read, write or admin.")
    project: Identifier | None = Field(
        default=None,
        description="The key's project; by default the project of the key that creates it "
        "(`default` on an open instance).",
    )
    name: KeyName = Field(default="", description="What the key is for.")


class KeyCreatedOut(BaseModel):
    id: str
    key: str = Field(description="The secret: shown only in this answer. Store it now.")
    scope: Scope
    project: str
    name: str


class KeyOut(BaseModel):
    id: str
    scope: Scope
    project: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyListOut(BaseModel):
    keys: list[KeyOut]


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    key_id: str | None
    project: str | None
    method: str
    route: str
    path: str
    status_code: int
    request_id: str


class AuditListOut(BaseModel):
    entries: list[AuditEntryOut]
    next_before_id: int | None = Field(
        description="Pass as before_id for the next (older) page; null on the last page."
    )
