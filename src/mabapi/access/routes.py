"""HTTP routes of keys and the audit log (admin scope, declared on each route)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from mabapi.access import service
from mabapi.access.models import ApiKey, Scope
from mabapi.access.schemas import (
    AuditEntryOut,
    AuditListOut,
    KeyCreatedOut,
    KeyIn,
    KeyListOut,
    KeyOut,
)
from mabapi.access.service import KeyRing
from mabapi.deps import PrincipalDep, SessionDep, needs
from mabapi.errors import Responses, documented_error
from mabapi.runtime import runtime_of

RESPONSES: Responses = {
    404: documented_error("No such key (or it belongs to another project)."),
    409: documented_error("A key cannot revoke itself."),
    422: documented_error("The request does not have the documented shape or values."),
}

router = APIRouter(tags=["access"], responses=RESPONSES)

KeyId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]


def _key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        scope=Scope(key.scope),
        project=key.project_id,
        name=key.name,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def _forget_keys(request: Request) -> None:
    keyring: KeyRing = runtime_of(request.app).keyring
    keyring.forget()


@router.post(
    "/keys", dependencies=[needs(Scope.ADMIN)], response_model=KeyCreatedOut, status_code=201
)
async def create_key(
    payload: KeyIn, session: SessionDep, principal: PrincipalDep, request: Request
) -> KeyCreatedOut:
    """Create a key; the secret is in this answer only (stored as a hash)."""
    project = payload.project or principal.home_project
    service.check_key_project(principal, project)
    key, token = await service.create_key(
        session, project_id=project, scope=payload.scope, name=payload.name
    )
    _forget_keys(request)
    return KeyCreatedOut(
        id=key.id, key=token, scope=payload.scope, project=key.project_id, name=key.name
    )


@router.get("/keys", dependencies=[needs(Scope.ADMIN)], response_model=KeyListOut)
async def list_keys(session: SessionDep, principal: PrincipalDep) -> KeyListOut:
    """The keys of this key's project (never their secrets)."""
    keys = await service.list_keys(session, principal=principal)
    return KeyListOut(keys=[_key_out(key) for key in keys])


@router.delete("/keys/{key_id}", dependencies=[needs(Scope.ADMIN)], response_model=KeyOut)
async def revoke_key(
    key_id: KeyId, session: SessionDep, principal: PrincipalDep, request: Request
) -> KeyOut:
    """Revoke a key: refused from now on (by other processes within the key cache time)."""
    key = await service.revoke_key(session, key_id=key_id, principal=principal)
    _forget_keys(request)
    return _key_out(key)


@router.get("/audit", dependencies=[needs(Scope.ADMIN)], response_model=AuditListOut)
async def audit(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> AuditListOut:
    """Writes and key changes, newest first, of this key's project."""
    entries = await service.audit_entries(
        session, principal=principal, limit=limit, before_id=before_id
    )
    return AuditListOut(
        entries=[
            AuditEntryOut(
                id=entry.id,
                at=entry.at,
                key_id=entry.key_id,
                project=entry.project_id,
                method=entry.method,
                route=entry.route,
                path=entry.path,
                status_code=entry.status_code,
                request_id=entry.request_id,
            )
            for entry in entries
        ],
        next_before_id=entries[-1].id if len(entries) == limit else None,
    )
