"""GET /allocations/{experiment_id}: dates, rounding, determinism, snapshots."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from mabapi.allocations import repository as snapshots
from mabapi.runtime import runtime_of
from tests.fixtures.factories import post_metric
from tests.fixtures.keys import bearer, make_key


async def snapshot_count(app: FastAPI, experiment_id: str) -> int:
    async with runtime_of(app).sessionmaker() as session:
        return await snapshots.count_snapshots(session, experiment_id)


class TestDates:
    async def test_uses_only_days_strictly_before_for_date(self, client: httpx.AsyncClient) -> None:
        await post_metric(client, variant_id="control", date="2023-07-15", successes=100)
        await post_metric(client, variant_id="b", date="2023-07-15", successes=100)
        # A huge day for b ON the planned date must not count.
        await post_metric(
            client, variant_id="b", date="2023-07-16", impressions=100_000, successes=90_000
        )
        body = (await client.get("/allocations/homepage_test?for_date=2023-07-16")).json()
        assert body["inputs"]["b"] == {"impressions": 1000, "successes": 100}
        assert body["allocations"] == {"control": 50.0, "b": 50.0}
        later = (await client.get("/allocations/homepage_test?for_date=2023-07-17")).json()
        assert later["inputs"]["b"] == {"impressions": 101_000, "successes": 90_100}
        # The default exploration keeps the loser measured: 0.05% + 99.9% x P(best) ~ 0.1%.
        assert later["allocations"] == {"control": 0.1, "b": 99.9}

    async def test_live_says_what_assignment_serves_now(self, client: httpx.AsyncClient) -> None:
        today = datetime.now(UTC).date().isoformat()
        await post_metric(client, variant_id="control", date=today, successes=50)
        await post_metric(client, variant_id="b", date=today, successes=150)
        body = (await client.get("/allocations/homepage_test")).json()
        # Planning today: nothing before today, so an even split ...
        assert body["allocations"] == {"control": 50.0, "b": 50.0}
        # ... while assignment already serves today's data: b almost always.
        assert body["live"]["b"] == 99.9
        assert sum(body["live"].values()) == pytest.approx(100.0)
        unit = (
            await client.post("/experiments/homepage_test/assign", json={"unit_id": "u"})
        ).json()
        served = body["live"][unit["variant_id"]] / 100
        assert unit["probability"] == pytest.approx(served, abs=1e-3)

    async def test_plan_and_live_are_read_in_one_transaction(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A cold GET /allocations answers the day's plan and `live` from one read
        transaction (the live entry it primes is the one assignment then draws from);
        a warm one reads nothing."""
        from mabapi.allocations import routes as allocation_routes
        from mabapi.assignments import cache as assignment_cache

        opened: list[str] = []
        from mabapi.db.transactions import background_transaction as real

        def counting(where: str) -> Any:
            def open_(*args: Any, **kwargs: Any) -> Any:
                opened.append(where)
                return real(*args, **kwargs)

            return open_

        monkeypatch.setattr(allocation_routes, "background_transaction", counting("route"))
        monkeypatch.setattr(assignment_cache, "background_transaction", counting("live"))
        today = datetime.now(UTC).date().isoformat()
        await post_metric(client, variant_id="control", date=today, successes=50)
        await post_metric(client, variant_id="b", date=today, successes=150)
        opened.clear()
        body = (await client.get("/allocations/homepage_test")).json()
        assert opened == ["route"]
        assert body["allocations"] == {"control": 50.0, "b": 50.0}
        assert body["live"]["b"] == 99.9
        again = (await client.get("/allocations/homepage_test")).json()
        assert again == body
        assert opened == ["route"]
        unit = (
            await client.post("/experiments/homepage_test/assign", json={"unit_id": "u"})
        ).json()
        assert opened == ["route"]  # assignment drew from the entry the GET primed
        assert unit["probability"] == pytest.approx(
            body["live"][unit["variant_id"]] / 100, abs=1e-3
        )

    async def test_plan_and_live_share_one_read_of_the_experiment(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        """A cold GET /allocations reads the experiment (and its variants) once for both
        of its answers, and a GET for tomorrow, whose plan is `live`, decides once."""
        from mabapi.allocations import service as allocation_service

        today = datetime.now(UTC).date()
        await post_metric(client, variant_id="control", date=today.isoformat(), successes=50)
        await post_metric(client, variant_id="b", date=today.isoformat(), successes=150)
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        engine = runtime_of(app).engine.sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        decided: list[date] = []
        real_decide = allocation_service.decide

        def counting(state: Any) -> Any:
            decided.append(state.for_date)
            return real_decide(state)

        try:
            for day in (today, today + timedelta(days=1)):
                runtime_of(app).allocation_cache.invalidate("homepage_test")
                runtime_of(app).answers.note_write()
                statements.clear()
                decided.clear()
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(allocation_service, "decide", counting)
                    body = (
                        await client.get(
                            "/allocations/homepage_test", params={"for_date": str(day)}
                        )
                    ).json()
                reads = [s for s in statements if re.search(r"FROM experiments\b", s)]
                assert len(reads) == 1, reads
                assert decided == ([today, today + timedelta(days=1)] if day == today else [day])
                if day != today:
                    assert body["allocations"] == body["live"]
        finally:
            event.remove(engine, "before_cursor_execute", seen)

    async def test_before_any_data_every_variant_is_even(self, client: httpx.AsyncClient) -> None:
        await post_metric(client, variant_id="control")
        await post_metric(client, variant_id="b")
        await post_metric(client, variant_id="c")
        body = (await client.get("/allocations/homepage_test?for_date=2023-07-15")).json()
        assert body["allocations"] == {"control": 33.4, "b": 33.3, "c": 33.3}
        assert body["inputs"]["c"] == {"impressions": 0, "successes": 0}

    async def test_for_date_defaults_to_today_utc(self, client: httpx.AsyncClient) -> None:
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        await post_metric(client, date=yesterday)
        body = (await client.get("/allocations/homepage_test")).json()
        assert body["date"] in {
            datetime.now(UTC).date().isoformat(),
            (datetime.now(UTC) + timedelta(minutes=1)).date().isoformat(),
        }
        assert body["inputs"]["control"]["impressions"] == 1000

    @pytest.mark.parametrize(
        "bad", ["2023-02-30", "16-07-2023", "yesterday", "2023-07-16T00:00", "1689465600"]
    )
    async def test_bad_for_date_is_422(self, client: httpx.AsyncClient, bad: str) -> None:
        await post_metric(client)
        response = await client.get("/allocations/homepage_test", params={"for_date": bad})
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "query.for_date"


class TestAnswer:
    async def test_percentages_sum_to_exactly_100_with_one_decimal(
        self, client: httpx.AsyncClient
    ) -> None:
        for index in range(7):
            await post_metric(client, variant_id=f"v{index}", successes=100 + 3 * index)
        body = (await client.get("/allocations/homepage_test?for_date=2023-07-16")).json()
        values = list(body["allocations"].values())
        assert math.fsum(values) == 100.0
        assert all(round(v, 1) == v for v in values)
        assert sum(body["probability_best"].values()) == pytest.approx(1.0, abs=1e-12)
        assert body["algorithm"] == "thompson"

    async def test_matches_monte_carlo_of_the_posteriors(self, client: httpx.AsyncClient) -> None:
        data = {"control": (1000, 120), "variant1": (1000, 150), "variant2": (900, 128)}
        for variant, (n, s) in data.items():
            await post_metric(client, variant_id=variant, impressions=n, successes=s)
        body = (await client.get("/allocations/homepage_test?for_date=2023-07-16")).json()
        rng = np.random.default_rng(5)
        draws = np.stack([rng.beta(1 + s, 1 + n - s, 1_000_000) for n, s in data.values()])
        sampled = np.bincount(draws.argmax(axis=0), minlength=3) / 1_000_000
        exact = np.array([body["probability_best"][v] for v in data])
        assert np.abs(exact - sampled).max() < 2.5e-3

    async def test_same_data_same_answer(self, client: httpx.AsyncClient) -> None:
        await post_metric(client, variant_id="control")
        await post_metric(client, variant_id="b", successes=130)
        first = (await client.get("/allocations/homepage_test?for_date=2023-07-16")).json()
        second = (await client.get("/allocations/homepage_test?for_date=2023-07-16")).json()
        assert first == second

    async def test_unknown_experiment_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/allocations/missing?for_date=2023-07-16")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"

    async def test_invalid_experiment_id_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/allocations/" + "x" * 129)
        assert response.status_code == 422

    async def test_experiment_without_variants_is_409(self, client: httpx.AsyncClient) -> None:
        assert (await client.post("/experiments", json={"id": "bare"})).status_code == 201
        response = await client.get("/allocations/bare?for_date=2023-07-16")
        assert response.status_code == 409
        assert "no active variants" in response.json()["error"]["message"]


class TestSnapshots:
    async def test_a_read_key_stores_nothing_and_leaves_no_locks(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        await post_metric(client, variant_id="control")
        await post_metric(client, variant_id="b", successes=140)
        reader = await make_key(app, scope="read")
        writer = await make_key(app, scope="write")
        for day in range(1, 29):
            answer = await client.get(
                f"/allocations/homepage_test?for_date=2024-02-{day:02d}", headers=bearer(reader)
            )
            assert answer.status_code == 200
        assert await snapshot_count(app, "homepage_test") == 0
        # A writer's answer is what it serves: that one is kept.
        answer = await client.get(
            "/allocations/homepage_test?for_date=2024-02-01", headers=bearer(writer)
        )
        assert answer.status_code == 200
        assert await snapshot_count(app, "homepage_test") == 1
        # Unknown ids leave nothing behind in the per-process tables.
        for index in range(200):
            missing = await client.get(f"/allocations/nothing-{index}", headers=bearer(reader))
            assert missing.status_code == 404
            unit = {"unit_id": "u"}
            assign = await client.post(
                f"/experiments/nothing-{index}/assign", json=unit, headers=bearer(writer)
            )
            assert assign.status_code == 404
        assert len(runtime_of(app).answers.locks) == 0
        assert len(runtime_of(app).allocation_cache.locks) == 0

    async def test_each_distinct_answer_is_recorded_once(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        await post_metric(client, variant_id="control")
        await post_metric(client, variant_id="b", successes=140)
        for _ in range(3):
            await client.get("/allocations/homepage_test?for_date=2023-07-16")
        assert await snapshot_count(app, "homepage_test") == 1
        await client.get("/allocations/homepage_test?for_date=2023-07-17")
        assert await snapshot_count(app, "homepage_test") == 2
        # New data for a day before the planned date changes the answer: one more.
        await post_metric(client, variant_id="b", date="2023-07-14", successes=150)
        await client.get("/allocations/homepage_test?for_date=2023-07-16")
        await client.get("/allocations/homepage_test?for_date=2023-07-16")
        assert await snapshot_count(app, "homepage_test") == 3

    async def test_snapshot_holds_inputs_that_reproduce_the_answer(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        from sqlalchemy import select

        from mabapi.experiments.models import AllocationSnapshot
        from mabapi.stats.allocation import probability_best
        from mabapi.stats.posterior import BetaPosterior

        await post_metric(client, variant_id="control")
        await post_metric(client, variant_id="b", successes=140)
        body = (await client.get("/allocations/homepage_test?for_date=2023-07-16")).json()
        async with runtime_of(app).sessionmaker() as session:
            snapshot = (await session.scalars(select(AllocationSnapshot))).one()
        variants = snapshot.inputs["variants"]
        prior = snapshot.inputs["settings"]["prior"]
        recomputed = probability_best(
            [
                BetaPosterior(
                    prior["alpha"] + v["successes"],
                    prior["beta"] + v["impressions"] - v["successes"],
                )
                for v in variants.values()
            ]
        )
        policy = snapshot.inputs["settings"]["policy"]
        floor = max(policy["floor"], policy["exploration"] / 2)
        shares = floor + (1 - 2 * floor) * recomputed
        assert [round(100 * x, 1) for x in shares] == list(body["allocations"].values())
        assert dict(zip(variants, recomputed.tolist(), strict=True)) == body["probability_best"]
        assert snapshot.allocations == body["allocations"]
        assert snapshot.algorithm_version == body["algorithm_version"]
