"""POST /metrics/ and POST /metrics/batch: the original contract, upserts, bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mabapi.schemas import MAX_COUNT
from tests.fixtures.factories import metric, post_metric


async def metric_rows(client: httpx.AsyncClient, experiment_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/experiments/{experiment_id}/metrics")
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["metrics"]
    return rows


class TestOriginalReadme:
    async def test_post_metric_answers_exactly_like_the_original(
        self, client: httpx.AsyncClient
    ) -> None:
        # Verbatim body of the original README's curl example.
        response = await client.post(
            "/metrics/",
            content=(
                '{"experiment_id": "homepage_test", "variant_id": "control", '
                '"date": "2023-07-15", "impressions": 1000, "successes": 120}'
            ),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200
        assert response.json() == {"status": "success"}

    async def test_allocation_example_has_the_documented_shape(
        self, client: httpx.AsyncClient
    ) -> None:
        await post_metric(client, variant_id="control", impressions=1000, successes=120)
        await post_metric(client, variant_id="variant1", impressions=1000, successes=150)
        response = await client.get("/allocations/homepage_test?for_date=2023-07-16")
        assert response.status_code == 200
        body = response.json()
        assert body["experiment_id"] == "homepage_test"
        assert body["date"] == "2023-07-16"
        assert set(body["allocations"]) == {"control", "variant1"}
        # P(variant1 best) = 0.97507 by the closed form (docs/STATISTICS.md); the
        # default exploration (0.1% over two variants) gives 0.05% + 99.9% x P(best).
        assert body["allocations"] == {"control": 2.5, "variant1": 97.5}
        assert body["probability_best"]["variant1"] == pytest.approx(0.975068, abs=1e-6)

    async def test_first_call_alone_on_a_fresh_database(self, client: httpx.AsyncClient) -> None:
        await post_metric(client)
        response = await client.get("/allocations/homepage_test?for_date=2023-07-16")
        assert response.status_code == 200
        assert response.json()["allocations"] == {"control": 100.0}


class TestUpsert:
    async def test_reposting_a_day_replaces_it(self, client: httpx.AsyncClient) -> None:
        assert (await post_metric(client, impressions=100, successes=10)).status_code == 200
        assert (await post_metric(client, impressions=200, successes=30)).status_code == 200
        rows = await metric_rows(client, "homepage_test")
        assert [(r["impressions"], r["successes"]) for r in rows] == [(200, 30)]

    async def test_retrying_the_same_row_counts_once(self, client: httpx.AsyncClient) -> None:
        for _ in range(3):
            assert (await post_metric(client)).status_code == 200
        rows = await metric_rows(client, "homepage_test")
        assert len(rows) == 1
        summary = (await client.get("/experiments/homepage_test/summary")).json()
        assert summary["variants"][0]["impressions"] == 1000

    async def test_auto_create_registers_experiment_and_variants(
        self, client: httpx.AsyncClient
    ) -> None:
        await post_metric(client, variant_id="control")
        await post_metric(client, variant_id="variant1")
        body = (await client.get("/experiments/homepage_test")).json()
        assert [(v["id"], v["is_control"]) for v in body["variants"]] == [
            ("control", True),
            ("variant1", False),
        ]
        assert body["status"] == "running"


class TestAutoCreateOff:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"auto_create": False}

    async def test_unknown_experiment_is_404_and_writes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await post_metric(client, experiment_id="nobody")
        assert response.status_code == 404
        assert "nobody" in response.json()["error"]["message"]
        assert (await client.get("/experiments/nobody")).status_code == 404

    async def test_unknown_variant_is_404(self, client: httpx.AsyncClient) -> None:
        created = await client.post("/experiments", json={"id": "e1", "variants": [{"id": "a"}]})
        assert created.status_code == 201
        response = await post_metric(client, experiment_id="e1", variant_id="zzz")
        assert response.status_code == 404
        assert "e1/zzz" in response.json()["error"]["message"]
        assert await metric_rows(client, "e1") == []
        assert (await post_metric(client, experiment_id="e1", variant_id="a")).status_code == 200


class TestBatch:
    async def test_batch_sets_every_row(self, client: httpx.AsyncClient) -> None:
        rows = [
            metric(variant_id=f"v{v}", date=f"2023-07-{day:02d}", impressions=100, successes=v)
            for v in range(3)
            for day in range(1, 11)
        ]
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "success", "rows": 30}
        assert len(await metric_rows(client, "homepage_test")) == 30

    async def test_ten_thousand_rows_in_one_call(self, client: httpx.AsyncClient) -> None:
        rows = [
            metric(
                variant_id=f"v{i % 50}",
                date=f"{2000 + i // 50 // 365}-01-01",
                impressions=10,
                successes=1,
            )
            for i in range(10_000)
        ]
        # Make every key distinct: 50 variants x 200 distinct dates.
        for index, row in enumerate(rows):
            day = index // 50
            row["date"] = f"{2000 + day // 28}-{1 + (day // 28) % 12:02d}-{1 + day % 28:02d}"
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 200, response.text
        summary = (await client.get("/experiments/homepage_test/summary")).json()
        assert sum(v["impressions"] for v in summary["variants"]) == 100_000

    async def test_one_bad_row_rejects_the_whole_batch(self, client: httpx.AsyncClient) -> None:
        rows = [metric(variant_id="a"), metric(variant_id="b", impressions=5, successes=6)]
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "body.metrics.1"
        assert await metric_rows(client, "homepage_test") == []

    async def test_archived_experiment_in_batch_rejects_all(
        self, client: httpx.AsyncClient
    ) -> None:
        await post_metric(client, experiment_id="old")
        assert (await client.post("/experiments/old/archive")).status_code == 200
        rows = [metric(experiment_id="fresh"), metric(experiment_id="old", date="2023-07-16")]
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 409
        assert await metric_rows(client, "fresh") == []
        assert len(await metric_rows(client, "old")) == 1

    async def test_duplicate_keys_in_one_batch_are_refused(self, client: httpx.AsyncClient) -> None:
        rows = [metric(), metric(impressions=5, successes=1)]
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 422
        assert "metrics[0] and metrics[1]" in response.json()["error"]["message"]

    @pytest.mark.parametrize(
        "body", [{"metrics": []}, {"metrics": [metric()] * 0}, {}, {"rows": [metric()]}]
    )
    async def test_empty_or_misnamed_batch(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        assert (await client.post("/metrics/batch", json=body)).status_code == 422

    async def test_more_than_ten_thousand_rows_is_refused(self, client: httpx.AsyncClient) -> None:
        rows = [metric(variant_id=f"v{i}") for i in range(10_001)]
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 422
        assert "10000" in response.text
        assert await metric_rows(client, "homepage_test") == []


MAX = MAX_COUNT

BAD_METRICS: list[tuple[str, dict[str, Any], str]] = [
    ("successes above impressions", metric(impressions=10, successes=11), "body"),
    ("negative impressions", metric(impressions=-1, successes=0), "body.impressions"),
    ("negative successes", metric(successes=-5), "body.successes"),
    ("impressions beyond 10^12", metric(impressions=MAX + 1, successes=0), "body.impressions"),
    ("successes beyond 10^12", metric(impressions=MAX, successes=MAX + 1), "body.successes"),
    ("2^53 impressions (totals would pass BIGINT)", metric(impressions=2**53), "body.impressions"),
    ("dot id", metric(experiment_id="."), "body.experiment_id"),
    ("dot-dot id", metric(variant_id=".."), "body.variant_id"),
    ("boolean count", metric(impressions=True), "body.impressions"),
    ("string count", {**metric(), "impressions": "1000"}, "body.impressions"),
    ("float count", {**metric(), "impressions": 1e3}, "body.impressions"),
    ("fractional count", {**metric(), "successes": 1.5}, "body.successes"),
    ("null count", {**metric(), "successes": None}, "body.successes"),
    ("malformed date", metric(date="15/07/2023"), "body.date"),
    ("impossible date", metric(date="2023-02-30"), "body.date"),
    ("month 13", metric(date="2023-13-01"), "body.date"),
    ("date with time", metric(date="2023-07-15T00:00:00"), "body.date"),
    ("numeric date", {**metric(), "date": 20230715}, "body.date"),
    ("empty experiment id", metric(experiment_id=""), "body.experiment_id"),
    ("long experiment id", metric(experiment_id="e" * 129), "body.experiment_id"),
    ("space in id", metric(experiment_id="home page"), "body.experiment_id"),
    ("slash in id", metric(variant_id="a/b"), "body.variant_id"),
    ("NUL in id", metric(variant_id="a\x00b"), "body.variant_id"),
    ("unicode in id", metric(variant_id="contrôle"), "body.variant_id"),
    ("numeric id", {**metric(), "variant_id": 7}, "body.variant_id"),
    ("missing field", {k: v for k, v in metric().items() if k != "date"}, "body.date"),
    ("unknown field", {**metric(), "clicks": 3}, "body.clicks"),
]


class TestBadInput:
    @pytest.mark.parametrize(
        ("payload", "field"),
        [pytest.param(payload, field, id=name) for name, payload, field in BAD_METRICS],
    )
    async def test_rejected_with_a_clear_422_and_nothing_written(
        self, client: httpx.AsyncClient, payload: dict[str, Any], field: str
    ) -> None:
        response = await client.post("/metrics/", json=payload)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["message"]
        assert field in [detail["field"] for detail in error["details"]]
        listing = (await client.get("/experiments", params={"include_archived": True})).json()
        assert listing["total"] == 0

    async def test_limits_are_inclusive(self, client: httpx.AsyncClient) -> None:
        ok = await post_metric(client, variant_id="x" * 128, impressions=MAX, successes=MAX)
        assert ok.status_code == 200, ok.text

    async def test_message_says_what_to_fix(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/metrics/", json=metric(impressions=10, successes=11))
        assert (
            "successes (11) cannot exceed impressions (10)" in response.json()["error"]["message"]
        )

    # (b"\xff\xfe", a UTF-16 byte order mark, is a 415: tests/test_hostile_input.py.)
    @pytest.mark.parametrize("content", [b"{", b"not json", b"[]", b"null", b'"text"', b""])
    async def test_not_a_json_object(self, client: httpx.AsyncClient, content: bytes) -> None:
        response = await client.post(
            "/metrics/", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_request"

    async def test_oversized_body_is_413_before_parsing(self, client: httpx.AsyncClient) -> None:
        body = b'{"experiment_id": "' + b"a" * 2_000_000 + b'"}'
        response = await client.post(
            "/metrics/", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

    async def test_oversized_chunked_body_is_413(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> Any:
            for _ in range(40):
                yield b"x" * 65_536

        response = await client.post(
            "/metrics/", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413

    async def test_small_chunked_body_is_accepted(self, client: httpx.AsyncClient) -> None:
        import json

        payload = json.dumps(metric()).encode()

        async def chunks() -> Any:
            yield payload[:10]
            yield payload[10:]

        response = await client.post(
            "/metrics/", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text

    async def test_unknown_route_uses_the_error_shape(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/no/such/thing")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"

    async def test_wrong_method(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/metrics/")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"


class TestVariantCap:
    async def test_auto_registration_stops_at_100_variants(self, client: httpx.AsyncClient) -> None:
        rows = [metric(experiment_id="wide", variant_id=f"v{i}") for i in range(101)]
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 409
        assert "more than 100 variants" in response.json()["error"]["message"]
        assert (await client.get("/experiments/wide")).status_code == 404  # rolled back
        ok = await client.post("/metrics/batch", json={"metrics": rows[:100]})
        assert ok.status_code == 200


class TestPaging:
    async def _seed(self, client: httpx.AsyncClient) -> None:
        rows = [
            metric(experiment_id="paged", variant_id=v, date=f"2024-01-{d:02d}",
                   impressions=100 + d, successes=d)
            for d in range(1, 26) for v in ("a", "b")
        ]  # fmt: skip
        rows += [dict(row, segment="mobile") for row in rows[:6]]
        assert (await client.post("/metrics/batch", json={"metrics": rows})).status_code == 200
        # A second post of the first three days: three revisions more (new values).
        again = [dict(row, successes=row["successes"] + 1) for row in rows[:6]]
        assert (await client.post("/metrics/batch", json={"metrics": again})).status_code == 200

    async def _walk(
        self, client: httpx.AsyncClient, path: str, key: str, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        items: list[dict[str, Any]] = []
        cursor, pages = None, 0
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor is not None:
                params["cursor"] = cursor
            response = await client.get(path, params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            assert len(body[key]) <= limit
            items += body[key]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                return items, pages

    async def test_pages_of_daily_rows_add_up_to_all_of_them_once(
        self, client: httpx.AsyncClient
    ) -> None:
        await self._seed(client)
        everything = (await client.get("/experiments/paged/metrics")).json()
        assert everything["next_cursor"] is None
        assert len(everything["metrics"]) == 56
        paged, pages = await self._walk(client, "/experiments/paged/metrics", "metrics", 7)
        assert pages == 8
        assert paged == everything["metrics"]

    async def test_pages_of_revisions_add_up_to_all_of_them_once(
        self, client: httpx.AsyncClient
    ) -> None:
        await self._seed(client)
        path = "/experiments/paged/metrics/revisions"
        everything = (await client.get(path)).json()["revisions"]
        assert len(everything) == 62
        paged, pages = await self._walk(client, path, "revisions", 10)
        assert pages == 7
        assert paged == everything

    async def test_the_default_page_and_the_largest_limit(self, client: httpx.AsyncClient) -> None:
        rows = [
            metric(experiment_id="big", variant_id=f"v{n % 50}",
                   date=f"{2000 + n // 600}-{1 + n // 50 % 12:02d}-01")
            for n in range(1500)
        ]  # fmt: skip
        assert (await client.post("/metrics/batch", json={"metrics": rows})).status_code == 200
        first = (await client.get("/experiments/big/metrics")).json()
        assert len(first["metrics"]) == 1000
        assert first["next_cursor"] is not None
        rest = (
            await client.get("/experiments/big/metrics", params={"cursor": first["next_cursor"]})
        ).json()
        assert len(rest["metrics"]) == 500
        assert rest["next_cursor"] is None
        assert (await client.get("/experiments/big/metrics?limit=10000")).status_code == 200
        too_many = await client.get("/experiments/big/metrics?limit=10001")
        assert too_many.status_code == 422

    @pytest.mark.parametrize(
        "cursor", ["nonsense", "W10=", "WyJ4IiwgMSwgMl0=", "WyIyMDI0LTAxLTAxIiwgImEiXQ==", "!!"]
    )
    async def test_a_cursor_this_api_did_not_give_is_a_422(
        self, client: httpx.AsyncClient, cursor: str
    ) -> None:
        await self._seed(client)
        for path in ("/experiments/paged/metrics", "/experiments/paged/metrics/revisions"):
            response = await client.get(path, params={"cursor": cursor})
            assert response.status_code == 422, response.text
