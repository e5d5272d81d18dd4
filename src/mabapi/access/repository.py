"""SQL of access control: projects, keys, audit entries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.access.models import ApiKey, AuditEntry, Project
from mabapi.db.dialect import insert_for


async def ensure_project(session: AsyncSession, project_id: str, now: datetime) -> None:
    statement = insert_for(session, Project).values(id=project_id, created_at=now)
    await session.execute(statement.on_conflict_do_nothing(index_elements=["id"]))


async def insert_key_if_missing(session: AsyncSession, values: dict[str, object]) -> None:
    """Insert a key unless its id exists: two processes starting at once both try."""
    statement = insert_for(session, ApiKey).values(**values)
    await session.execute(statement.on_conflict_do_nothing(index_elements=["id"]))


async def get_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def count_live_keys(session: AsyncSession) -> int:
    statement = select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
    return int(await session.scalar(statement) or 0)


async def list_keys(session: AsyncSession, project_id: str | None) -> Sequence[ApiKey]:
    statement = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if project_id is not None:
        statement = statement.where(ApiKey.project_id == project_id)
    return (await session.scalars(statement)).all()


async def touch_key(session: AsyncSession, key_id: str, now: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


async def add_audits(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Audit entries in one statement (a group commit writes one per request)."""
    if rows:
        await session.execute(insert(AuditEntry), list(rows))


async def list_audit(
    session: AsyncSession, *, project_id: str | None, limit: int, before_id: int | None
) -> Sequence[AuditEntry]:
    statement = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if project_id is not None:
        statement = statement.where(AuditEntry.project_id == project_id)
    if before_id is not None:
        statement = statement.where(AuditEntry.id < before_id)
    return (await session.scalars(statement)).all()


async def add_key(session: AsyncSession, key: ApiKey) -> None:
    """Store a new key (flushed, so a clash on its id fails here)."""
    session.add(key)
    await session.flush()
