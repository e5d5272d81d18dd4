"""The transaction of work done outside a request: cache refreshes, key bookkeeping,
start-up and CLI tasks. One of the three places that may begin and commit a transaction
(with the request session in deps.py and the group commit in db/group_commit.py);
tests/test_architecture.py fails on a fourth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.db.engine import READ_ONLY


@asynccontextmanager
async def background_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in its own transaction: committed when the block ends, rolled back if
    it raises."""
    async with sessionmaker() as session, session.begin():
        yield session


@asynccontextmanager
async def read_only_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in a transaction that only reads, from one snapshot of the database,
    rolled back at the end. On SQLite it takes no write lock (a plain deferred BEGIN: in
    WAL mode a snapshot that writers do not wait for), so a long read such as the
    watcher's summaries never holds them up; on PostgreSQL it is REPEATABLE READ and READ
    ONLY, so every statement of it sees the same committed data (READ COMMITTED, the
    default, gives each statement its own)."""
    async with sessionmaker() as session:
        # The options are set before the connection begins its transaction (engine.py).
        options: dict[str, object] = {READ_ONLY: True}
        if session.get_bind().dialect.name == "postgresql":
            options |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        await session.connection(execution_options=options)
        try:
            yield session
        finally:
            # What was read stays readable after the block (detached, not expired).
            session.expunge_all()
            await session.rollback()
