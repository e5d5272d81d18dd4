"""Per-experiment policy settings, value metrics and the grown summary, over the API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures.factories import post_metric


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    payload = {"id": "exp", "variants": [{"id": "control"}, {"id": "b"}, {"id": "c"}], **body}
    response = await client.post("/experiments", json=payload)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def allocation(client: httpx.AsyncClient, day: str = "2024-02-01") -> dict[str, Any]:
    response = await client.get(f"/allocations/exp?for_date={day}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def seed_days(client: httpx.AsyncClient, days: int = 10) -> None:
    rows = [
        {
            "experiment_id": "exp",
            "variant_id": v,
            "date": f"2024-01-{d:02d}",
            "impressions": 1000,
            "successes": s,
        }
        for d in range(1, days + 1)
        for v, s in (("control", 100), ("b", 120), ("c", 95))
    ]
    response = await client.post("/metrics/batch", json={"metrics": rows})
    assert response.status_code == 200, response.text


class TestSettingsValidation:
    async def test_defaults_are_shown(self, client: httpx.AsyncClient) -> None:
        body = await create(client)
        assert body["metric_kind"] == "conversion"
        assert body["higher_is_better"] is True
        assert body["settings"]["policy"]["algorithm"] == "thompson"
        assert body["settings"]["policy"]["floor"] == 0.0
        assert body["settings"]["policy"]["exploration"] == 0.001
        assert body["settings"]["stop_rule"] == {
            "probability_threshold": 0.975,
            "value_remaining_threshold": 0.01,
            "min_days": 7,
            "equivalence_margin": 0.01,
            "ship_loss_threshold": 0.005,
        }

    @pytest.mark.parametrize(
        ("settings", "field"),
        [
            ({"policy": {"algorithm": "magic"}}, "algorithm"),
            ({"policy": {"floor": 1.0}}, "floor"),
            ({"policy": {"floor": -0.01}}, "floor"),
            ({"policy": {"reserved": {"control": 1.2}}}, "reserved"),
            ({"policy": {"reserved": {"control": 0.6, "b": 0.5}}}, "policy"),
            ({"policy": {"reserved": {"ghost": 0.2}}}, "body"),
            ({"policy": {"burn_in": {"units": -1}}}, "units"),
            ({"policy": {"max_change": 0}}, "max_change"),
            ({"policy": {"window_days": 0}}, "window_days"),
            ({"policy": {"half_life_days": -3}}, "half_life_days"),
            ({"policy": {"epsilon": 2}}, "epsilon"),
            ({"policy": {"top_two_beta": 1}}, "top_two_beta"),
            ({"prior": {"alpha": 0}}, "alpha"),
            ({"prior": {"beta": -1}}, "beta"),
            ({"stop_rule": {"probability_threshold": 0.3}}, "probability_threshold"),
            ({"stop_rule": {"min_days": -1}}, "min_days"),
            ({"policy": {"flour": 0.1}}, "flour"),
        ],
    )
    async def test_bad_settings_are_422_with_the_field(
        self, client: httpx.AsyncClient, settings: dict[str, Any], field: str
    ) -> None:
        response = await client.post(
            "/experiments",
            json={"id": "exp", "variants": [{"id": "control"}, {"id": "b"}], "settings": settings},
        )
        assert response.status_code == 422, response.text
        fields = " ".join(detail["field"] for detail in response.json()["error"]["details"])
        assert field in fields
        assert (await client.get("/experiments")).json()["total"] == 0

    async def test_patch_settings_validates_reserved_variants(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        bad = await client.patch(
            "/experiments/exp", json={"settings": {"policy": {"reserved": {"zz": 0.1}}}}
        )
        assert bad.status_code == 422
        assert "zz" in bad.json()["error"]["message"]
        good = await client.patch(
            "/experiments/exp",
            json={"settings": {"policy": {"algorithm": "top_two_thompson"}}},
        )
        assert good.status_code == 200
        assert good.json()["algorithm"] == "top_two_thompson"


class TestPoliciesOverTheApi:
    @pytest.mark.parametrize(
        "algorithm", ["thompson", "top_two_thompson", "ucb1", "epsilon_greedy", "uniform"]
    )
    async def test_each_policy_answers(self, client: httpx.AsyncClient, algorithm: str) -> None:
        await create(client, settings={"policy": {"algorithm": algorithm}})
        await seed_days(client)
        body = await allocation(client)
        assert body["algorithm"] == algorithm
        assert sum(body["allocations"].values()) == pytest.approx(100.0)
        if algorithm != "uniform":
            assert max(body["allocations"], key=body["allocations"].get) == "b"

    @pytest.mark.parametrize(
        "settings",
        [{"policy": {"algorithm": "uniform"}}, {"policy": {"reserved": {"control": 0.2}}}],
    )
    async def test_probability_best_is_always_the_true_one(
        self, client: httpx.AsyncClient, settings: dict[str, Any]
    ) -> None:
        await create(client, settings=settings)
        await seed_days(client)
        body = await allocation(client)
        assert body["probability_best"]["b"] > 0.99
        assert sum(body["probability_best"].values()) == pytest.approx(1.0)

    async def test_reserved_control_share(self, client: httpx.AsyncClient) -> None:
        await create(client, settings={"policy": {"reserved": {"control": 0.2}}})
        await seed_days(client)
        body = await allocation(client)
        assert body["allocations"]["control"] == 20.0

    async def test_burn_in_keeps_an_even_split(self, client: httpx.AsyncClient) -> None:
        await create(client, settings={"policy": {"burn_in": {"days": 20}}})
        await seed_days(client)
        body = await allocation(client)
        assert body["burned_in"] is False
        assert body["allocations"] == {"control": 33.4, "b": 33.3, "c": 33.3}

    async def test_paused_variant_gets_nothing(self, client: httpx.AsyncClient) -> None:
        await create(client)
        await seed_days(client)
        response = await client.patch("/experiments/exp/variants/b", json={"active": False})
        assert response.status_code == 200
        body = await allocation(client)
        assert body["allocations"]["b"] == 0.0
        assert body["allocations"]["control"] + body["allocations"]["c"] == pytest.approx(100.0)
        resumed = await client.patch("/experiments/exp/variants/b", json={"active": True})
        assert resumed.status_code == 200
        assert (await allocation(client))["allocations"]["b"] > 90

    async def test_patch_variant_errors(self, client: httpx.AsyncClient) -> None:
        await create(client)
        assert (
            await client.patch("/experiments/exp/variants/zz", json={"active": False})
        ).status_code == 404
        assert (await client.patch("/experiments/exp/variants/b", json={})).status_code == 422
        made = await client.patch("/experiments/exp/variants/b", json={"is_control": True})
        assert [v["id"] for v in made.json()["variants"] if v["is_control"]] == ["b"]

    async def test_max_change_limits_the_move_from_the_last_day(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, settings={"policy": {"max_change": 0.05}})
        await seed_days(client, days=1)
        first = await allocation(client, "2024-01-01")  # no data yet: even split
        second = await allocation(client, "2024-01-02")
        moves = [
            abs(second["allocations"][v] - first["allocations"][v]) for v in first["allocations"]
        ]
        assert max(moves) <= 5.0 + 0.1

    async def test_window_forgets_old_days(self, client: httpx.AsyncClient) -> None:
        await create(client, settings={"policy": {"window_days": 2}})
        await seed_days(client)
        body = await allocation(client, "2024-01-11")
        assert body["inputs"]["b"]["impressions"] == 2000

    async def test_half_life_down_weights_old_days(self, client: httpx.AsyncClient) -> None:
        await create(client, settings={"policy": {"half_life_days": 1}})
        await seed_days(client)
        body = await allocation(client, "2024-01-11")
        expected = 1000 * sum(0.5**k for k in range(10))
        assert body["inputs"]["b"]["impressions"] == pytest.approx(expected)

    async def test_lower_is_better(self, client: httpx.AsyncClient) -> None:
        await create(client, higher_is_better=False)
        await seed_days(client)
        body = await allocation(client)
        assert max(body["allocations"], key=body["allocations"].get) == "c"


class TestValueMetrics:
    async def test_value_experiment_needs_value_sums(self, client: httpx.AsyncClient) -> None:
        await create(client, metric_kind="value")
        response = await post_metric(client, experiment_id="exp", variant_id="b")
        assert response.status_code == 422
        assert "value_sum" in response.json()["error"]["message"]

    @pytest.mark.parametrize(
        "extra",
        [
            {"value_sum": 10.0},
            {"value_sum": 100.0, "value_sum_squares": 1.0},
            {"value_sum": float("nan"), "value_sum_squares": 1.0},
            {"value_sum": 1.0, "value_sum_squares": -1.0},
        ],
    )
    async def test_bad_value_sums(self, client: httpx.AsyncClient, extra: dict[str, float]) -> None:
        row = {
            "experiment_id": "exp",
            "variant_id": "b",
            "date": "2024-01-01",
            "impressions": 10,
            "successes": 1,
            **extra,
        }
        response = await client.post(
            "/metrics/",
            content=json.dumps(row, allow_nan=True),  # NaN is what a buggy client sends
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422

    async def test_revenue_allocation_and_summary(self, client: httpx.AsyncClient) -> None:
        await create(client, metric_kind="value")
        rng = np.random.default_rng(0)
        rows = []
        for d in range(1, 11):
            for variant, (rate, scale) in {
                "control": (0.05, 40.0),
                "b": (0.045, 60.0),
                "c": (0.04, 45.0),
            }.items():
                buyers = rng.binomial(1000, rate)
                values = rng.lognormal(np.log(scale), 0.5, buyers)
                rows.append(
                    {
                        "experiment_id": "exp",
                        "variant_id": variant,
                        "date": f"2024-01-{d:02d}",
                        "impressions": 1000,
                        "successes": int(buyers),
                        "value_sum": float(values.sum()),
                        "value_sum_squares": float((values**2).sum()),
                    }
                )
        assert (await client.post("/metrics/batch", json={"metrics": rows})).status_code == 200
        body = await allocation(client)
        assert max(body["allocations"], key=body["allocations"].get) == "b"
        summary = (await client.get("/experiments/exp/summary")).json()
        assert summary["metric_kind"] == "value"
        by_id = {v["variant_id"]: v for v in summary["variants"]}
        mean_b = by_id["b"]["value_sum"] / by_id["b"]["impressions"]
        assert by_id["b"]["mean"] == pytest.approx(mean_b)
        assert by_id["b"]["posterior_mean"] == pytest.approx(mean_b, rel=0.01)
        assert summary["gain_vs_even_split"]["unit"] == "value"


class TestSummary:
    async def test_summary_grows_the_decision_fields(self, client: httpx.AsyncClient) -> None:
        await create(client)
        await seed_days(client)
        for day in ("2024-01-01", "2024-01-05", "2024-01-10"):
            await allocation(client, day)
        summary = (await client.get("/experiments/exp/summary")).json()
        by_id = {v["variant_id"]: v for v in summary["variants"]}
        assert by_id["control"]["probability_beats_control"] is None
        assert by_id["b"]["probability_beats_control"] > 0.99
        assert by_id["b"]["uplift"]["lower"] > 0
        assert by_id["b"]["expected_loss"] < by_id["c"]["expected_loss"]
        assert by_id["b"]["stratified"]["mean"] == pytest.approx(0.12)
        assert summary["days_of_data"] == 10
        assert summary["recommendation"]["action"] in {"continue", "stop_winner"}
        assert summary["value_remaining"] is not None
        assert summary["gain_vs_even_split"]["mean"] == pytest.approx(0.0, abs=1e-6)
        srm = summary["sample_ratio_mismatch"]
        assert srm is not None
        # Even traffic was posted whatever was served on those days: that is a mismatch.
        assert srm["mismatch"] is True

    async def test_clear_winner_is_recommended(self, client: httpx.AsyncClient) -> None:
        await create(client)
        rows = [
            {
                "experiment_id": "exp",
                "variant_id": v,
                "date": f"2024-01-{d:02d}",
                "impressions": 20_000,
                "successes": s,
            }
            for d in range(1, 15)
            for v, s in (("control", 2000), ("b", 2600), ("c", 1900))
        ]
        assert (await client.post("/metrics/batch", json={"metrics": rows})).status_code == 200
        summary = (await client.get("/experiments/exp/summary")).json()
        assert summary["recommendation"]["action"] == "stop_winner"
        assert summary["recommendation"]["winner"] == "b"
        assert "b wins" in summary["recommendation"]["reason"]


class TestPriorBounds:
    @pytest.mark.parametrize("prior", [{"alpha": 1e-4}, {"beta": 5e-324}, {"kappa": 2e9}])
    async def test_out_of_range_priors_are_422(
        self, client: httpx.AsyncClient, prior: dict[str, float]
    ) -> None:
        response = await client.post("/experiments", json={"id": "p", "settings": {"prior": prior}})
        assert response.status_code == 422
        assert "prior" in response.json()["error"]["message"]


class TestUpliftNearZeroControl:
    """Found by schemathesis: a control whose draws can be exactly 0 (a 0.001 prior, no
    successes) made the relative uplift infinite, answered as null among numbers."""

    async def test_uplift_is_numbers_or_absent(self, client: httpx.AsyncClient) -> None:
        created = await client.post(
            "/experiments",
            json={
                "id": "z",
                "variants": [{"id": "control"}, {"id": "b"}],
                "settings": {"prior": {"alpha": 0.001, "beta": 0.001}},
            },
        )
        assert created.status_code == 201, created.text
        for variant, successes in (("control", 0), ("b", 10)):
            response = await client.post(
                "/metrics/",
                json={
                    "experiment_id": "z",
                    "variant_id": variant,
                    "date": "2024-01-01",
                    "impressions": 1_000_000,
                    "successes": successes,
                },
            )
            assert response.status_code == 200, response.text
        summary = (await client.get("/experiments/z/summary")).json()
        b = next(v for v in summary["variants"] if v["variant_id"] == "b")
        assert b["uplift"] is None or all(
            isinstance(b["uplift"][k], float) for k in ("mean", "lower", "upper")
        )


class TestAutoForgetting:
    @staticmethod
    async def post_days(client: httpx.AsyncClient, rates: list[tuple[float, float]]) -> None:
        rng = np.random.default_rng(4)
        rows = []
        for day, (a, b) in enumerate(rates):
            for variant, rate in (("control", a), ("b", b), ("c", a)):
                rows.append({
                    "experiment_id": "exp", "variant_id": variant,
                    "date": str(np.datetime64("2024-01-01") + day),
                    "impressions": 5000, "successes": int(rng.binomial(5000, rate)),
                })  # fmt: skip
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 200, response.text

    async def test_keeps_everything_while_nothing_changes(self, client: httpx.AsyncClient) -> None:
        await create(client, settings={"policy": {"forgetting": "auto"}})
        await self.post_days(client, [(0.05, 0.06)] * 40)
        body = await allocation(client, "2024-02-10")
        assert body["inputs"]["b"]["impressions"] == 40 * 5000

    async def test_forgets_what_came_before_a_change(self, client: httpx.AsyncClient) -> None:
        await create(client, settings={"policy": {"forgetting": "auto"}})
        await self.post_days(client, [(0.05, 0.06)] * 30 + [(0.06, 0.05)] * 20)
        body = await allocation(client, "2024-02-20")  # the day after the 50th
        kept = body["inputs"]["b"]["impressions"] / 5000
        assert 17 <= kept <= 23  # the 20 days since the change, give or take the estimate
        # With the change forgotten, the variant that is better now leads.
        assert body["allocations"]["control"] > body["allocations"]["b"]

    async def test_other_values_are_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/experiments", json={"id": "x", "settings": {"policy": {"forgetting": "sometimes"}}}
        )
        assert response.status_code == 422
        assert "forgetting" in response.text


class TestAdviceKinds:
    """Which kind of answer the summary's advice is, and when the next one is due."""

    async def _post(self, client: httpx.AsyncClient, days: int, rates: dict[str, int]) -> None:
        rows = [
            {"experiment_id": "exp", "variant_id": v, "date": f"2024-01-{d:02d}",
             "impressions": 20_000, "successes": s}
            for d in range(1, days + 1)
            for v, s in rates.items()
        ]  # fmt: skip
        response = await client.post("/metrics/batch", json={"metrics": rows})
        assert response.status_code == 200, response.text

    async def test_equal_variants_are_told_to_ship_one_without_a_claim(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await self._post(client, 28, {"control": 2000, "b": 2001, "c": 1999})
        recommendation = (await client.get("/experiments/exp/summary")).json()["recommendation"]
        assert recommendation["action"] == "stop_ship", recommendation
        assert recommendation["claims_better"] is False
        assert recommendation["winner"] in {"control", "b", "c"}
        assert recommendation["days_to_decision"] == 0
        assert f"ship {recommendation['winner']}" in recommendation["reason"]

    async def test_continue_says_about_how_many_more_days(self, client: httpx.AsyncClient) -> None:
        await create(client)
        await self._post(client, 3, {"control": 2000, "b": 2060, "c": 1990})
        recommendation = (await client.get("/experiments/exp/summary")).json()["recommendation"]
        assert recommendation["action"] == "continue"
        days = recommendation["days_to_decision"]
        assert isinstance(days, int)
        assert days >= 4
        assert f"about {days} more days at today's traffic" in recommendation["reason"]

    async def test_ship_advice_can_be_turned_off(self, client: httpx.AsyncClient) -> None:
        await create(client, settings={"stop_rule": {"ship_loss_threshold": 0}})
        await self._post(client, 28, {"control": 2000, "b": 2001, "c": 1999})
        recommendation = (await client.get("/experiments/exp/summary")).json()["recommendation"]
        assert recommendation["action"] == "continue"
