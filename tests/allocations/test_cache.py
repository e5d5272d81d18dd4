"""The per-process answer cache behind GET /allocations."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mabapi.allocations.cache import AnswerCache
from mabapi.runtime import runtime_of
from tests.fixtures.factories import create_experiment, post_metric


class TestAnswerCache:
    async def test_reuses_an_answer_until_a_write(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=60)
        calls = 0

        async def compute() -> int:
            nonlocal calls
            calls += 1
            return calls

        assert await cache.get("k", compute) == 1
        assert await cache.get("k", compute) == 1
        cache.note_write()
        assert await cache.get("k", compute) == 2

    async def test_peek_sees_expired_entries_but_not_older_epochs(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=0.01)

        async def one() -> int:
            return 1

        assert cache.peek("k") is None
        await cache.get("k", one)
        await asyncio.sleep(0.02)
        assert cache.peek("k") == 1  # expired, still there (served while refreshed)
        cache.note_write()
        assert cache.peek("k") is None
        await cache.get("k", one)
        cache.invalidate("k")
        assert cache.peek("k") is None

    async def test_expires_after_ttl(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=0.05)
        values = iter([1, 2])

        async def compute() -> int:
            return next(values)

        assert await cache.get("k", compute) == 1
        await asyncio.sleep(0.06)
        # Expired: served once more while one background task recomputes it...
        assert await cache.get("k", compute) == 1
        assert await cache.get("k", compute) == 1
        await asyncio.sleep(0.01)
        # ...and the new answer once it has landed.
        assert await cache.get("k", compute) == 2

    async def test_close_waits_for_a_refresh_in_flight_to_unwind(self) -> None:
        """At shutdown a refresh mid-computation is cancelled and awaited, so whatever it
        holds (a database connection) is released before the engine is disposed."""
        cache: AnswerCache[str, int] = AnswerCache(ttl=0.01)
        started = asyncio.Event()
        released: list[bool] = []
        calls = 0

        async def compute() -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                return 1
            started.set()
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0.05)  # cleanup that takes a while, as a close does
                released.append(True)
            return 2

        assert await cache.get("k", compute) == 1
        await asyncio.sleep(0.02)
        assert await cache.get("k", compute) == 1  # stale: starts the refresh
        await asyncio.wait_for(started.wait(), 1)
        await asyncio.wait_for(cache.close(), 1)
        assert released == [True]

    async def test_failed_background_refresh_is_recomputed_by_the_next_request(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=0.01)
        outcomes: list[int | Exception] = [1, RuntimeError("database down"), 3]

        async def compute() -> int:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        assert await cache.get("k", compute) == 1
        await asyncio.sleep(0.02)
        assert await cache.get("k", compute) == 1  # stale; the refresh fails
        await asyncio.sleep(0.01)
        assert await cache.get("k", compute) == 3  # computed on the request path

    async def test_concurrent_misses_compute_once(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=60)
        calls = 0

        async def compute() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            return 7

        assert await asyncio.gather(*(cache.get("k", compute) for _ in range(20))) == [7] * 20
        assert calls == 1

    async def test_answer_computed_across_a_write_is_not_kept(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=60)
        values = iter([1, 2])

        async def compute_during_write() -> int:
            cache.note_write()  # a write commits while this answer is being computed
            return next(values)

        assert await cache.get("k", compute_during_write) == 1
        assert await cache.get("k", compute_during_write) == 2

    async def test_invalidating_one_key_keeps_the_others(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=60)
        values = iter(range(100))

        async def compute() -> int:
            return next(values)

        assert [await cache.get("a", compute), await cache.get("b", compute)] == [0, 1]
        cache.invalidate("a")
        assert await cache.get("a", compute) == 2  # recomputed
        assert await cache.get("b", compute) == 1  # still cached

    async def test_answer_computed_across_an_invalidation_is_not_kept(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=60)
        values = iter([1, 2])

        async def compute_while_paused() -> int:
            cache.invalidate("k")  # the experiment changes while this is being computed
            return next(values)

        assert await cache.get("k", compute_while_paused) == 1
        assert await cache.get("k", compute_while_paused) == 2
        await cache.close()

    async def test_zero_ttl_never_caches(self) -> None:
        cache: AnswerCache[str, int] = AnswerCache(ttl=0)
        values = iter([1, 2])

        async def compute() -> int:
            return next(values)

        assert [await cache.get("k", compute), await cache.get("k", compute)] == [1, 2]


class TestAllocationsAnswers:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, float]:
        return {"allocation_cache_seconds": 60.0}

    async def test_write_through_this_process_shows_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client, experiment_id="exp")
        url = "/allocations/exp?for_date=2026-01-02"
        before = (await client.get(url)).json()
        await post_metric(
            client, experiment_id="exp", variant_id="b", impressions=100, successes=60
        )
        after = (await client.get(url)).json()
        assert before["inputs"]["b"]["impressions"] == 0
        assert after["inputs"]["b"]["impressions"] == 100

    async def test_another_process_write_shows_once_the_answer_expires(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client, experiment_id="exp")
        url = "/allocations/exp?for_date=2026-01-02"
        await post_metric(
            client, experiment_id="exp", variant_id="b", impressions=100, successes=60
        )
        first = (await client.get(url)).json()
        assert first["inputs"]["b"]["impressions"] == 100
        # Another worker's write: straight to the database, not through this process.
        async with runtime_of(app).engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE variant_totals SET impressions = impressions + 100 "
                    "WHERE experiment_id = 'exp' AND variant_id = 'b' AND impressions > 0"
                )
            )
        assert (await client.get(url)).json() == first  # served from this process's cache
        runtime_of(app).answers.note_write()  # stands in for the TTL running out
        assert (await client.get(url)).json()["inputs"]["b"]["impressions"] == 200
