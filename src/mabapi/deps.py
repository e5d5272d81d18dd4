"""FastAPI dependencies the routes share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.cache import AnswerCache
from mabapi.settings import Settings


# Dependencies are `async def` even when they do no I/O: FastAPI runs plain `def`
# dependencies in a thread pool, which costs more than the work they do.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit on success, roll back on any error.

    Used with scope="function", so the commit happens before the response is sent: a
    client never sees a 2xx for a write that failed to commit.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session, session.begin():
        yield session
    _committed(request)


def _committed(request: Request) -> None:
    """A write committed: this process's cached answers may now be out of date."""
    if request.method not in ("GET", "HEAD"):
        request.app.state.answers.note_write()


class LazySession:
    """A session opened on first use: a request that finds its answer in a per-process
    memo (a returning unit) never takes a pooled connection or a transaction."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None

    async def __call__(self) -> AsyncSession:
        if self._session is None:
            session = self._sessionmaker()
            await session.begin()
            self._session = session
        return self._session

    async def finish(self, *, commit: bool) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if commit:
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()


async def get_lazy_session(request: Request) -> AsyncIterator[LazySession]:
    """Same transaction rule as `get_session` (commit before the response, roll back on
    error), for a session that may never be opened."""
    lazy = LazySession(request.app.state.sessionmaker)
    try:
        yield lazy
    except BaseException:
        await lazy.finish(commit=False)
        raise
    await lazy.finish(commit=True)
    _committed(request)


async def get_answers(request: Request) -> AnswerCache[Any, Any]:
    answers: AnswerCache[Any, Any] = request.app.state.answers
    return answers


SettingsDep = Annotated[Settings, Depends(get_settings)]
AnswersDep = Annotated[AnswerCache[Any, Any], Depends(get_answers)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
LazySessionDep = Annotated[LazySession, Depends(get_lazy_session, scope="function")]
