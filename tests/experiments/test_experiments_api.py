"""Experiments CRUD, variants, archiving, daily rows and the summary."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from scipy import stats

from tests.fixtures.factories import create_experiment, post_metric


class TestCreate:
    async def test_create_and_read_back(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/experiments",
            json={
                "id": "checkout",
                "name": "Checkout button",
                "description": "Green vs blue",
                "variants": [{"id": "blue"}, {"id": "green", "name": "Green", "is_control": True}],
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["name"] == "Checkout button"
        assert [(v["id"], v["name"], v["is_control"]) for v in body["variants"]] == [
            ("blue", "blue", False),
            ("green", "Green", True),
        ]
        assert (await client.get("/experiments/checkout")).json() == body

    async def test_first_variant_is_control_when_none_is_named(
        self, client: httpx.AsyncClient
    ) -> None:
        body = await create_experiment(client, variants=("a", "b"))
        assert [v["is_control"] for v in body["variants"]] == [True, False]

    async def test_duplicate_id_is_409(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client)
        response = await client.post("/experiments", json={"id": "checkout"})
        assert response.status_code == 409
        assert "already taken" in response.json()["error"]["message"]

    @pytest.mark.parametrize(
        "payload",
        [
            {"id": "x", "variants": [{"id": "a"}, {"id": "a"}]},
            {
                "id": "x",
                "variants": [{"id": "a", "is_control": True}, {"id": "b", "is_control": True}],
            },
            {"id": "bad id"},
            {"id": "x", "name": ""},
            {"id": "x", "name": "bad\x00name"},
            {"id": "x", "status": "finished"},
            {"id": "x", "variants": [{"id": f"v{i}"} for i in range(101)]},
            {"id": "x", "owner": "me"},
            {"name": "no id"},
        ],
    )
    async def test_invalid_payloads_are_422(
        self, client: httpx.AsyncClient, payload: dict[str, Any]
    ) -> None:
        response = await client.post("/experiments", json=payload)
        assert response.status_code == 422, response.text
        assert (await client.get("/experiments")).json()["total"] == 0


class TestListAndPatch:
    async def test_pagination(self, client: httpx.AsyncClient) -> None:
        for index in range(5):
            await create_experiment(client, experiment_id=f"e{index}")
        first = (await client.get("/experiments?limit=2")).json()
        second = (await client.get("/experiments?limit=2&offset=2")).json()
        third = (await client.get("/experiments?limit=2&offset=4")).json()
        assert first["total"] == 5
        ids = [item["id"] for page in (first, second, third) for item in page["items"]]
        assert sorted(ids) == [f"e{i}" for i in range(5)]
        assert len(third["items"]) == 1

    @pytest.mark.parametrize("query", ["limit=0", "limit=201", "offset=-1", "status=bogus"])
    async def test_bad_paging_is_422(self, client: httpx.AsyncClient, query: str) -> None:
        assert (await client.get(f"/experiments?{query}")).status_code == 422

    async def test_patch_and_filter_by_status(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client, experiment_id="a")
        await create_experiment(client, experiment_id="b")
        response = await client.patch("/experiments/a", json={"status": "paused", "name": "A"})
        assert response.status_code == 200
        assert response.json()["status"] == "paused"
        assert response.json()["name"] == "A"
        paused = (await client.get("/experiments?status=paused")).json()
        assert [item["id"] for item in paused["items"]] == ["a"]

    @pytest.mark.parametrize(
        "patch", [{}, {"status": "gone"}, {"name": None}, {"id": "renamed"}, {"name": ""}]
    )
    async def test_bad_patch_is_422(self, client: httpx.AsyncClient, patch: dict[str, Any]) -> None:
        await create_experiment(client)
        response = await client.patch("/experiments/checkout", json=patch)
        assert response.status_code == 422
        assert (await client.get("/experiments/checkout")).json()["name"] == "checkout"

    async def test_patch_unknown_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.patch("/experiments/ghost", json={"name": "x"})
        assert response.status_code == 404


class TestVariantsAndArchive:
    async def test_add_variant_joins_the_allocation(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client, variants=("control",))
        response = await client.post("/experiments/checkout/variants", json={"id": "new"})
        assert response.status_code == 201
        assert [v["id"] for v in response.json()["variants"]] == ["control", "new"]
        allocation = (await client.get("/allocations/checkout?for_date=2024-01-01")).json()
        assert allocation["allocations"] == {"control": 50.0, "new": 50.0}

    async def test_duplicate_variant_and_second_control_are_409(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_experiment(client, variants=("control",))
        dup = await client.post("/experiments/checkout/variants", json={"id": "control"})
        assert dup.status_code == 409
        ctl = await client.post(
            "/experiments/checkout/variants", json={"id": "x", "is_control": True}
        )
        assert ctl.status_code == 409

    async def test_add_variant_to_unknown_experiment_is_404(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/experiments/ghost/variants", json={"id": "a"})
        assert response.status_code == 404

    async def test_archive_hides_and_blocks_metrics_restore_undoes(
        self, client: httpx.AsyncClient
    ) -> None:
        await post_metric(client)
        archived = await client.post("/experiments/homepage_test/archive")
        assert archived.status_code == 200
        assert archived.json()["archived"] is True
        assert (await client.get("/experiments")).json()["total"] == 0
        assert (await client.get("/experiments?include_archived=true")).json()["total"] == 1
        blocked = await post_metric(client, date="2023-07-16")
        assert blocked.status_code == 409
        assert "restore" in blocked.json()["error"]["message"]
        # Reads still work on an archived experiment.
        assert (await client.get("/allocations/homepage_test")).status_code == 200
        restored = await client.post("/experiments/homepage_test/restore")
        assert restored.json()["archived"] is False
        assert (await post_metric(client, date="2023-07-16")).status_code == 200


class TestMetricsAndSummary:
    async def test_daily_rows_filtered(self, client: httpx.AsyncClient) -> None:
        for day in (14, 15, 16):
            await post_metric(client, variant_id="control", date=f"2023-07-{day}")
            await post_metric(client, variant_id="b", date=f"2023-07-{day}")
        rows = (
            await client.get(
                "/experiments/homepage_test/metrics",
                params={"from": "2023-07-15", "to": "2023-07-16", "variant_id": "b"},
            )
        ).json()["metrics"]
        assert [(r["variant_id"], r["date"]) for r in rows] == [
            ("b", "2023-07-15"),
            ("b", "2023-07-16"),
        ]

    async def test_metrics_of_unknown_experiment_is_404(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/experiments/ghost/metrics")).status_code == 404

    async def test_summary_numbers_match_scipy(self, client: httpx.AsyncClient) -> None:
        await post_metric(client, variant_id="control", date="2023-07-14", impressions=600)
        await post_metric(client, variant_id="control", date="2023-07-15", impressions=400)
        await post_metric(client, variant_id="variant1", successes=150)
        await client.post("/experiments/homepage_test/variants", json={"id": "fresh"})
        body = (await client.get("/experiments/homepage_test/summary")).json()
        by_id = {v["variant_id"]: v for v in body["variants"]}
        control = by_id["control"]
        assert (control["impressions"], control["successes"]) == (1000, 240)
        assert control["conversion_rate"] == pytest.approx(0.24)
        reference = stats.beta(241, 761)
        assert control["posterior_mean"] == pytest.approx(reference.mean(), rel=1e-12)
        assert control["credible_interval"]["lower"] == pytest.approx(reference.ppf(0.025))
        assert control["credible_interval"]["upper"] == pytest.approx(reference.ppf(0.975))
        assert by_id["fresh"]["conversion_rate"] is None
        assert by_id["fresh"]["posterior_mean"] == pytest.approx(0.5)
        total = sum(v["probability_best"] for v in body["variants"])
        assert total == pytest.approx(1.0, abs=1e-12)
        # An untested variant under a uniform prior beats a 24% rate about 76% of the time.
        assert by_id["fresh"]["probability_best"] == pytest.approx(0.76, abs=0.01)
        assert by_id["control"]["probability_best"] > by_id["variant1"]["probability_best"]

    async def test_summary_of_unknown_is_404(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/experiments/ghost/summary")).status_code == 404
