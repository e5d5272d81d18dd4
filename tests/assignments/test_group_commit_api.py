"""Group commit through the API, on both databases: concurrent requests share
transactions, each gets its own answer and refusal, nothing is counted twice, audit
entries are written one per request, and retried conversions skip the database."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from mabapi.observability import GROUP_COMMIT_BATCH
from mabapi.runtime import runtime_of
from tests.fixtures.factories import create_experiment, post_metric
from tests.fixtures.keys import bearer, make_key


def batches(writer: str) -> float:
    """Group commits made so far by one writer (this process's histogram count)."""
    for metric in GROUP_COMMIT_BATCH.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels.get("writer") == writer:
                return sample.value
    return 0.0


async def summary(client: httpx.AsyncClient, experiment: str = "checkout") -> dict[str, Any]:
    response = await client.get(f"/experiments/{experiment}/summary")
    assert response.status_code == 200, response.text
    return {v["variant_id"]: v for v in response.json()["variants"]}


class TestAssignments:
    async def test_many_concurrent_new_units_fewer_transactions_each_counted_once(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client)
        before = batches("assign")
        responses = await asyncio.gather(
            *(
                client.post("/experiments/checkout/assign", json={"unit_id": f"u{i % 60}"})
                for i in range(120)  # every unit twice, concurrently
            )
        )
        assert all(r.status_code == 200 for r in responses)
        by_unit: dict[str, set[str]] = {}
        new = 0
        for response in responses:
            body = response.json()
            by_unit.setdefault(body["unit_id"], set()).add(body["variant_id"])
            new += body["new"]
        assert all(len(variants) == 1 for variants in by_unit.values())
        assert new == 60  # one "new" per unit, however the pairs were batched
        assert batches("assign") - before < 120
        stats = await summary(client)
        assert sum(v["impressions"] for v in stats.values()) == 60

    async def test_a_paused_experiment_refuses_new_units_but_answers_known_ones(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client)
        known = (await client.post("/experiments/checkout/assign", json={"unit_id": "k"})).json()
        patched = await client.patch("/experiments/checkout", json={"status": "paused"})
        assert patched.status_code == 200, patched.text
        # A fresh process would see the pause at once; this one within the cache's TTL.
        runtime_of(app).allocation_cache.invalidate("checkout")
        again, fresh = await asyncio.gather(
            client.post("/experiments/checkout/assign", json={"unit_id": "k"}),
            client.post("/experiments/checkout/assign", json={"unit_id": "new-one"}),
        )
        assert again.status_code == 200
        assert again.json()["variant_id"] == known["variant_id"]
        assert fresh.status_code == 409
        assert "paused" in fresh.json()["error"]["message"]


class TestConversions:
    async def test_retried_conversion_is_answered_without_the_database(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client)
        await client.post("/experiments/checkout/assign", json={"unit_id": "c1"})
        first = await client.post("/experiments/checkout/conversions", json={"unit_id": "c1"})
        assert first.json()["counted"] is True
        before = batches("conversions")
        for _ in range(3):
            retry = await client.post("/experiments/checkout/conversions", json={"unit_id": "c1"})
            assert retry.status_code == 200
            assert retry.json() == {**first.json(), "counted": False}
        assert batches("conversions") == before  # no transaction for the retries
        stats = await summary(client)
        assert sum(v["successes"] for v in stats.values()) == 1

    async def test_after_a_reset_the_memo_does_not_answer(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        await client.post("/experiments/checkout/assign", json={"unit_id": "c1"})
        await client.post("/experiments/checkout/conversions", json={"unit_id": "c1"})
        assert (await client.post("/experiments/checkout/reset")).status_code == 200
        after = await client.post("/experiments/checkout/conversions", json={"unit_id": "c1"})
        assert after.status_code == 409  # the reset forgot the unit: never assigned now

    async def test_concurrent_conversions_of_assigned_and_unknown_units(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client)
        for i in range(20):
            await client.post("/experiments/checkout/assign", json={"unit_id": f"a{i}"})
        units = [f"a{i}" for i in range(20)] * 2 + ["ghost-1", "ghost-2"]
        responses = await asyncio.gather(
            *(client.post("/experiments/checkout/conversions", json={"unit_id": u}) for u in units)
        )
        codes = [r.status_code for r in responses]
        assert codes[-2:] == [409, 409]  # never assigned: refused alone
        assert codes[:-2] == [200] * 40
        counted = sum(r.json()["counted"] for r in responses[:-2])
        assert counted == 20
        stats = await summary(client)
        assert sum(v["successes"] for v in stats.values()) == 20


class TestDailyTotals:
    async def test_concurrent_posts_of_one_day_leave_one_of_them_and_consistent_totals(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client)
        values = list(range(100, 140))
        responses = await asyncio.gather(
            *(
                post_metric(client, experiment_id="checkout", variant_id="control",
                            date="2026-01-01", impressions=n, successes=1)
                for n in values
            )
        )  # fmt: skip
        assert all(r.status_code == 200 for r in responses)
        rows = (await client.get("/experiments/checkout/metrics")).json()
        day = [r for r in rows["metrics"] if r["variant_id"] == "control"]
        assert len(day) == 1
        assert day[0]["impressions"] in values
        stats = await summary(client)  # running totals moved by new - old each time
        assert stats["control"]["impressions"] == day[0]["impressions"]

    async def test_a_refused_post_is_refused_alone(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        await create_experiment(client, experiment_id="old")
        assert (await client.post("/experiments/old/archive")).status_code == 200
        posts = [
            post_metric(client, experiment_id="checkout", variant_id="control",
                        date=f"2026-01-{d:02d}", impressions=10, successes=1)
            for d in range(1, 11)
        ] + [post_metric(client, experiment_id="old", variant_id="control", date="2026-01-01",
                         impressions=10, successes=1)]  # fmt: skip
        responses = await asyncio.gather(*posts)
        assert [r.status_code for r in responses] == [200] * 10 + [409]
        stats = await summary(client)
        assert stats["control"]["impressions"] == 100

    async def test_every_post_by_a_write_key_has_its_audit_entry(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = bearer(await make_key(app, scope="admin"))
        writer = bearer(await make_key(app, scope="write"))
        await create_experiment(client, headers=admin)
        responses = await asyncio.gather(
            *(
                client.post("/metrics/", headers=writer, json={
                    "experiment_id": "checkout", "variant_id": "control",
                    "date": f"2026-02-{d:02d}", "impressions": 5, "successes": 1})
                for d in range(1, 13)
            )
        )  # fmt: skip
        assert all(r.status_code == 200 for r in responses), responses[0].text
        audit = (await client.get("/audit", headers=admin, params={"limit": 100})).json()
        posts = [e for e in audit["entries"] if e["route"] == "/metrics/"]
        assert len(posts) == 12
        assert len({e["request_id"] for e in posts}) == 12
