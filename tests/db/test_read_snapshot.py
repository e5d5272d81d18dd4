"""Routes that only read (the summary, the segments listing, the dashboard's experiment
page and its CSVs) answer from one snapshot and take no write lock: on PostgreSQL a
REPEATABLE READ, READ ONLY transaction; on SQLite a deferred BEGIN in WAL mode."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.transactions import background_transaction, read_only_transaction
from mabapi.experiments.models import Experiment
from mabapi.runtime import runtime_of


async def experiments(session: AsyncSession) -> int:
    count = await session.scalar(select(func.count()).select_from(Experiment))
    return int(count or 0)


class TestReadSnapshot:
    async def test_every_statement_sees_the_same_committed_data(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        created = await client.post("/experiments", json={"id": "first"})
        assert created.status_code == 201, created.text
        sessionmaker = runtime_of(app).sessionmaker
        async with read_only_transaction(sessionmaker) as reading:
            assert await experiments(reading) == 1
            # A write another transaction commits meanwhile (a writer never waits for it).
            also = await client.post("/experiments", json={"id": "second"})
            assert also.status_code == 201, also.text
            assert await experiments(reading) == 1  # READ COMMITTED would say 2
            if reading.get_bind().dialect.name == "postgresql":
                level = await reading.scalar(text("SHOW transaction_isolation"))
                assert level == "repeatable read"
                assert await reading.scalar(text("SHOW transaction_read_only")) == "on"
        async with read_only_transaction(sessionmaker) as reading:
            assert await experiments(reading) == 2

    async def test_a_summary_does_not_wait_for_a_writer(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        """A transaction holding the write lock (SQLite's is the database's) does not hold
        up the summary: it used to BEGIN IMMEDIATE and wait out the busy timeout."""
        created = await client.post("/experiments", json={"id": "e"})
        assert created.status_code == 201, created.text
        async with background_transaction(runtime_of(app).sessionmaker) as writer:
            await writer.execute(
                insert(Experiment).values(id="held", name="held", project_id="default")
            )
            summary = await asyncio.wait_for(client.get("/experiments/e/summary"), timeout=2.0)
            assert summary.status_code == 200, summary.text
            listing = await asyncio.wait_for(client.get("/experiments/e/segments"), timeout=2.0)
            assert listing.status_code == 200, listing.text

    async def test_the_next_transaction_on_a_pooled_connection_is_a_plain_one(
        self, app: FastAPI
    ) -> None:
        """The snapshot's options end with it: connections back in the pool write, in
        the default isolation, again."""
        sessionmaker = runtime_of(app).sessionmaker
        for _ in range(5):
            async with read_only_transaction(sessionmaker) as reading:
                await experiments(reading)
        for i in range(5):
            async with background_transaction(sessionmaker) as writing:
                if writing.get_bind().dialect.name == "postgresql":
                    level = await writing.scalar(text("SHOW transaction_isolation"))
                    assert level == "read committed"
                    assert await writing.scalar(text("SHOW transaction_read_only")) == "off"
                await writing.execute(
                    insert(Experiment).values(id=f"w{i}", name="w", project_id="default")
                )
        async with read_only_transaction(sessionmaker) as reading:
            assert await experiments(reading) == 5
