"""Segments have bounds, on both databases: a cap per experiment (a write past it is a
409 that writes nothing, an assign past it answers from the split over all traffic and
says so), one pooled fit per experiment reused by every segment's request, a segment
never seen answered without any fit, names checked the same way on reads as on writes,
and the listing a page at a time."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from mabapi.assignments.models import Assignment
from mabapi.db.transactions import background_transaction
from mabapi.experiments.models import ExperimentMetric, ExperimentSegment
from mabapi.runtime import runtime_of


def rows(segments: list[str], *, day: str = "2024-04-01", b_rate: float = 0.12) -> list[Any]:
    return [
        {"experiment_id": "e", "variant_id": v, "date": day, "impressions": 2000,
         "successes": int(2000 * rate), "segment": segment}
        for segment in segments
        for v, rate in (("a", 0.10), ("b", b_rate))
    ]  # fmt: skip


async def create(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/experiments", json={"id": "e", "variants": [{"id": "a"}, {"id": "b"}]}
    )
    assert response.status_code == 201, response.text


async def count(app: FastAPI, model: Any, *where: Any) -> int:
    async with background_transaction(runtime_of(app).sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


class TestCap:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"segments_max_per_experiment": 3}

    async def test_a_write_past_the_cap_is_a_409_and_writes_nothing(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        ok = await client.post("/metrics/batch", json={"metrics": rows(["s1", "s2", "s3"])})
        assert ok.status_code == 200, ok.text
        again = await client.post("/metrics/batch", json={"metrics": rows(["s1", "s2"])})
        assert again.status_code == 200  # segments it has are always fine
        refused = await client.post(
            "/metrics/batch", json={"metrics": rows(["s1", "s4"], day="2024-04-02")}
        )
        assert refused.status_code == 409, refused.text
        assert "MABAPI_SEGMENTS_MAX_PER_EXPERIMENT" in refused.text
        assert "s4" in refused.text
        single = await client.post("/metrics/", json=rows(["s5"])[0])
        assert single.status_code == 409
        assert await count(app, ExperimentMetric, ExperimentMetric.date != date(2024, 4, 1)) == 0
        assert await count(app, ExperimentSegment) == 3

    async def test_an_assign_past_the_cap_gets_the_overall_split_and_says_so(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        assert (
            await client.post("/metrics/batch", json={"metrics": rows(["s1", "s2"])})
        ).status_code == 200
        new = await client.post("/experiments/e/assign", json={"unit_id": "u1", "segment": "s3"})
        assert new.status_code == 200
        assert new.json()["segment_capped"] is False  # the third fits
        capped = await client.post("/experiments/e/assign", json={"unit_id": "u2", "segment": "s4"})
        assert capped.status_code == 200, capped.text
        assert capped.json()["segment_capped"] is True
        batch = await client.post(
            "/assign/batch",
            json={"assignments": [{"experiment_id": "e", "unit_id": "u3", "segment": "s9"}]},
        )
        assert batch.status_code == 200
        assert batch.json()["assignments"][0]["segment_capped"] is True
        async with background_transaction(runtime_of(app).sessionmaker) as session:
            stored = dict(
                (await session.execute(select(Assignment.unit_id, Assignment.segment))).all()
            )
        assert stored == {"u1": "s3", "u2": None, "u3": None}
        assert await count(app, ExperimentSegment) == 3


class TestOneFit:
    async def test_every_segment_shares_one_fit_and_unseen_ones_need_none(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        names = [f"s{n}" for n in range(20)]
        assert (
            await client.post("/metrics/batch", json={"metrics": rows(names)})
        ).status_code == 200
        fits = runtime_of(app).segment_fits
        before = fits.computed
        for name in names:
            response = await client.get(
                "/allocations/e", params={"for_date": "2024-04-02", "segment": name}
            )
            assert response.status_code == 200
            assert response.json()["segment"] == name
        # One fit for the day asked about and one for real-time assignment (the answer
        # carries both splits), whatever the number of segments.
        assert fits.computed - before == 2
        for n in range(30):
            unseen = await client.get(
                "/allocations/e", params={"for_date": "2024-04-02", "segment": f"never{n}"}
            )
            assert unseen.status_code == 200
            assert unseen.json()["segment"] is None
        assert fits.computed - before == 2

    async def test_posted_data_is_seen_at_once(self, client: httpx.AsyncClient) -> None:
        await create(client)
        await client.post("/metrics/batch", json={"metrics": rows(["x", "y"], b_rate=0.20)})
        params = {"for_date": "2024-04-03", "segment": "x"}
        first = (await client.get("/allocations/e", params=params)).json()
        assert first["allocations"]["b"] > 90
        turned = rows(["x", "y"], day="2024-04-02", b_rate=0.0)
        for row in turned:
            row["impressions"] = 50_000
            row["successes"] = 0 if row["variant_id"] == "b" else 5000
        assert (await client.post("/metrics/batch", json={"metrics": turned})).status_code == 200
        second = (await client.get("/allocations/e", params=params)).json()
        assert second["allocations"]["a"] > 90


class TestNames:
    @pytest.mark.parametrize("name", ["..", ".", "a b", "x" * 129])
    async def test_a_segment_refused_on_writes_is_refused_on_reads(
        self, client: httpx.AsyncClient, name: str
    ) -> None:
        await create(client)
        write = await client.post("/metrics/", json=rows([name])[0])
        assert write.status_code == 422
        for path in ("/allocations/e", "/experiments/e/summary"):
            read = await client.get(path, params={"segment": name})
            assert read.status_code == 422, (path, read.text)


class TestListing:
    async def test_pages_of_segments_add_up_to_every_one_once(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        names = sorted(f"s{n:02d}" for n in range(25))
        assert (
            await client.post("/metrics/batch", json={"metrics": rows(names)})
        ).status_code == 200
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 10}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/experiments/e/segments", params=params)).json()
            assert page["total"] == 25
            assert len(page["segments"]) <= 10
            seen += [item["segment"] for item in page["segments"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == names
        assert (await client.get("/experiments/e/segments?limit=1001")).status_code == 422
