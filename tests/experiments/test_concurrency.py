"""Concurrent writers: nothing acknowledged is lost, nothing is counted twice."""

from __future__ import annotations

import asyncio

import httpx

from tests.fixtures.factories import metric


class TestConcurrentMetrics:
    async def test_fifty_concurrent_posts_lose_nothing(self, client: httpx.AsyncClient) -> None:
        # One new experiment, five new variants, ten days: every request races to
        # auto-create the same experiment and variants.
        rows = [
            metric(
                experiment_id="race",
                variant_id=f"v{index % 5}",
                date=f"2023-07-{1 + index // 5:02d}",
                impressions=100 + index,
                successes=index,
            )
            for index in range(50)
        ]
        responses = await asyncio.gather(*(client.post("/metrics/", json=row) for row in rows))
        assert [response.status_code for response in responses] == [200] * 50
        stored = (await client.get("/experiments/race/metrics")).json()["metrics"]
        assert len(stored) == 50
        assert sum(row["impressions"] for row in stored) == sum(r["impressions"] for r in rows)
        variants = (await client.get("/experiments/race")).json()["variants"]
        assert sorted(v["id"] for v in variants) == [f"v{i}" for i in range(5)]

    async def test_concurrent_repeats_of_one_row_leave_one_row(
        self, client: httpx.AsyncClient
    ) -> None:
        responses = await asyncio.gather(
            *(client.post("/metrics/", json=metric(experiment_id="same")) for _ in range(50))
        )
        assert {response.status_code for response in responses} == {200}
        stored = (await client.get("/experiments/same/metrics")).json()["metrics"]
        assert [(r["impressions"], r["successes"]) for r in stored] == [(1000, 120)]
        # The running totals moved by new - old each time: still exactly one day's worth.
        inputs = (await client.get("/allocations/same?for_date=2024-01-01")).json()["inputs"]
        assert inputs["control"] == {"impressions": 1000, "successes": 120}

    async def test_concurrent_reposts_with_different_values_keep_totals_exact(
        self, client: httpx.AsyncClient
    ) -> None:
        bodies = [
            metric(experiment_id="moving", impressions=100 + i, successes=i) for i in range(40)
        ]
        responses = await asyncio.gather(*(client.post("/metrics/", json=b) for b in bodies))
        assert {response.status_code for response in responses} == {200}
        stored = (await client.get("/experiments/moving/metrics")).json()["metrics"]
        assert len(stored) == 1
        inputs = (await client.get("/allocations/moving?for_date=2024-01-01")).json()["inputs"]
        assert inputs["control"] == {
            "impressions": stored[0]["impressions"],
            "successes": stored[0]["successes"],
        }

    async def test_concurrent_batches_and_allocations(self, client: httpx.AsyncClient) -> None:
        batches = [
            {
                "metrics": [
                    metric(experiment_id="mixed", variant_id=f"b{batch}", date=f"2023-01-{d:02d}")
                    for d in range(1, 21)
                ]
            }
            for batch in range(10)
        ]
        calls = [client.post("/metrics/batch", json=batch) for batch in batches]
        reads = [client.get("/allocations/mixed?for_date=2023-02-01") for _ in range(10)]
        responses = await asyncio.gather(*calls, *reads)
        assert all(r.status_code == 200 for r in responses[:10])
        # A read may land before the experiment exists (404); never a 5xx.
        assert all(r.status_code in (200, 404) for r in responses[10:])
        stored = (await client.get("/experiments/mixed/metrics")).json()["metrics"]
        assert len(stored) == 200
