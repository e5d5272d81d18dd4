"""Dialect-specific statements both repositories need."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(session: AsyncSession, table: Any) -> Any:
    """INSERT with ON CONFLICT support for whichever database the session is bound to
    (SQLite and PostgreSQL spell `on_conflict_do_nothing/do_update` the same way)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
