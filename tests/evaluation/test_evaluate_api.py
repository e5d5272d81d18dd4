"""POST /experiments/{id}/evaluate on both databases: real-time units with their stored
propensities, reported days with their served (or observed) split, per-segment policies,
value metrics, support refused, bad policies refused with what to fix, and the bound on
groups read. Every number is recomputed here from the stored rows, unit by unit."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from mabapi.assignments.models import Assignment
from mabapi.db.transactions import background_transaction
from mabapi.evaluation import service
from mabapi.runtime import runtime_of

RATES = {"a": 0.05, "b": 0.12}


async def create(
    client: httpx.AsyncClient, variants: tuple[str, ...] = ("a", "b"), **extra: Any
) -> None:
    response = await client.post(
        "/experiments", json={"id": "e", "variants": [{"id": v} for v in variants], **extra}
    )
    assert response.status_code == 201, response.text


async def serve(
    client: httpx.AsyncClient, units: int, *, segments: bool = False, value: bool = False
) -> None:
    """Assign units in batches (the split moves between batches as conversions arrive)
    and convert each with its variant's rate."""
    rng = random.Random(7)
    for start in range(0, units, 500):
        items = [
            {"experiment_id": "e", "unit_id": f"u{i}"}
            | ({"segment": "mobile" if i % 3 == 0 else "desktop"} if segments else {})
            for i in range(start, start + 500)
        ]
        answer = await client.post("/assign/batch", json={"assignments": items})
        assert answer.status_code == 200, answer.text
        conversions = [
            {"experiment_id": "e", "unit_id": a["unit_id"]}
            | (
                {"value": round(rng.uniform(5, 50), 2), "event_id": f"x{a['unit_id']}"}
                if value
                else {}
            )
            for a in answer.json()["assignments"]
            if rng.random() < RATES[a["variant_id"]]
        ]
        if conversions:
            done = await client.post("/conversions/batch", json={"conversions": conversions})
            assert done.status_code == 200, done.text


async def stored_units(app: FastAPI) -> tuple[list[str], np.ndarray, np.ndarray, list[str | None]]:
    async with background_transaction(runtime_of(app).sessionmaker) as session:
        rows = list(
            await session.execute(
                select(
                    Assignment.variant_id,
                    Assignment.probability,
                    Assignment.converted_at,
                    Assignment.conversion_value,
                    Assignment.segment,
                ).where(Assignment.experiment_id == "e")
            )
        )
    variants = [r[0] for r in rows]
    p = np.array([r[1] for r in rows])
    reward = np.array(
        [(r[3] or 0.0) if r[3] is not None else float(r[2] is not None) for r in rows]
    )
    return variants, p, reward, [r[4] for r in rows]


async def evaluate(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/experiments/e/evaluate", json=body)


class TestRealTime:
    async def test_every_estimator_equals_the_per_unit_computation(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await serve(client, 3000)
        variants, p, reward, _ = await stored_units(app)
        answer = await evaluate(client, policy={"a": 0.5, "b": 0.5})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        w = 0.5 / p
        ipw = w * reward
        arm = np.array([v == "b" for v in variants])
        q = np.array([reward[~arm].mean(), reward[arm].mean()])
        dr = 0.5 * q.sum() + w * (reward - q[arm.astype(int)])
        assert body["estimates"]["ipw"]["value"] == pytest.approx(ipw.mean(), rel=1e-9)
        assert body["estimates"]["snipw"]["value"] == pytest.approx(ipw.sum() / w.sum(), rel=1e-9)
        assert body["estimates"]["dm"]["value"] == pytest.approx(0.5 * q.sum(), rel=1e-9)
        assert body["estimates"]["dr"]["value"] == pytest.approx(dr.mean(), rel=1e-9)
        assert body["estimator"] == "dr"
        assert body["value"] == body["estimates"]["dr"]["value"]
        low, high = body["interval"]
        assert low < body["value"] < high
        assert body["logged"] == {
            "value": pytest.approx(reward.mean()),
            "units": 3000,
            "real_time_units": 3000,
            "reported_units": 0,
        }
        d = body["diagnostics"]
        assert d["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w * w).sum())
        assert d["max_weight"] == pytest.approx(w.max())
        assert d["unsupported"] == []
        assert body["trustworthy"] is (
            d["effective_sample_size"] >= 300 and d["least_conversions"] >= 10
        )
        assert any("probability stored" in text for text in body["assumptions"])

    async def test_a_fixed_variant_and_the_chosen_estimator(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await serve(client, 1500)
        variants, p, reward, _ = await stored_units(app)
        answer = await evaluate(client, policy={"a": 0.0, "b": 1.0}, estimator="snipw")
        body = answer.json()
        on_b = np.array([v == "b" for v in variants])
        w = np.where(on_b, 1.0 / p, 0.0)
        assert body["value"] == pytest.approx((w * reward).sum() / w.sum(), rel=1e-9)
        assert body["estimator"] == "snipw"

    async def test_a_window_and_a_segment_select_the_units(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await serve(client, 1500, segments=True)
        _variants, p, reward, segments = await stored_units(app)
        mobile = np.array([s == "mobile" for s in segments])
        answer = await evaluate(client, policy={"a": 0.5, "b": 0.5}, segment="mobile")
        body = answer.json()
        assert body["logged"]["units"] == int(mobile.sum())
        assert body["estimates"]["ipw"]["value"] == pytest.approx(
            (0.5 / p * reward)[mobile].mean(), rel=1e-9
        )
        future = str(date.today() + timedelta(days=1))
        empty = await evaluate(client, policy={"a": 0.5, "b": 0.5}, **{"from": future})
        assert empty.status_code == 409
        assert "nothing to evaluate" in empty.json()["error"]["message"]

    async def test_a_policy_per_segment(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        await create(client)
        await serve(client, 1500, segments=True)
        variants, p, reward, segments = await stored_units(app)
        policy = {"segments": {"mobile": {"a": 1.0, "b": 0.0}}, "default": {"a": 0.0, "b": 1.0}}
        body = (await evaluate(client, policy=policy)).json()
        wanted = np.array(
            [
                (v == "a") if s == "mobile" else (v == "b")
                for v, s in zip(variants, segments, strict=True)
            ]
        )
        assert body["estimates"]["ipw"]["value"] == pytest.approx(
            (wanted / p * reward).mean(), rel=1e-9
        )

    async def test_value_metrics_weigh_values(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client, metric_kind="value")
        await serve(client, 1000, value=True)
        _variants, p, reward, _ = await stored_units(app)
        assert reward.max() > 1.0
        body = (await evaluate(client, policy={"a": 0.5, "b": 0.5})).json()
        assert body["metric"] == "value"
        assert body["estimates"]["ipw"]["value"] == pytest.approx(
            (0.5 / p * reward).mean(), rel=1e-9
        )
        assert body["logged"]["value"] == pytest.approx(reward.mean())
        # Heavy-tailed values need 100 valued units per variant before trusting the interval.
        assert body["diagnostics"]["least_conversions"] < 100  # 1,000 units at 5-12%
        assert body["trustworthy"] is False
        assert any("at least 100 are needed" in reason for reason in body["reasons"])


class TestSupport:
    async def test_a_variant_never_served_is_refused_not_guessed(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await create(client, variants=("a", "b", "c"))
        paused = await client.patch("/experiments/e/variants/c", json={"active": False})
        assert paused.status_code == 200, paused.text
        await serve(client, 1000)
        body = (await evaluate(client, policy={"a": 0.5, "c": 0.5})).json()
        assert body["value"] is None
        assert body["interval"] is None
        assert body["trustworthy"] is False
        assert body["diagnostics"]["unsupported"] == ["c"]
        assert body["diagnostics"]["unsupported_share"] == pytest.approx(0.5)
        assert set(body["refused"]) == {"dm", "ipw", "snipw", "dr", "switch-dr"}
        assert all(body["estimates"][name] is None for name in body["refused"])
        assert any("c" in reason for reason in body["reasons"])


DAYS = [date(2024, 5, 1) + timedelta(days=d) for d in range(3)]


class TestReportedDays:
    async def test_days_without_a_served_allocation_use_observed_shares(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        rows = [(800, 40, 200, 30), (500, 20, 500, 60), (300, 18, 700, 80)]
        metrics = [
            {
                "experiment_id": "e",
                "variant_id": v,
                "date": str(day),
                "impressions": n,
                "successes": s,
            }
            for day, (na, sa, nb, sb) in zip(DAYS, rows, strict=True)
            for v, n, s in (("a", na, sa), ("b", nb, sb))
        ]
        posted = await client.post("/metrics/batch", json={"metrics": metrics})
        assert posted.status_code == 200, posted.text
        body = (await evaluate(client, policy={"a": 0.5, "b": 0.5})).json()
        # Observed shares: each unit's weight is 0.5 / (n_va / n_day), so IPW adds
        # 0.5 * n_day * rate_va per variant and day.
        total = sum(na + nb for na, _, nb, _ in rows)
        ipw = sum(0.5 * (na + nb) * (sa / na + sb / nb) for na, sa, nb, sb in rows) / total
        assert body["estimates"]["ipw"]["value"] == pytest.approx(ipw, rel=1e-9)
        assert body["diagnostics"]["days_without_served_allocation"] == 3
        assert body["logged"]["reported_units"] == total

    async def test_served_allocations_are_the_logging_probabilities(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        shares = {}
        for day in DAYS:
            split = await client.get("/allocations/e", params={"for_date": str(day)})
            assert split.status_code == 200, split.text
            shares[day] = {v: pct / 100 for v, pct in split.json()["allocations"].items()}
            metrics = [
                {"experiment_id": "e", "variant_id": v, "date": str(day),
                 "impressions": int(1000 * share), "successes": int(1000 * share * RATES[v])}
                for v, share in shares[day].items()
            ]  # fmt: skip
            posted = await client.post("/metrics/batch", json={"metrics": metrics})
            assert posted.status_code == 200, posted.text
        body = (await evaluate(client, policy={"a": 1.0, "b": 0.0})).json()
        assert body["diagnostics"]["days_without_served_allocation"] == 0
        units = sum(int(1000 * s) for day in DAYS for s in shares[day].values())
        ipw = sum(int(1000 * shares[d]["a"] * RATES["a"]) / shares[d]["a"] for d in DAYS) / units
        assert body["estimates"]["ipw"]["value"] == pytest.approx(ipw, rel=1e-9)


class TestRefusals:
    @pytest.mark.parametrize(
        ("policy", "says"),
        [
            ({"a": 0.5, "z": 0.5}, "z is not a variant of this experiment"),
            ({"a": 0.5, "b": 0.4}, "add up to 0.9, not 1"),
            ({"segments": {"m": {"a": 2.0}}, "default": {"a": 1.0}}, "less than or equal to 1"),
            ({"segments": {"m": {"a": 1.0}}}, "default"),
            ({}, "at least 1"),
        ],
    )
    async def test_a_bad_policy_is_a_422_that_says_what_to_fix(
        self, client: httpx.AsyncClient, policy: dict[str, Any], says: str
    ) -> None:
        await create(client)
        await serve(client, 500)
        answer = await evaluate(client, policy=policy)
        assert answer.status_code == 422, answer.text
        assert says in answer.text

    async def test_other_refusals(self, client: httpx.AsyncClient) -> None:
        missing = await client.post("/experiments/nope/evaluate", json={"policy": {"a": 1.0}})
        assert missing.status_code == 404
        await create(client)
        nothing = await evaluate(client, policy={"a": 1.0})
        assert nothing.status_code == 409
        backwards = await evaluate(
            client, policy={"a": 1.0}, **{"from": "2024-05-02", "to": "2024-05-01"}
        )
        assert backwards.status_code == 422
        assert "from must not be after to" in backwards.text
        unknown = await evaluate(client, policy={"a": 1.0}, estimator="magic")
        assert unknown.status_code == 422

    async def test_groups_read_are_bounded(
        self, app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await create(client)
        await serve(client, 1500)
        body = (await evaluate(client, policy={"a": 0.5, "b": 0.5})).json()
        variants, p, _, _ = await stored_units(app)
        variants_and_propensities = len(set(zip(variants, p, strict=True)))
        monkeypatch.setattr(service, "MAX_GROUPS", variants_and_propensities - 1)
        over = await evaluate(client, policy={"a": 0.5, "b": 0.5})
        assert over.status_code == 422
        assert "narrow it with from and to" in over.text
        # At the bound exactly, it answers.
        monkeypatch.setattr(service, "MAX_GROUPS", variants_and_propensities)
        again = await evaluate(client, policy={"a": 0.5, "b": 0.5})
        assert again.json()["value"] == body["value"]


async def test_segment_policies_are_bounded_at_1000(client: httpx.AsyncClient) -> None:
    await create(client)
    await serve(client, 500)
    split = {"a": 0.5, "b": 0.5}
    at_bound = {"segments": {f"s{i}": split for i in range(1000)}, "default": split}
    answer = await evaluate(client, policy=at_bound)
    assert answer.status_code == 200, answer.text
    over = {"segments": {f"s{i}": split for i in range(1001)}, "default": split}
    refused = await evaluate(client, policy=over)
    assert refused.status_code == 422
    assert "1000" in refused.text
