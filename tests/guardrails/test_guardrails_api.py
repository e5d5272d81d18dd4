"""Guardrails over the API, on both databases: declaring them, their data (reported rows
and real-time conversions), a breach that stops or floors a variant and stays until
cleared, what allocations and the summary show, and the event announced once."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from mabapi.db.transactions import background_transaction
from mabapi.experiments.lifecycle import require_experiment
from mabapi.experiments.models import GuardrailBreach
from mabapi.guardrails import service as guardrails
from mabapi.metrics.schemas import MetricIn
from mabapi.runtime import runtime_of
from mabapi.webhooks.models import Delivery

REFUNDS = {"metric_id": "refunds", "max_relative_harm": 0.05, "probability": 0.95}
FIRST = date(2024, 3, 1)


async def create(client: httpx.AsyncClient, *guardrails: dict[str, Any], **extra: Any) -> None:
    response = await client.post(
        "/experiments",
        json={
            "id": "e",
            "variants": [{"id": "a", "is_control": True}, {"id": "b"}, {"id": "c"}],
            "guardrails": list(guardrails),
            **extra,
        },
    )
    assert response.status_code == 201, response.text


def rows(days: int, **rates: tuple[int, int]) -> list[dict[str, Any]]:
    """Primary rows (even, no difference) and refunds rows with `rates`: variant ->
    (units, refunds) per day."""
    out = []
    for d in range(days):
        day = str(FIRST + timedelta(days=d))
        for variant, (units, refunds) in rates.items():
            out.append(
                {"experiment_id": "e", "variant_id": variant, "date": day, "impressions": units,
                 "successes": units // 10}
            )  # fmt: skip
            out.append(
                {"experiment_id": "e", "variant_id": variant, "date": day, "impressions": units,
                 "successes": refunds, "metric_id": "refunds"}
            )  # fmt: skip
    return out


async def post(client: httpx.AsyncClient, metrics: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/metrics/batch", json={"metrics": metrics})


async def allocation(client: httpx.AsyncClient, days_after_first: int) -> dict[str, Any]:
    day = FIRST + timedelta(days=days_after_first)
    response = await client.get("/allocations/e", params={"for_date": str(day)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


HARMFUL = {"a": (5000, 100), "b": (5000, 100), "c": (5000, 160)}  # c: +60% refunds


class TestDeclaring:
    async def test_defaults_and_the_round_trip(self, client: httpx.AsyncClient) -> None:
        await create(client, {"metric_id": "refunds"})
        [guardrail] = (await client.get("/experiments/e")).json()["guardrails"]
        assert guardrail == {
            "metric_id": "refunds",
            "kind": "conversion",
            "higher_is_better": False,
            "max_relative_harm": 0.0,
            "probability": 0.95,
            "action": "stop",
            "min_units": 100,
        }
        patched = await client.patch("/experiments/e", json={"guardrails": [REFUNDS]})
        assert patched.status_code == 200
        assert patched.json()["guardrails"][0]["max_relative_harm"] == 0.05
        cleared = await client.patch("/experiments/e", json={"guardrails": []})
        assert cleared.json()["guardrails"] == []

    @pytest.mark.parametrize(
        ("guardrails", "fragment"),
        [
            ([{"metric_id": "r"}, {"metric_id": "r"}], "unique"),
            ([{"metric_id": "r", "probability": 1.0}], "probability"),
            ([{"metric_id": "r", "max_relative_harm": 1.0}], "max_relative_harm"),
            ([{"metric_id": "r", "action": "pause"}], "action"),
            ([{"metric_id": "bad id!"}], "metric_id"),
        ],
    )
    async def test_bad_guardrails_are_a_422_and_write_nothing(
        self, client: httpx.AsyncClient, guardrails: list[dict[str, Any]], fragment: str
    ) -> None:
        response = await client.post("/experiments", json={"id": "e", "guardrails": guardrails})
        assert response.status_code == 422, response.text
        assert fragment in response.text
        assert (await client.get("/experiments/e")).status_code == 404


class TestData:
    async def test_rows_for_an_undeclared_metric_are_a_422_and_write_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        response = await post(client, rows(1, a=(100, 1)))
        assert response.status_code == 422, response.text
        assert "no guardrail 'refunds'" in response.text
        assert (await client.get("/experiments/e/metrics")).json()["metrics"] == []

    async def test_single_posts_name_the_metric_and_the_primary_is_untouched(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, REFUNDS)
        for metric in rows(1, a=(1000, 20)):
            assert (await client.post("/metrics/", json=metric)).status_code == 200
        summary = (await client.get("/experiments/e/summary")).json()
        a = next(v for v in summary["variants"] if v["variant_id"] == "a")
        assert (a["impressions"], a["successes"]) == (1000, 100)  # the primary metric
        [refunds] = summary["guardrails"]
        ga = next(v for v in refunds["variants"] if v["variant_id"] == "a")
        assert (ga["units"], ga["successes"], ga["mean"]) == (1000, 20, 0.02)

    async def test_real_time_conversions_count_once_per_unit_and_metric(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, REFUNDS)
        unit = (await client.post("/experiments/e/assign", json={"unit_id": "u1"})).json()
        for _ in range(2):
            response = await client.post(
                "/experiments/e/conversions", json={"unit_id": "u1", "metric_id": "refunds"}
            )
            assert response.status_code == 200, response.text
        assert response.json()["counted"] is False
        primary = await client.post("/experiments/e/conversions", json={"unit_id": "u1"})
        assert primary.json()["counted"] is True  # the primary metric is its own
        never = await client.post(
            "/experiments/e/conversions", json={"unit_id": "u2", "metric_id": "refunds"}
        )
        assert never.status_code == 409
        unknown = await client.post(
            "/experiments/e/conversions", json={"unit_id": "u1", "metric_id": "nope"}
        )
        assert unknown.status_code == 422
        summary = (await client.get("/experiments/e/summary")).json()
        mine = next(
            v for v in summary["guardrails"][0]["variants"] if v["variant_id"] == unit["variant_id"]
        )
        assert (mine["units"], mine["successes"]) == (1, 1)
        # A reset starts guardrail data over too.
        assert (await client.post("/experiments/e/reset")).status_code == 200
        summary = (await client.get("/experiments/e/summary")).json()
        assert all(v["successes"] == 0 for v in summary["guardrails"][0]["variants"])

    async def test_value_guardrails_count_each_event_once(self, client: httpx.AsyncClient) -> None:
        await create(client, {"metric_id": "refund_amount", "kind": "value"})
        unit = (await client.post("/experiments/e/assign", json={"unit_id": "u1"})).json()
        body = {"unit_id": "u1", "metric_id": "refund_amount", "value": 12.5, "event_id": "r1"}
        first = await client.post("/experiments/e/conversions", json=body)
        again = await client.post("/experiments/e/conversions", json=body)
        second = await client.post(
            "/experiments/e/conversions", json={**body, "event_id": "r2", "value": 7.5}
        )
        assert [r.json()["counted"] for r in (first, again, second)] == [True, False, True]
        missing = await client.post(
            "/experiments/e/conversions", json={"unit_id": "u1", "metric_id": "refund_amount"}
        )
        assert missing.status_code == 422
        summary = (await client.get("/experiments/e/summary")).json()
        mine = next(
            v for v in summary["guardrails"][0]["variants"] if v["variant_id"] == unit["variant_id"]
        )
        assert mine["mean"] == 20.0


class TestBreaches:
    async def test_a_harmful_variant_is_stopped_and_stays_stopped_until_cleared(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, REFUNDS)
        assert (await post(client, rows(7, **HARMFUL))).status_code == 200
        answer = await allocation(client, 7)
        assert answer["allocations"]["c"] == 0.0
        assert answer["probability_best"]["c"] == 0.0
        breach = answer["guardrails"]["c"]
        assert breach["metric_id"] == "refunds"
        assert breach["action"] == "stop"
        assert breach["since"] == str(FIRST + timedelta(days=7))
        assert breach["probability_harm"] > 0.999
        assert set(answer["guardrails"]) == {"c"}  # b does no harm; the control never breaches
        # Later days in which c does no harm: the breach is sticky.
        more = rows(7, a=(5000, 100), b=(5000, 100), c=(5000, 100))
        for row in more:
            row["date"] = str(date.fromisoformat(row["date"]) + timedelta(days=7))
        assert (await post(client, more)).status_code == 200
        assert (await allocation(client, 14))["allocations"]["c"] == 0.0
        # The summary shows it per variant, with the relative difference and P(harm).
        [refunds] = (await client.get("/experiments/e/summary")).json()["guardrails"]
        c = next(v for v in refunds["variants"] if v["variant_id"] == "c")
        assert c["breach"]["since"] == breach["since"]
        assert 0.2 < c["relative_difference"]["mean"] < 0.4
        assert c["relative_difference"]["lower"] > 0
        control = next(v for v in refunds["variants"] if v["variant_id"] == "a")
        assert control["relative_difference"] is None
        assert control["probability_harm"] is None
        # An admin clears it: c gets traffic again, and the record stays.
        cleared = await client.post("/experiments/e/guardrails/refunds/clear")
        assert cleared.json() == {"experiment_id": "e", "metric_id": "refunds", "cleared": 1}
        answer = await allocation(client, 14)
        assert answer["allocations"]["c"] > 0.0
        assert answer["guardrails"] == {}

    async def test_floor_leaves_the_variant_its_floor(self, client: httpx.AsyncClient) -> None:
        await create(
            client,
            {**REFUNDS, "action": "floor"},
            settings={"policy": {"floor": 0.05}},
        )
        assert (await post(client, rows(7, **HARMFUL))).status_code == 200
        answer = await allocation(client, 7)
        assert answer["guardrails"]["c"]["action"] == "floor"
        assert answer["allocations"]["c"] == 5.0
        assert answer["allocations"]["a"] + answer["allocations"]["b"] == 95.0

    async def test_no_breach_from_harmless_data_or_too_few_units(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, {**REFUNDS, "min_units": 50_000})
        assert (await post(client, rows(7, **HARMFUL))).status_code == 200
        assert (await allocation(client, 7))["guardrails"] == {}  # 35,000 units < 50,000
        patched = await client.patch("/experiments/e", json={"guardrails": [REFUNDS]})
        assert patched.status_code == 200
        # Checked on the data before the day planned: day 1 has no data yet to check.
        assert (await allocation(client, 0))["guardrails"] == {}
        assert (await allocation(client, 7))["guardrails"].keys() == {"c"}

    async def test_clearing_an_unknown_guardrail_is_a_404(self, client: httpx.AsyncClient) -> None:
        await create(client, REFUNDS)
        response = await client.post("/experiments/e/guardrails/nope/clear")
        assert response.status_code == 404
        assert "refunds" in response.text
        missing = await client.post("/experiments/zzz/guardrails/refunds/clear")
        assert missing.status_code == 404

    async def test_the_breach_is_recorded_and_announced_once(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        hook = await client.post(
            "/webhooks",
            json={"url": "https://93.184.216.34/hook", "events": ["guardrail.breached"]},
        )
        assert hook.status_code == 201, hook.text
        await create(client, REFUNDS)
        assert (await post(client, rows(7, **HARMFUL))).status_code == 200
        for day in (7, 7, 8, 9):
            await allocation(client, day)
        live = await client.get("/allocations/e")  # the real-time allocation too
        assert live.json()["live"]["c"] == 0.0
        async with background_transaction(runtime_of(app).sessionmaker) as session:
            breaches = await session.scalar(select(func.count()).select_from(GuardrailBreach))
            [delivery] = list(await session.scalars(select(Delivery)))
        assert breaches == 1
        assert delivery.event == "guardrail.breached"
        assert '"variant_id":"c"' in delivery.body
        assert '"probability_harm"' in delivery.body


class TestOneAnswer:
    """The summary never advises shipping a variant a guardrail has breached."""

    async def _breach(
        self, client: httpx.AsyncClient, action: str, harmful: str = "c"
    ) -> dict[str, Any]:
        """`harmful` breaches the refunds guardrail; c is far better on the primary."""
        await create(
            client,
            {**REFUNDS, "action": action},
            settings={"stop_rule": {"min_days": 0}},
        )
        refunds = {v: (5000, 160 if v == harmful else 100) for v in "abc"}
        await post(client, rows(10, **refunds))
        # c is also far better on the primary metric: it would be named the winner.
        better = [
            {"experiment_id": "e", "variant_id": "c", "date": str(FIRST + timedelta(days=d)),
             "impressions": 5000, "successes": 900}
            for d in range(10)
        ]  # fmt: skip
        await post(client, better)
        await allocation(client, 10)  # the check that records the breach
        response = await client.get("/experiments/e/summary")
        assert response.status_code == 200, response.text
        summary: dict[str, Any] = response.json()
        [report] = summary["guardrails"]
        [breached] = [v for v in report["variants"] if v["variant_id"] == harmful]
        assert breached["breach"] is not None
        return summary

    async def test_a_stopped_variant_is_never_the_winner_and_has_no_chance(
        self, client: httpx.AsyncClient
    ) -> None:
        summary = await self._breach(client, "stop")
        recommendation = summary["recommendation"]
        assert recommendation["winner"] != "c", recommendation
        [c] = [v for v in summary["variants"] if v["variant_id"] == "c"]
        assert c["probability_best"] == 0.0

    async def test_a_floored_leader_is_not_advised_to_ship(self, client: httpx.AsyncClient) -> None:
        summary = await self._breach(client, "floor")
        recommendation = summary["recommendation"]
        assert recommendation["action"] == "continue", recommendation
        assert recommendation["winner"] is None
        assert "breached a guardrail" in recommendation["reason"]

    @pytest.mark.parametrize("action", ["floor", "stop"])
    async def test_the_conclude_form_never_preselects_a_breached_variant(
        self, client: httpx.AsyncClient, action: str
    ) -> None:
        """c leads on the primary metric but breached: the dashboard's Conclude form
        preselects a variant the advice would let ship, not c."""
        await self._breach(client, action)
        page = await client.get("/ui/experiments/e")
        assert page.status_code == 200, page.text
        selected = re.findall(r'<option value="(\w+)" selected>', page.text)
        assert len(selected) == 1, selected
        assert selected[0] in ("a", "b"), selected

    async def test_the_winner_is_named_right_when_a_variant_before_it_is_stopped(
        self, client: httpx.AsyncClient
    ) -> None:
        """b (listed before c) breached and stopped; c is far better on the primary metric.
        The decision is among a and c: its winner must be reported as c, never as the
        variant in c's position among all variants (b, the stopped one)."""
        summary = await self._breach(client, "stop", harmful="b")
        recommendation = summary["recommendation"]
        assert recommendation["action"] == "stop_winner", recommendation
        assert recommendation["winner"] == "c"
        assert recommendation["claims_better"] is True
        assert "c wins" in recommendation["reason"]


class TestReadsDoNotWrite:
    """A breach is recorded (and announced) where data is written, at ingestion or by the
    watcher; a read that finds one the check has not recorded yet obeys it without
    writing anything."""

    @staticmethod
    async def counts(app: FastAPI) -> tuple[int, int]:
        async with background_transaction(runtime_of(app).sessionmaker) as session:
            breaches = await session.scalar(select(func.count()).select_from(GuardrailBreach))
            deliveries = await session.scalar(select(func.count()).select_from(Delivery))
        return int(breaches or 0), int(deliveries or 0)

    async def test_reads_obey_an_unrecorded_breach_and_write_nothing(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        await create(client, REFUNDS)
        hook = await client.post(
            "/webhooks",
            json={"url": "https://93.184.216.34/hook", "events": ["guardrail.breached"]},
        )
        assert hook.status_code == 201, hook.text
        # The harmful data arrives without the ingestion path (as if written by an older
        # process): nothing has checked it yet.
        harmful = [r for r in rows(7, **HARMFUL) if "metric_id" in r]
        async with background_transaction(runtime_of(app).sessionmaker) as session:
            experiment = await require_experiment(session, "e")
            await guardrails.record_rows(
                session, {"e": experiment}, [MetricIn.model_validate(r) for r in harmful]
            )
        assert await self.counts(app) == (0, 0)
        answer = await allocation(client, 7)
        assert answer["allocations"]["c"] == 0.0
        assert answer["guardrails"]["c"]["since"] == str(FIRST + timedelta(days=7))
        summary = (await client.get("/experiments/e/summary")).json()
        assert summary["recommendation"]["winner"] != "c"
        assert await self.counts(app) == (0, 0)  # the reads wrote no breach, no event
        # The next write checks the data and records the breach, announced once.
        assert (await post(client, rows(1, a=(5000, 100)))).status_code == 200
        assert await self.counts(app) == (1, 1)
        await allocation(client, 7)
        assert await self.counts(app) == (1, 1)
