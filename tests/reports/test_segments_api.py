"""Segments over the API, on both databases: rows and assignments naming a segment, each
segment's split under the three poolings, the answer over all traffic unchanged, an
unseen segment, the listing, and assignment drawing from its segment's split."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from mabapi.assignments.models import Assignment
from mabapi.db.transactions import background_transaction
from mabapi.runtime import runtime_of

FIRST = date(2024, 4, 1)
# Opposite winners: desktop prefers b, mobile prefers a.
RATES = {"desktop": {"a": 0.10, "b": 0.13}, "mobile": {"a": 0.13, "b": 0.10}}


async def create(client: httpx.AsyncClient, pooling: str | None = None) -> None:
    settings: dict[str, Any] = {"segments": {"pooling": pooling}} if pooling else {}
    response = await client.post(
        "/experiments",
        json={"id": "e", "variants": [{"id": "a"}, {"id": "b"}], "settings": settings},
    )
    assert response.status_code == 201, response.text


def segmented_rows(days: int = 10, units: int = 4000) -> list[dict[str, Any]]:
    return [
        {"experiment_id": "e", "variant_id": v, "date": str(FIRST + timedelta(days=d)),
         "impressions": units, "successes": int(units * rate), "segment": segment}
        for d in range(days)
        for segment, rates in RATES.items()
        for v, rate in rates.items()
    ]  # fmt: skip


async def post(client: httpx.AsyncClient, rows: list[dict[str, Any]]) -> None:
    response = await client.post("/metrics/batch", json={"metrics": rows})
    assert response.status_code == 200, response.text


async def split(client: httpx.AsyncClient, segment: str | None = None) -> dict[str, Any]:
    params = {"for_date": str(FIRST + timedelta(days=10))}
    if segment is not None:
        params["segment"] = segment
    response = await client.get("/allocations/e", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestSplits:
    async def test_each_segment_gets_its_own_winner_under_partial_pooling(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await post(client, segmented_rows())
        desktop, mobile = await split(client, "desktop"), await split(client, "mobile")
        assert desktop["segment"] == "desktop"
        assert desktop["allocations"]["b"] > 90
        assert mobile["allocations"]["a"] > 90
        assert desktop["inputs"]["b"] == {"impressions": 40_000, "successes": 5_200}

    async def test_without_a_segment_the_answer_is_over_all_traffic_as_before(
        self, client: httpx.AsyncClient
    ) -> None:
        """The sum of the segments equals the same totals posted unsegmented."""
        await create(client)
        await post(client, segmented_rows())
        overall = await split(client)
        assert overall["segment"] is None
        assert overall["inputs"]["a"] == {"impressions": 80_000, "successes": 9_200}
        rows = await client.get("/experiments/e/metrics")
        assert {row["segment"] for row in rows.json()["metrics"]} == {"desktop", "mobile"}
        await client.post(
            "/experiments", json={"id": "plain", "variants": [{"id": "a"}, {"id": "b"}]}
        )
        plain = [
            {**row, "experiment_id": "plain", "segment": None}
            for row in segmented_rows()
            if row["segment"] == "desktop"
        ]
        for row in plain:  # the two segments' sums, one unsegmented row a day
            twin = RATES["mobile"][row["variant_id"]]
            row["impressions"] *= 2
            row["successes"] += int(4000 * twin)
        plain = [{k: v for k, v in row.items() if v is not None} for row in plain]
        await client.post("/metrics/batch", json={"metrics": plain})
        same = await client.get(
            "/allocations/plain", params={"for_date": str(FIRST + timedelta(days=10))}
        )
        assert same.json()["allocations"] == overall["allocations"]
        assert same.json()["probability_best"] == overall["probability_best"]

    async def test_an_unseen_segment_gets_the_split_over_all_traffic(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await post(client, segmented_rows())
        tablet = await split(client, "tablet")
        assert tablet["segment"] is None
        assert tablet["allocations"] == (await split(client))["allocations"]

    @pytest.mark.parametrize(("pooling", "desktop_b"), [("none", 90.0), ("full", None)])
    async def test_poolings(
        self, client: httpx.AsyncClient, pooling: str, desktop_b: float | None
    ) -> None:
        await create(client, pooling)
        await post(client, segmented_rows())
        desktop = await split(client, "desktop")
        if desktop_b is None:  # full: segments ignored
            assert desktop["segment"] is None
            assert desktop["allocations"] == (await split(client))["allocations"]
        else:
            assert desktop["allocations"]["b"] > desktop_b

    async def test_bad_segments_are_a_422(self, client: httpx.AsyncClient) -> None:
        await create(client)
        bad = await client.get("/allocations/e", params={"segment": "no spaces"})
        assert bad.status_code == 422
        row = {**segmented_rows(1)[0], "segment": "a/b"}
        assert (await client.post("/metrics/", json=row)).status_code == 422
        guarded = {**segmented_rows(1)[0], "metric_id": "refunds"}
        response = await client.post("/metrics/", json=guarded)
        assert response.status_code == 422
        assert "not segmented" in response.text


class TestListing:
    async def test_every_segment_with_its_leader(self, client: httpx.AsyncClient) -> None:
        await create(client)
        rows = segmented_rows()
        for row in rows:  # desktop larger: b leads overall
            if row["segment"] == "desktop":
                row["impressions"] *= 3
                row["successes"] *= 3
        await post(client, rows)
        listing = (await client.get("/experiments/e/segments")).json()
        assert listing["pooling"] == "partial"
        assert listing["overall_leader"] == "b"
        by_name = {item["segment"]: item for item in listing["segments"]}
        assert by_name["desktop"]["leader"] == "b"
        assert by_name["desktop"]["differs_from_overall"] is False
        assert by_name["mobile"]["leader"] == "a"
        assert by_name["mobile"]["differs_from_overall"] is True
        assert by_name["mobile"]["leader_probability_best"] > 0.99
        assert by_name["mobile"]["units"] == 80_000
        assert sum(by_name["mobile"]["probability_best"].values()) == pytest.approx(1.0)


class TestRealTime:
    async def test_assignment_stores_the_segment_and_draws_from_its_split(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await post(client, segmented_rows())
        variants = []
        for i in range(40):
            response = await client.post(
                "/experiments/e/assign", json={"unit_id": f"m{i}", "segment": "mobile"}
            )
            assert response.status_code == 200, response.text
            variants.append(response.json()["variant_id"])
        assert variants.count("a") >= 34  # mobile's split gives a > 90%
        again = await client.post(
            "/experiments/e/assign", json={"unit_id": "m0", "segment": "desktop"}
        )
        assert again.json()["variant_id"] == variants[0]  # sticky, whatever segment
        async with background_transaction(runtime_of(app).sessionmaker) as session:
            stored = (await session.scalars(select(Assignment.segment))).all()
        assert set(stored) == {"mobile"}
        # Its conversions count in the segment: the units join mobile's totals, once the
        # segment model shared by the splits and the listing is refitted (real-time units
        # show within MABAPI_SEGMENT_FIT_SECONDS; posted totals refit it at once).
        await client.post("/experiments/e/conversions", json={"unit_id": "m0"})
        listing = (await client.get("/experiments/e/segments")).json()
        mobile = next(s for s in listing["segments"] if s["segment"] == "mobile")
        assert mobile["units"] == 80_000  # the fit the splits used: one model for both
        runtime_of(app).answers.note_write()  # as a write of reported data does
        listing = (await client.get("/experiments/e/segments")).json()
        mobile = next(s for s in listing["segments"] if s["segment"] == "mobile")
        assert mobile["units"] == 80_000 + 40

    async def test_batch_assignment_draws_each_item_from_its_segment(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await post(client, segmented_rows())
        items = [
            {"experiment_id": "e", "unit_id": f"{segment}{i}", "segment": segment}
            for segment in ("mobile", "desktop")
            for i in range(40)
        ] + [{"experiment_id": "e", "unit_id": "plain"}]
        response = await client.post("/assign/batch", json={"assignments": items})
        assert response.status_code == 200, response.text
        got = {a["unit_id"]: a["variant_id"] for a in response.json()["assignments"]}
        mobile = [got[f"mobile{i}"] for i in range(40)]
        desktop = [got[f"desktop{i}"] for i in range(40)]
        assert mobile.count("a") >= 34  # mobile's split: a > 90%
        assert desktop.count("b") >= 34  # desktop's: b > 90%
        async with background_transaction(runtime_of(app).sessionmaker) as session:
            stored = dict(
                (await session.execute(select(Assignment.unit_id, Assignment.segment))).all()
            )
        assert stored["mobile0"] == "mobile"
        assert stored["desktop0"] == "desktop"
        assert stored["plain"] is None
        bad = await client.post(
            "/assign/batch",
            json={"assignments": [{"experiment_id": "e", "unit_id": "x", "segment": "a b"}]},
        )
        assert bad.status_code == 422
        assert "segment" in bad.text


class TestValues:
    async def test_value_experiments_get_a_split_per_segment(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/experiments",
            json={"id": "e", "variants": [{"id": "a"}, {"id": "b"}], "metric_kind": "value"},
        )
        assert response.status_code == 201
        means = {"desktop": {"a": 10.0, "b": 12.0}, "mobile": {"a": 12.0, "b": 10.0}}
        rows = []
        for d in range(5):
            for segment, by_variant in means.items():
                for variant, mean in by_variant.items():
                    n = 2000  # values mean +- 5: sum of squares n (mean^2 + 25)
                    rows.append(
                        {"experiment_id": "e", "variant_id": variant, "segment": segment,
                         "date": str(FIRST + timedelta(days=d)), "impressions": n,
                         "successes": n, "value_sum": n * mean,
                         "value_sum_squares": n * (mean**2 + 25.0)}
                    )  # fmt: skip
        await post(client, rows)
        desktop, mobile = await split(client, "desktop"), await split(client, "mobile")
        assert desktop["segment"] == "desktop"
        assert desktop["allocations"]["b"] > 90
        assert mobile["allocations"]["a"] > 90
        summary = await client.get("/experiments/e/summary", params={"segment": "mobile"})
        assert summary.status_code == 200
        summarised = {v["variant_id"]: v for v in summary.json()["variants"]}
        assert summarised["a"]["mean"] == pytest.approx(12.0)
        listing = (await client.get("/experiments/e/segments")).json()
        assert {s["segment"]: s["leader"] for s in listing["segments"]} == {
            "desktop": "b",
            "mobile": "a",
        }


class TestDaysCountAsOverall:
    """A segment's days enter its totals as they enter the totals over all traffic:
    forgotten by the same weights, recent conversion days at their effective exposures."""

    async def make(self, client: httpx.AsyncClient, experiment_id: str, policy: Any) -> None:
        response = await client.post(
            "/experiments",
            json={"id": experiment_id, "variants": [{"id": "a"}, {"id": "b"}],
                  "settings": {"policy": policy}},
        )  # fmt: skip
        assert response.status_code == 201, response.text

    @staticmethod
    def rows(experiment_id: str, rates: Any, days: range) -> list[dict[str, Any]]:
        return [
            {"experiment_id": experiment_id, "variant_id": v, "segment": "mobile",
             "date": str(FIRST + timedelta(days=d)), "impressions": 1000,
             "successes": int(1000 * rates(d)[v])}
            for d in days
            for v in ("a", "b")
        ]  # fmt: skip

    async def test_a_window_forgets_a_segments_old_days(self, client: httpx.AsyncClient) -> None:
        """mobile: a wins for seven days, then b for three. With a 3-day window its split
        follows b; without one, a's long lead still holds."""

        def rates(d: int) -> dict[str, float]:
            return {"a": 0.15, "b": 0.05} if d < 7 else {"a": 0.05, "b": 0.15}

        for experiment_id, policy in (("windowed", {"window_days": 3}), ("whole", {})):
            await self.make(client, experiment_id, policy)
            rows = self.rows(experiment_id, rates, range(10))
            rows += [dict(r, segment="desktop") for r in rows]  # a second segment
            response = await client.post("/metrics/batch", json={"metrics": rows})
            assert response.status_code == 200, response.text
        params = {"for_date": str(FIRST + timedelta(days=10)), "segment": "mobile"}
        windowed = (await client.get("/allocations/windowed", params=params)).json()
        whole = (await client.get("/allocations/whole", params=params)).json()
        assert windowed["segment"] == whole["segment"] == "mobile"
        assert windowed["inputs"]["b"]["impressions"] == 3000  # three days' worth
        assert windowed["allocations"]["b"] > 90
        assert whole["allocations"]["a"] > 90

    async def test_late_conversions_are_corrected_in_a_segment(
        self, client: httpx.AsyncClient
    ) -> None:
        """With [0.5, 0.8, 1.0], a segment's split equals that of an experiment without a
        delay whose last two days were posted with half and 80% of their impressions."""
        delay = {"conversion_delay_days": 2, "conversion_delay_cdf": [0.5, 0.8, 1.0]}
        await self.make(client, "late", delay)
        await self.make(client, "scaled", {})
        scale = {9: 500, 8: 800}
        for experiment_id in ("late", "scaled"):
            rows = self.rows(experiment_id, lambda d: {"a": 0.05, "b": 0.06}, range(10))
            rows += [dict(r, segment="desktop", successes=r["successes"] * 2) for r in rows]
            if experiment_id == "scaled":
                for r in rows:
                    day = (date.fromisoformat(r["date"]) - FIRST).days
                    r["impressions"] = scale.get(day, 1000)
            response = await client.post("/metrics/batch", json={"metrics": rows})
            assert response.status_code == 200, response.text
        params = {"for_date": str(FIRST + timedelta(days=10)), "segment": "mobile"}
        late = (await client.get("/allocations/late", params=params)).json()
        scaled = (await client.get("/allocations/scaled", params=params)).json()
        assert late["inputs"]["b"]["impressions"] == 8 * 1000 + 800 + 500
        assert late["inputs"] == scaled["inputs"]
        assert late["probability_best"] == pytest.approx(scaled["probability_best"], abs=1e-9)

    async def test_the_segment_summary_counts_recent_days_as_immature(
        self, client: httpx.AsyncClient
    ) -> None:
        delay = {"conversion_delay_days": 2, "conversion_delay_cdf": [0.5, 0.8, 1.0]}
        await self.make(client, "late", delay)
        today = datetime.now(UTC).date()
        rows = [
            {"experiment_id": "late", "variant_id": v, "segment": "mobile",
             "date": str(today - timedelta(days=k)), "impressions": 1000, "successes": 40}
            for k in range(5)
            for v in ("a", "b")
        ]  # fmt: skip
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 200, response.text
        body = (await client.get("/experiments/late/summary", params={"segment": "mobile"})).json()
        for variant in body["variants"]:
            assert variant["impressions"] == 5000
            assert variant["effective_impressions"] == pytest.approx(500 + 800 + 3000)
        listing = (await client.get("/experiments/late/segments")).json()
        assert listing["segments"][0]["units"] == 10_000  # as posted
