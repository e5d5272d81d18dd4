"""Many requests at once on every write and read path: all answered, none a 500. Run on
every backend, and by .ci/run through PgBouncer in transaction mode (the `pgbouncer`
backend), where consecutive transactions of one connection reach different server
connections and cached prepared statements used to make 3 in 10 requests a 500."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest


@pytest.mark.slow
async def test_concurrent_requests_on_every_path_answer(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/experiments", json={"id": "e", "variants": [{"id": "a"}, {"id": "b"}]}
    )
    assert created.status_code == 201

    async def one(n: int) -> list[int]:
        day = f"2024-01-{1 + n % 28:02d}"
        calls = [
            client.post("/metrics/", json={"experiment_id": "e", "variant_id": "ab"[n % 2],
                                           "date": day, "impressions": 10, "successes": 1}),
            client.post("/metrics/batch", json={"metrics": [
                {"experiment_id": "e", "variant_id": "a", "date": day, "impressions": 20,
                 "successes": 2, "segment": "mobile"}]}),
            client.get("/allocations/e", params={"for_date": "2024-02-01"}),
            client.post("/experiments/e/assign", json={"unit_id": f"u{n}"}),
            client.get("/experiments/e/summary"),
            client.get("/experiments/e/metrics", params={"limit": 5}),
        ]  # fmt: skip
        answers = [await call for call in calls]
        converted = await client.post("/experiments/e/conversions", json={"unit_id": f"u{n}"})
        return [answer.status_code for answer in [*answers, converted]]

    codes: Counter[int] = Counter()
    for _ in range(2):
        for statuses in await asyncio.gather(*(one(n) for n in range(30))):
            codes.update(statuses)
    assert codes == Counter({200: 420}), codes
