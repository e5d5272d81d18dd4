"""Late conversions over the API: the setting, the correction of recent days in
allocations and the summary, and the delay curve learnt from revisions and from
exposure-to-conversion times, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from mabapi.allocations import late_conversions
from mabapi.assignments.models import Assignment
from mabapi.experiments.models import MetricRevision
from mabapi.experiments.schemas import PolicySettings
from mabapi.metrics import repository as reported
from mabapi.runtime import runtime_of

DELAY = {"conversion_delay_days": 2, "conversion_delay_cdf": [0.5, 0.8, 1.0]}


async def create(client: httpx.AsyncClient, experiment_id: str, **policy: Any) -> None:
    response = await client.post(
        "/experiments",
        json={
            "id": experiment_id,
            "variants": [{"id": "a"}, {"id": "b"}],
            "settings": {"policy": policy},
        },
    )
    assert response.status_code == 201, response.text


async def post(client: httpx.AsyncClient, experiment_id: str, rows: list[tuple[Any, ...]]) -> None:
    metrics = [
        {"experiment_id": experiment_id, "variant_id": v, "date": str(d), "impressions": n,
         "successes": s}
        for v, d, n, s in rows
    ]  # fmt: skip
    response = await client.post("/metrics/batch", json={"metrics": metrics})
    assert response.status_code == 200, response.text


class TestSetting:
    @pytest.mark.parametrize(
        ("policy", "fragment"),
        [
            ({"conversion_delay_days": -1}, "conversion_delay_days"),
            ({"conversion_delay_days": 61}, "conversion_delay_days"),
            ({"conversion_delay_days": 1, "conversion_delay_cdf": [0.5, 0.8, 1.0]}, "+ 1 values"),
            ({"conversion_delay_days": 2, "conversion_delay_cdf": [0.5, 0.4, 1.0]}, "decrease"),
            ({"conversion_delay_days": 2, "conversion_delay_cdf": [0.5, 0.8, 0.9]}, "end at 1.0"),
            ({"conversion_delay_days": 1, "conversion_delay_cdf": [0.0, 1.0]}, "greater than 0"),
        ],
    )
    async def test_bad_settings_are_a_422_that_says_what_to_fix(
        self, client: httpx.AsyncClient, policy: dict[str, Any], fragment: str
    ) -> None:
        response = await client.post(
            "/experiments", json={"id": "e", "settings": {"policy": policy}}
        )
        assert response.status_code == 422, response.text
        assert fragment in response.text
        assert (await client.get("/experiments/e")).status_code == 404

    async def test_default_is_no_delay(self, client: httpx.AsyncClient) -> None:
        await create(client, "e")
        body = (await client.get("/experiments/e")).json()
        assert body["settings"]["policy"]["conversion_delay_days"] == 0
        assert body["settings"]["policy"]["conversion_delay_cdf"] is None


class TestCorrection:
    async def test_recent_days_count_as_their_reported_share_of_exposures(
        self, client: httpx.AsyncClient
    ) -> None:
        """With [0.5, 0.8, 1.0], planning 2024-01-11: the day before counts half its
        impressions, the one before 80%; identical to an experiment without delay whose
        recent days were posted with those impressions."""
        await create(client, "late", **DELAY)
        await create(client, "scaled")
        days = [date(2024, 1, d) for d in range(1, 11)]
        pairs = (("a", 50), ("b", 60))
        await post(client, "late", [(v, d, 1000, s) for d in days for v, s in pairs])
        scale = {days[-1]: 500, days[-2]: 800}
        await post(
            client,
            "scaled",
            [(v, d, scale.get(d, 1000), s) for d in days for v, s in pairs],
        )
        late = (await client.get("/allocations/late?for_date=2024-01-11")).json()
        scaled = (await client.get("/allocations/scaled?for_date=2024-01-11")).json()
        assert late["inputs"]["b"]["impressions"] == 8 * 1000 + 800 + 500
        assert late["inputs"] == scaled["inputs"]
        assert late["probability_best"] == scaled["probability_best"]
        # Planned later, the same days are complete.
        later = (await client.get("/allocations/late?for_date=2024-01-13")).json()
        assert later["inputs"]["b"]["impressions"] == 10_000

    async def test_the_summary_counts_today_and_yesterday_as_immature(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, "late", **DELAY)
        today = datetime.now(UTC).date()
        rows = [(v, today - timedelta(days=k), 1000, 40) for k in range(5) for v in "ab"]
        await post(client, "late", rows)
        body = (await client.get("/experiments/late/summary")).json()
        for variant in body["variants"]:
            assert variant["impressions"] == 5000
            assert variant["effective_impressions"] == pytest.approx(500 + 800 + 3000)
            assert variant["conversion_rate"] == pytest.approx(200 / 4300)

    async def test_value_experiments_are_not_corrected(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/experiments",
            json={"id": "v", "metric_kind": "value", "variants": [{"id": "a"}],
                  "settings": {"policy": DELAY}},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        row = {"experiment_id": "v", "variant_id": "a", "date": "2024-01-10", "impressions": 100,
               "successes": 5, "value_sum": 50.0, "value_sum_squares": 900.0}  # fmt: skip
        assert (await client.post("/metrics/", json=row)).status_code == 200
        body = (await client.get("/allocations/v?for_date=2024-01-11")).json()
        assert body["inputs"]["a"]["impressions"] == 100


class TestLearning:
    async def test_curve_learnt_from_how_reposted_days_grow(
        self, client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each day, the client posts that day's conversions so far (50%) and re-posts the
        two days before (80%, 100%). The revisions teach the curve exactly."""
        await create(client, "learn", conversion_delay_days=2)
        start = date(2024, 3, 1)
        final = {"a": 100, "b": 120}
        for offset in range(12):
            today = start + timedelta(days=offset)
            moment = datetime(today.year, today.month, today.day, 18, tzinfo=UTC)
            monkeypatch.setattr(reported, "utcnow", lambda moment=moment: moment)
            rows = []
            for age, share in ((0, 0.5), (1, 0.8), (2, 1.0)):
                day = today - timedelta(days=age)
                if day >= start:
                    rows += [(v, day, 2000, int(final[v] * share)) for v in final]
            await post(client, "learn", rows)
        async with runtime_of(app).sessionmaker() as session:
            revisions = (
                await session.scalars(
                    select(MetricRevision).where(MetricRevision.experiment_id == "learn")
                )
            ).all()
            # 12 days x 2 variants, each posted 3 times but the last two days (censored).
            assert len(revisions) == 2 * (3 * 10 + 2 + 1)
            today = start + timedelta(days=11)
            curve = await late_conversions.delay_curve(
                session, "learn", PolicySettings(conversion_delay_days=2), today
            )
        assert curve is not None
        assert curve.cdf == pytest.approx((0.5, 0.8, 1.0), abs=1e-9)
        async with runtime_of(app).sessionmaker() as session:
            choice = await late_conversions.choose_curve(
                session, "learn", PolicySettings(conversion_delay_days=2), today
            )
        assert choice.source == "learnt"
        assert choice.days == 11  # every day but the last, observed at one age only

    async def test_unchanged_reposts_add_no_revision(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        await create(client, "quiet")
        for _ in range(3):
            await post(client, "quiet", [("a", date(2024, 1, 1), 100, 5)])
        await post(client, "quiet", [("a", date(2024, 1, 1), 100, 6)])
        async with runtime_of(app).sessionmaker() as session:
            successes = (
                await session.scalars(
                    select(MetricRevision.successes)
                    .where(MetricRevision.experiment_id == "quiet")
                    .order_by(MetricRevision.id)
                )
            ).all()
        assert list(successes) == [5, 6]

    async def test_curve_learnt_from_exposure_to_conversion_times(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        """Real-time units: per exposure day, 50% convert the same day, 30% the next and
        20% two days later; the last two days are censored (not seen at every age)."""
        await create(client, "live", conversion_delay_days=2)
        start = date(2024, 5, 1)
        rows = []
        for offset in range(10):
            exposed = start + timedelta(days=offset)
            for lag, count in ((0, 50), (1, 30), (2, 20), (None, 900)):
                for k in range(count):
                    noon = datetime(exposed.year, exposed.month, exposed.day, 12, tzinfo=UTC)
                    converted = None if lag is None else noon + timedelta(days=lag)
                    rows.append(
                        Assignment(
                            experiment_id="live", unit_id=f"{offset}-{lag}-{k}", variant_id="a",
                            probability=0.5, assigned_date=exposed, converted_at=converted,
                        )
                    )  # fmt: skip
        async with runtime_of(app).sessionmaker() as session:
            session.add_all(rows)
            await session.commit()
            today = start + timedelta(days=9)
            curve = await late_conversions.delay_curve(
                session, "live", PolicySettings(conversion_delay_days=2), today
            )
        assert curve is not None
        assert curve.cdf == pytest.approx((0.5, 0.8, 1.0), abs=1e-9)


class TestWhichCurve:
    """The summary and the allocation say which curve they used: off, given, learnt from
    N days, or none because there is not enough revision history yet."""

    async def test_a_backfill_learns_nothing_and_says_so(self, client: httpx.AsyncClient) -> None:
        await create(client, "import", conversion_delay_days=3)
        today = datetime.now(UTC).date()
        # 30 days of history posted at once: final totals, no growth to learn from.
        rows = [(v, today - timedelta(days=k), 1000, 40) for k in range(1, 31) for v in "ab"]
        await post(client, "import", rows)
        summary = (await client.get("/experiments/import/summary")).json()
        allocation = (await client.get("/allocations/import")).json()
        for body in (summary, allocation):
            curve = body["delay_curve"]
            assert curve["source"] == "none"
            assert curve["cdf"] is None
            assert "not enough revision history" in curve["note"]
            assert "conversion_delay_cdf" in curve["note"]
        # Nothing was corrected: the recent days count whole.
        for variant in summary["variants"]:
            assert variant["effective_impressions"] == variant["impressions"] == 30_000

    async def test_given_and_off(self, client: httpx.AsyncClient) -> None:
        await create(client, "given", **DELAY)
        await create(client, "plain")
        for experiment in ("given", "plain"):
            await post(client, experiment, [("a", date(2024, 1, 1), 100, 5)])
        given = (await client.get("/experiments/given/summary")).json()["delay_curve"]
        assert (given["source"], given["cdf"]) == ("given", [0.5, 0.8, 1.0])
        plain = (await client.get("/allocations/plain")).json()["delay_curve"]
        assert (plain["source"], plain["days"], plain["cdf"]) == ("off", 0, None)


class TestRevisionsEndpoint:
    async def test_lists_each_change_in_arrival_order_with_filters(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, "r")
        await post(client, "r", [("a", date(2024, 1, 1), 100, 5), ("b", date(2024, 1, 1), 90, 4)])
        await post(client, "r", [("a", date(2024, 1, 1), 100, 5)])  # unchanged: no revision
        await post(client, "r", [("a", date(2024, 1, 1), 100, 8), ("a", date(2024, 1, 2), 50, 1)])
        response = await client.get("/experiments/r/metrics/revisions")
        assert response.status_code == 200, response.text
        body = response.json()
        assert [(r["variant_id"], r["date"], r["successes"]) for r in body["revisions"]] == [
            ("a", "2024-01-01", 5),
            ("a", "2024-01-01", 8),
            ("b", "2024-01-01", 4),
            ("a", "2024-01-02", 1),
        ]
        only = await client.get(
            "/experiments/r/metrics/revisions?variant_id=a&from=2024-01-02&to=2024-01-02"
        )
        assert [r["successes"] for r in only.json()["revisions"]] == [1]
        # What the daily rows say now is the last revision of each.
        rows = (await client.get("/experiments/r/metrics")).json()["metrics"]
        assert [(r["variant_id"], r["successes"]) for r in rows] == [("a", 8), ("b", 4), ("a", 1)]

    async def test_unknown_experiment_is_a_404(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/experiments/nope/metrics/revisions")).status_code == 404


async def test_the_page_says_a_backfill_is_not_corrected(client: httpx.AsyncClient) -> None:
    await create(client, "import", conversion_delay_days=3)
    today = datetime.now(UTC).date()
    await post(
        client, "import", [(v, today - timedelta(days=k), 100, 4) for k in (1, 2) for v in "ab"]
    )
    page = (await client.get("/ui/experiments/import")).text
    assert 'id="delay-curve"' in page
    assert "no correction" in page
