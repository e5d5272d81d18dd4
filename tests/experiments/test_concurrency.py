"""Concurrent writers: nothing acknowledged is lost, nothing is counted twice."""

from __future__ import annotations

import asyncio

import httpx
import pytest

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


class TestConcurrentValueConversions:
    @pytest.mark.slow
    async def test_single_and_batch_value_conversions_for_the_same_units_never_deadlock(
        self, client: httpx.AsyncClient
    ) -> None:
        """Eight clients mixing single conversions and 5-unit batches (in shuffled
        orders) over 20 units of one value experiment: every call answers 200, and every
        event is counted exactly once."""
        import random

        created = await client.post(
            "/experiments",
            json={"id": "vals", "variants": [{"id": "a"}, {"id": "b"}], "metric_kind": "value"},
        )
        assert created.status_code == 201, created.text
        units = [f"u{n:02d}" for n in range(20)]
        for unit in units:
            assigned = await client.post("/experiments/vals/assign", json={"unit_id": unit})
            assert assigned.status_code == 200
        rng = random.Random(7)
        sent: list[tuple[str, float]] = []

        async def one_client(c: int) -> list[int]:
            statuses = []
            for call in range(30):
                if call % 2:
                    unit = rng.choice(units)
                    event = f"{c}-{call}"
                    sent.append((event, 1.0))
                    response = await client.post(
                        "/experiments/vals/conversions",
                        json={"unit_id": unit, "value": 1.0, "event_id": event},
                    )
                else:
                    picked = rng.sample(units, 5)
                    items = []
                    for k, unit in enumerate(picked):
                        event = f"{c}-{call}-{k}"
                        sent.append((event, 2.0))
                        items.append({"experiment_id": "vals", "unit_id": unit,
                                      "value": 2.0, "event_id": event})  # fmt: skip
                    response = await client.post("/conversions/batch", json={"conversions": items})
                statuses.append(response.status_code)
            return statuses

        results = await asyncio.gather(*(one_client(c) for c in range(8)))
        codes = [code for statuses in results for code in statuses]
        assert codes.count(200) == len(codes), sorted(set(codes))
        summary = (await client.get("/experiments/vals/summary")).json()
        total = sum(v["value_sum"] for v in summary["variants"])
        assert total == sum(value for _, value in sent)
