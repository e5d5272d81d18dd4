"""Which project owns an experiment, cached per process: every request that names an
experiment in its path is checked against it (deps.authorize)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.errors import NotFoundError, no_such_experiment
from mabapi.experiments import repository

# Past this many cached owners the table starts over: ids come from requests.
MAX_OWNERS = 100_000


class Owners:
    """An experiment never changes project, so a found owner is kept; an id that exists
    nowhere is looked up every time (it may be created by then)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._owners: dict[str, str] = {}

    async def project_of(self, experiment_id: str) -> str | None:
        """The experiment's project, or None if there is no such experiment."""
        return (await self.owner(experiment_id))[0]

    async def owner(self, experiment_id: str) -> tuple[str | None, bool]:
        """`project_of`, and whether the database was asked (False: a cached owner)."""
        owner = self._owners.get(experiment_id)
        if owner is not None:
            return owner, False
        async with self._sessionmaker() as session:
            owner = await repository.project_of(session, experiment_id)
        if owner is not None:
            if len(self._owners) > MAX_OWNERS:
                self._owners.clear()
            self._owners[experiment_id] = owner
        return owner, True

    async def refuse_hidden(self, experiment_id: str, *, asked_database: bool) -> NotFoundError:
        """The 404 for an id the key may not see: another project's, or one that exists
        nowhere. Both get the same answer after the same work (one database lookup), so
        neither the body nor the time tells a key which ids other projects use."""
        if not asked_database:
            async with self._sessionmaker() as session:
                await repository.project_of(session, experiment_id)
        return no_such_experiment(experiment_id)
