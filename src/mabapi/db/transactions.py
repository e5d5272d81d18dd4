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
    """A session in a transaction that only reads, rolled back at the end. On SQLite it
    takes no write lock (a plain deferred BEGIN: in WAL mode a snapshot that writers do
    not wait for), so a long read such as the watcher's summaries never holds them up;
    on PostgreSQL reads never do anyway."""
    async with sessionmaker() as session:
        # The option is set before the connection begins its transaction (engine.py).
        await session.connection(execution_options={READ_ONLY: True})
        try:
            yield session
        finally:
            # What was read stays readable after the block (detached, not expired).
            session.expunge_all()
            await session.rollback()
