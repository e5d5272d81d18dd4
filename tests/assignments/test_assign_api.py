"""Sticky assignment, conversions, and one posterior from both data sources."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from mabapi.runtime import runtime_of
from tests.fixtures.factories import create_experiment, post_metric


async def assign(client: httpx.AsyncClient, unit: str, experiment: str = "checkout") -> Any:
    response = await client.post(f"/experiments/{experiment}/assign", json={"unit_id": unit})
    assert response.status_code == 200, response.text
    return response.json()


async def convert(client: httpx.AsyncClient, unit: str, **extra: Any) -> httpx.Response:
    return await client.post("/experiments/checkout/conversions", json={"unit_id": unit, **extra})


async def summary(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    body = (await client.get("/experiments/checkout/summary")).json()
    return {v["variant_id"]: v for v in body["variants"]}


class TestSticky:
    async def test_same_unit_same_variant_and_counted_once(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        first = await assign(client, "user-42")
        assert first["new"] is True
        assert first["variant_id"] in {"control", "b"}
        assert 0 < first["probability"] <= 1
        for _ in range(3):
            again = await assign(client, "user-42")
            assert again["variant_id"] == first["variant_id"]
            assert again["new"] is False
            assert again["probability"] == first["probability"]
        stats = await summary(client)
        assert sum(v["impressions"] for v in stats.values()) == 1

    async def test_sticky_across_allocation_changes(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        units = [f"u{i}" for i in range(30)]
        before = {u: (await assign(client, u))["variant_id"] for u in units}
        # A huge reported day for b moves the allocation; existing units must not move.
        await post_metric(client, experiment_id="checkout", variant_id="b", date="2020-01-01",
                          impressions=100_000, successes=90_000)  # fmt: skip
        after = {u: (await assign(client, u))["variant_id"] for u in units}
        assert before == after

    async def test_draws_follow_the_allocation(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        await post_metric(client, experiment_id="checkout", variant_id="b", date="2020-01-01",
                          impressions=10_000, successes=9_000)  # fmt: skip
        await post_metric(client, experiment_id="checkout", variant_id="control",
                          date="2020-01-01", impressions=10_000, successes=100)  # fmt: skip
        variants = [(await assign(client, f"v{i}"))["variant_id"] for i in range(200)]
        # Allocation: b = 1% + 98% x ~1 = 99%.
        assert variants.count("b") >= 190

    async def test_concurrent_first_calls_agree(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        responses = await asyncio.gather(
            *(client.post("/experiments/checkout/assign", json={"unit_id": "racer"})
              for _ in range(20))
        )  # fmt: skip
        bodies = [r.json() for r in responses]
        assert {b["variant_id"] for b in bodies} == {bodies[0]["variant_id"]}
        assert sum(b["new"] for b in bodies) == 1
        stats = await summary(client)
        assert sum(v["impressions"] for v in stats.values()) == 1

    async def test_concluded_experiment_gives_everyone_the_winner(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client)
        units = [f"c{i}" for i in range(10)]
        for unit in units:
            await assign(client, unit)
        response = await client.post("/experiments/checkout/conclude", json={"winner": "b"})
        assert response.status_code == 200
        assert response.json()["status"] == "stopped"
        for unit in [*units, "newcomer"]:
            body = await assign(client, unit)
            assert body["variant_id"] == "b"
            assert body["concluded"] is True
        bad = await client.post("/experiments/checkout/conclude", json={"winner": "zz"})
        assert bad.status_code == 422
        assert "its variants: control, b" in bad.json()["error"]["message"]

    async def test_reset_starts_over(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        await assign(client, "r1")
        await client.post("/experiments/checkout/conclude", json={"winner": "b"})
        response = await client.post("/experiments/checkout/reset")
        assert response.status_code == 200
        assert response.json()["status"] == "running"
        again = await assign(client, "r1")
        assert again["new"] is True
        stats = await summary(client)
        assert sum(v["impressions"] for v in stats.values()) == 1

    async def test_paused_experiment_refuses_new_units(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        await assign(client, "old")
        await client.patch("/experiments/checkout", json={"status": "paused"})
        response = await client.post("/experiments/checkout/assign", json={"unit_id": "new"})
        assert response.status_code == 409
        assert (await assign(client, "old"))["new"] is False  # known units still answered

    async def test_a_paused_variant_gets_no_new_unit_at_once(self, make_app: Any) -> None:
        # A long cache: only the pause itself can make assignment see it.
        async with make_app(allocation_cache_seconds=3600) as (_, client):
            await create_experiment(client)
            await assign(client, "before")  # the allocation is now cached
            paused = await client.patch("/experiments/checkout/variants/b", json={"active": False})
            assert paused.status_code == 200, paused.text
            served = {(await assign(client, f"after-{i}"))["variant_id"] for i in range(40)}
            assert served == {"control"}
            resumed = await client.patch("/experiments/checkout/variants/b", json={"active": True})
            assert resumed.status_code == 200
            served = {(await assign(client, f"again-{i}"))["variant_id"] for i in range(40)}
            # b is back (with 41 units and no conversion on control, it now leads).
            assert "b" in served

    async def test_unknown_experiment_and_bad_unit_ids(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/experiments/ghost/assign", json={"unit_id": "u"})
        assert response.status_code == 404
        await create_experiment(client)
        for bad in ["", "x" * 257, "a\x00b", None, 7]:
            response = await client.post("/experiments/checkout/assign", json={"unit_id": bad})
            assert response.status_code == 422, bad
        assert (await client.post("/experiments/checkout/assign", json={})).status_code == 422

    async def test_batch(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        await create_experiment(client, experiment_id="other", variants=("x", "y"))
        items = [{"experiment_id": e, "unit_id": f"b{i}"} for i in range(5)
                 for e in ("checkout", "other")]  # fmt: skip
        response = await client.post("/assign/batch", json={"assignments": items})
        assert response.status_code == 200, response.text
        body = response.json()["assignments"]
        assert len(body) == 10
        assert all(item["new"] for item in body)
        again = (await client.post("/assign/batch", json={"assignments": items})).json()
        assert [a["variant_id"] for a in again["assignments"]] == [a["variant_id"] for a in body]
        unknown = await client.post(
            "/assign/batch", json={"assignments": [{"experiment_id": "ghost", "unit_id": "u"}]}
        )
        assert unknown.status_code == 404


class TestConversions:
    async def test_binary_conversion_counts_once(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        assigned = await assign(client, "buyer")
        results = [await convert(client, "buyer") for _ in range(3)]
        assert [r.json()["counted"] for r in results] == [True, False, False]
        assert results[0].json()["variant_id"] == assigned["variant_id"]
        stats = await summary(client)
        assert stats[assigned["variant_id"]]["successes"] == 1

    async def test_never_assigned_unit_is_409(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        response = await convert(client, "stranger")
        assert response.status_code == 409
        assert "assign" in response.json()["error"]["message"]

    async def test_value_events_count_once_per_event_id(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/experiments",
            json={"id": "checkout", "variants": [{"id": "control"}, {"id": "b"}],
                  "metric_kind": "value"},
        )  # fmt: skip
        assert response.status_code == 201
        assigned = await assign(client, "spender")
        missing = await convert(client, "spender", value=5.0)
        assert missing.status_code == 422
        for _ in range(3):
            await convert(client, "spender", value=19.99, event_id="order-1")
        await convert(client, "spender", value=5.01, event_id="order-2")
        stats = await summary(client)
        variant = stats[assigned["variant_id"]]
        assert variant["value_sum"] == pytest.approx(25.0)
        assert variant["successes"] == 1  # one converting unit
        # Per-unit sum of squares: the unit's total is 25, so 625 (not 19.99^2 + 5.01^2).
        rows = (await client.get("/allocations/checkout?for_date=2999-01-01")).json()
        assert rows["inputs"][assigned["variant_id"]]["value_sum_squares"] == pytest.approx(625.0)

    async def test_batch_conversions(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        for unit in ("p", "q"):
            await assign(client, unit)
        items = [{"experiment_id": "checkout", "unit_id": u} for u in ("p", "q", "p")]
        response = await client.post("/conversions/batch", json={"conversions": items})
        assert response.status_code == 200, response.text
        assert [c["counted"] for c in response.json()["conversions"]] == [True, True, False]
        bad = [{"experiment_id": "checkout", "unit_id": "nobody"}]
        assert (
            await client.post("/conversions/batch", json={"conversions": bad})
        ).status_code == 409


class TestOnePosterior:
    async def test_reported_and_live_counts_add_up(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        await post_metric(client, experiment_id="checkout", variant_id="control",
                          date="2020-01-01", impressions=100, successes=10)  # fmt: skip
        assigned = [await assign(client, f"l{i}") for i in range(6)]
        for item in assigned[:2]:
            await convert(client, item["unit_id"])
        # A re-post of the reported day replaces it and leaves live counts alone.
        await post_metric(client, experiment_id="checkout", variant_id="control",
                          date="2020-01-01", impressions=200, successes=20)  # fmt: skip
        stats = await summary(client)
        assert sum(v["impressions"] for v in stats.values()) == 206
        assert sum(v["successes"] for v in stats.values()) == 22


class TestReturningUnitsSkipTheDatabase:
    async def test_memo_hit_opens_no_session(
        self, app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await create_experiment(client)
        first = await assign(client, "user-1")
        opened = 0
        real = runtime_of(app).sessionmaker

        def counting() -> Any:
            nonlocal opened
            opened += 1
            return real()

        writer = runtime_of(app).assign_writer
        real_submit = writer.submit
        submitted = 0

        async def counting_submit(item: Any) -> Any:
            nonlocal submitted
            submitted += 1
            return await real_submit(item)

        monkeypatch.setattr(runtime_of(app), "sessionmaker", counting)
        monkeypatch.setattr(writer, "_sessionmaker", counting)
        monkeypatch.setattr(writer, "submit", counting_submit)
        again = await assign(client, "user-1")
        assert again["variant_id"] == first["variant_id"]
        assert again["new"] is False
        assert (opened, submitted) == (0, 0)
        await assign(client, "user-2")  # a new unit needs the database (group commit)
        assert (opened, submitted) == (1, 1)

    async def test_lost_commit_is_not_remembered(
        self, app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Found by the PostgreSQL crash test: the memo learnt a unit before its insert
        committed, so the retry after a lost commit answered 200 from memory and the
        assignment was never stored."""
        from sqlalchemy import exc as sa_exc
        from sqlalchemy.ext.asyncio import AsyncSession

        await create_experiment(client)
        real_commit = AsyncSession.commit
        failures = iter([True])

        async def crashing_commit(self: AsyncSession) -> None:
            if next(failures, False):
                raise sa_exc.OperationalError("COMMIT", {}, ConnectionError("server closed"))
            await real_commit(self)

        monkeypatch.setattr(AsyncSession, "commit", crashing_commit)
        # As a real server answers: the error handler's response, not a raised exception.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw:
            lost = await raw.post("/experiments/checkout/assign", json={"unit_id": "crash-1"})
        assert lost.status_code == 503
        retried = await assign(client, "crash-1")
        assert retried["new"] is True  # stored now, and counted once
        stats = await summary(client)
        assert sum(v["impressions"] for v in stats.values()) == 1
