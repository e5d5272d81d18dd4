"""Running totals always equal the sum of the daily rows they stand for."""

from __future__ import annotations

import random
from datetime import date, timedelta

import httpx
import pytest
from fastapi import FastAPI

from mabapi.experiments import repository
from mabapi.runtime import runtime_of


async def direct_sums(app: FastAPI, experiment_id: str, before: date | None) -> dict[str, tuple]:  # type: ignore[type-arg]
    async with runtime_of(app).sessionmaker() as session:
        rows = await repository.daily_rows(session, experiment_id, before=before)
    sums: dict[str, list[float]] = {}
    for row in rows:
        acc = sums.setdefault(row.variant_id, [0, 0, 0.0, 0.0])
        acc[0] += row.impressions
        acc[1] += row.successes
        acc[2] += row.value_sum
        acc[3] += row.value_sum_squares
    return {v: tuple(acc) for v, acc in sums.items() if any(acc)}


async def via_totals(app: FastAPI, experiment_id: str, before: date | None) -> dict[str, tuple]:  # type: ignore[type-arg]
    async with runtime_of(app).sessionmaker() as session:
        totals = await repository.metric_totals(session, experiment_id, before=before)
    return {
        v: (t.impressions, t.successes, t.value_sum, t.value_sum_squares) for v, t in totals.items()
    }


class TestRunningTotals:
    async def test_random_history_of_posts_reposts_and_live_events(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        response = await client.post(
            "/experiments",
            json={"id": "t", "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}]},
        )
        assert response.status_code == 201
        rng = random.Random(11)
        start = date(2024, 1, 1)
        for step in range(60):
            kind = rng.random()
            if kind < 0.5:  # reported rows, often re-posting an earlier day
                rows = [
                    {
                        "experiment_id": "t",
                        "variant_id": rng.choice("abc"),
                        "date": (start + timedelta(days=rng.randrange(20))).isoformat(),
                        "impressions": (n := rng.randrange(1, 500)),
                        "successes": rng.randrange(0, n + 1),
                    }
                    for _ in range(rng.randrange(1, 4))
                ]
                unique = {(r["variant_id"], r["date"]): r for r in rows}
                response = await client.post(
                    "/metrics/batch", json={"metrics": list(unique.values())}
                )
                assert response.status_code == 200, response.text
            elif kind < 0.9:
                unit = f"u{rng.randrange(40)}"
                await client.post("/experiments/t/assign", json={"unit_id": unit})
                await client.post("/experiments/t/conversions", json={"unit_id": unit})
            elif step % 3 == 0:
                assert (await client.post("/experiments/t/reset")).status_code == 200
        for before in (
            None,
            start + timedelta(days=5),
            start + timedelta(days=15),
            date(2999, 1, 1),
        ):
            expected = await direct_sums(app, "t", before)
            actual = await via_totals(app, "t", before)
            assert actual.keys() == expected.keys(), before
            for variant, values in expected.items():
                assert actual[variant] == pytest.approx(values), (before, variant)

    async def test_reposted_values_move_the_value_sums_by_new_minus_old(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        created = await client.post(
            "/experiments",
            json={"id": "v", "metric_kind": "value", "variants": [{"id": "a"}, {"id": "b"}]},
        )
        assert created.status_code == 201, created.text
        rng = random.Random(5)
        start = date(2024, 1, 1)
        for _ in range(25):
            rows = {}
            for _ in range(rng.randrange(1, 4)):
                n = rng.randrange(1, 300)
                total = rng.uniform(0, 5 * n)
                row = {
                    "experiment_id": "v",
                    "variant_id": rng.choice("ab"),
                    "date": (start + timedelta(days=rng.randrange(6))).isoformat(),
                    "impressions": n,
                    "successes": rng.randrange(0, n + 1),
                    "value_sum": total,
                    "value_sum_squares": total * total / n + rng.uniform(0, 50),
                }
                rows[row["variant_id"], row["date"]] = row
            response = await client.post("/metrics/batch", json={"metrics": list(rows.values())})
            assert response.status_code == 200, response.text
        expected = await direct_sums(app, "v", None)
        actual = await via_totals(app, "v", None)
        assert actual.keys() == expected.keys() == {"a", "b"}
        for variant, values in expected.items():
            assert actual[variant] == pytest.approx(values), variant
