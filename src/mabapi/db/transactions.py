"""The transaction of work done outside a request: cache refreshes, key bookkeeping,
start-up and CLI tasks. One of the three places that may begin and commit a transaction
(with the request session in deps.py and the group commit in db/group_commit.py);
tests/test_architecture.py fails on a fourth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@asynccontextmanager
async def background_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in its own transaction: committed when the block ends, rolled back if
    it raises."""
    async with sessionmaker() as session, session.begin():
        yield session
