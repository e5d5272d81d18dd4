"""Dashboard pages without a browser: keys, projects, CSV numbers, the action form's
origin check."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from tests.fixtures.factories import create_experiment
from tests.fixtures.keys import bearer, make_key


async def seed(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
    await create_experiment(client, experiment_id="home", headers=headers)
    for day in (1, 2, 3):
        for variant, successes in (("control", 100), ("b", 130)):
            response = await client.post(
                "/metrics/",
                headers=headers,
                json={
                    "experiment_id": "home",
                    "variant_id": variant,
                    "date": f"2024-01-0{day}",
                    "impressions": 1000,
                    "successes": successes + day,
                },
            )
            assert response.status_code == 200


class TestAccess:
    async def test_open_instance_shows_pages(self, client: httpx.AsyncClient) -> None:
        await seed(client)
        assert (await client.get("/ui")).status_code == 200
        page = await client.get("/ui/experiments/home")
        assert page.status_code == 200
        assert 'data-chart="allocation"' in page.text

    async def test_open_instance_has_no_log_out_and_counts_days_from_the_data(
        self, client: httpx.AsyncClient
    ) -> None:
        await seed(client)  # three past days, posted today
        page = await client.get("/ui/experiments/home")
        assert "Log out" not in page.text
        assert "3 days running, 3 days of data" in page.text
        listing = await client.get("/ui")
        assert "Log out" not in listing.text

    async def test_a_logged_in_browser_can_log_out(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        reader = await make_key(app, scope="read")
        assert (await client.post("/ui/login", data={"key": reader})).status_code == 303
        page = await client.get("/ui")
        assert page.status_code == 200
        assert "Log out" in page.text

    async def test_without_a_key_a_browser_is_sent_to_log_in(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await make_key(app, scope="admin")
        response = await client.get("/ui")
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/login"

    async def test_login_sets_an_httponly_cookie_and_refuses_client_keys(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        reader = await make_key(app, scope="read")
        web = await make_key(app, scope="client")
        refused = await client.post("/ui/login", data={"key": web})
        assert refused.status_code == 401
        accepted = await client.post("/ui/login", data={"key": reader})
        assert accepted.status_code == 303
        cookie = accepted.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert (await client.get("/ui")).status_code == 200  # the cookie does it now

    async def test_other_projects_experiments_are_404(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        shop = await make_key(app, scope="admin", project="shop")
        blog = await make_key(app, scope="read", project="blog")
        await seed(client, bearer(shop))
        assert (await client.get("/ui/experiments/home", headers=bearer(shop))).status_code == 200
        hidden = await client.get("/ui/experiments/home", headers=bearer(blog))
        assert hidden.status_code == 404
        listing = await client.get("/ui", headers=bearer(blog))
        assert 'data-experiment="home"' not in listing.text


class TestNumbers:
    async def test_csv_equals_the_api(self, client: httpx.AsyncClient) -> None:
        await seed(client)
        served = []
        for day in (2, 3, 4):
            answer = (await client.get(f"/allocations/home?for_date=2024-01-0{day}")).json()
            served.append(answer["allocations"])
        response = await client.get("/ui/experiments/home/data/allocation.csv")
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["date"] for r in rows] == ["2024-01-02", "2024-01-03", "2024-01-04"]
        assert [{k: float(r[k]) for k in ("control", "b")} for r in rows] == served
        daily = list(
            csv.DictReader(
                io.StringIO((await client.get("/ui/experiments/home/data/daily.csv")).text)
            )
        )
        assert len(daily) == 6
        assert {
            (r["variant"], int(r["successes"])) for r in daily if r["date"] == "2024-01-01"
        } == {("control", 101), ("b", 131)}
        assert (await client.get("/ui/experiments/home/data/nope.csv")).status_code == 404

    async def test_csv_cells_a_spreadsheet_would_run_are_escaped(
        self, client: httpx.AsyncClient
    ) -> None:
        created = await client.post(
            "/experiments", json={"id": "-1-1", "variants": [{"id": "-A1"}, {"id": "b"}]}
        )
        assert created.status_code == 201
        for variant, successes in (("-A1", 3), ("b", 4)):
            posted = await client.post(
                "/metrics/",
                json={"experiment_id": "-1-1", "variant_id": variant, "date": "2024-01-01",
                      "impressions": 50, "successes": successes},
            )  # fmt: skip
            assert posted.status_code == 200
        daily = list(
            csv.reader(io.StringIO((await client.get("/ui/experiments/-1-1/data/daily.csv")).text))
        )
        assert {row[1] for row in daily[1:]} == {"'-A1", "b"}
        best = list(
            csv.reader(io.StringIO((await client.get("/ui/experiments/-1-1/data/best.csv")).text))
        )
        assert best[0] == ["date", "'-A1", "b"]

    async def test_summary_numbers_are_the_apis(self, client: httpx.AsyncClient) -> None:
        await seed(client)
        summary = (await client.get("/experiments/home/summary")).json()
        page = (await client.get("/ui/experiments/home")).text
        for variant in summary["variants"]:
            assert f"{variant['probability_best']:.4f}" in page
        # 3 days of data: continue, with the forecast users plan around.
        days = summary["recommendation"]["days_to_decision"]
        assert summary["recommendation"]["action"] == "continue"
        assert f"a decision in about {days} more day" in page
        listing = (await client.get("/ui")).text
        assert f"continue (about {days} more days)" in listing


class TestActions:
    async def test_pause_needs_our_own_origin(self, client: httpx.AsyncClient) -> None:
        await seed(client)
        url = "/ui/experiments/home/actions"
        forged = await client.post(
            url, data={"action": "pause"}, headers={"Origin": "https://evil.example"}
        )
        assert forged.status_code == 403
        assert (await client.get("/experiments/home")).json()["status"] == "running"
        ours = await client.post(
            url, data={"action": "pause"}, headers={"Origin": "http://testserver"}
        )
        assert ours.status_code == 303
        assert (await client.get("/experiments/home")).json()["status"] == "paused"

    async def test_read_keys_cannot_act(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        admin = await make_key(app, scope="admin")
        reader = await make_key(app, scope="read")
        await seed(client, bearer(admin))
        response = await client.post(
            "/ui/experiments/home/actions",
            data={"action": "pause"},
            headers={**bearer(reader), "Origin": "http://testserver"},
        )
        assert response.status_code == 403


class TestGuardrails:
    async def test_breaches_are_marked_in_the_list_and_on_the_page(
        self, client: httpx.AsyncClient
    ) -> None:
        await client.post(
            "/experiments",
            json={
                "id": "g",
                "variants": [{"id": "a"}, {"id": "b"}],
                "guardrails": [{"metric_id": "refunds"}],
            },
        )
        metrics = [
            {"experiment_id": "g", "variant_id": v, "date": f"2024-05-0{d}", "impressions": 5000,
             "successes": s, **extra}
            for d in range(1, 8)
            for v, s in (("a", 100), ("b", 200))
            for extra in ({}, {"metric_id": "refunds"})
        ]  # fmt: skip
        assert (await client.post("/metrics/batch", json={"metrics": metrics})).status_code == 200
        allocation = await client.get("/allocations/g", params={"for_date": "2024-05-08"})
        assert allocation.json()["guardrails"]["b"]["action"] == "stop"
        listing = (await client.get("/ui")).text
        assert "⚠ b: refunds (stop)" in listing
        page = (await client.get("/ui/experiments/g")).text
        assert 'data-guardrail="refunds"' in page
        assert "breached 2024-05-08: stop" in page
        assert 'data-chart="guardrail:refunds"' in page
        assert '"refunds": {"labels": ["2024-05-01"' in page
        # The page's clear button does what the API does.
        cleared = await client.post(
            "/ui/experiments/g/actions",
            data={"action": "clear_guardrail", "metric_id": "refunds"},
            headers={"origin": "http://testserver"},
        )
        assert cleared.status_code == 303
        assert "breached" not in (await client.get("/ui/experiments/g")).text


class TestSegments:
    async def test_the_picker_and_the_segments_table(self, client: httpx.AsyncClient) -> None:
        await client.post("/experiments", json={"id": "s", "variants": [{"id": "a"}, {"id": "b"}]})
        rows = [
            {"experiment_id": "s", "variant_id": v, "date": f"2024-06-0{d}", "impressions": n,
             "successes": k, "segment": segment}
            for d in range(1, 6)
            for segment, n, rates in (("desktop", 6000, (600, 780)), ("mobile", 4000, (520, 400)))
            for v, k in zip("ab", rates, strict=True)
        ]  # fmt: skip
        assert (await client.post("/metrics/batch", json={"metrics": rows})).status_code == 200
        page = (await client.get("/ui/experiments/s")).text
        assert 'id="segments-table"' in page
        assert '<tr data-segment="mobile" class="differs">' in page
        assert 'href="/ui/experiments/s?segment=mobile"' in page
        mobile = (await client.get("/ui/experiments/s", params={"segment": "mobile"})).text
        assert "Summary: segment mobile" in mobile
        api = (await client.get("/experiments/s/summary", params={"segment": "mobile"})).json()
        assert api["segment"] == "mobile"
        impressions = {v["variant_id"]: v["impressions"] for v in api["variants"]}
        assert impressions == {"a": 20_000, "b": 20_000}
        for variant in api["variants"]:
            assert f"{variant['probability_best']:.4f}" in mobile
        missing = await client.get("/experiments/s/summary", params={"segment": "tv"})
        assert missing.status_code == 404

    async def test_a_segment_page_draws_the_segments_charts(
        self, client: httpx.AsyncClient
    ) -> None:
        """Not all traffic's: mobile's daily rates, its units' split, and densities of the
        posteriors its table shows."""
        await client.post("/experiments", json={"id": "s", "variants": [{"id": "a"}, {"id": "b"}]})
        rows = [
            {"experiment_id": "s", "variant_id": v, "date": f"2024-06-0{d}", "impressions": n,
             "successes": k, "segment": segment}
            for d in range(1, 6)
            for segment, n, rates in (("desktop", 6000, (600, 780)), ("mobile", 3000, (390, 300)))
            for v, k in zip("ab", rates, strict=True)
        ]  # fmt: skip
        assert (await client.post("/metrics/batch", json={"metrics": rows})).status_code == 200

        def charts(page: str) -> dict[str, Any]:
            raw = page.split('id="chart-data">', 1)[1].split("</script>", 1)[0]
            parsed: dict[str, Any] = json.loads(raw)
            return parsed

        everyone = charts((await client.get("/ui/experiments/s")).text)
        mobile = charts((await client.get("/ui/experiments/s?segment=mobile")).text)
        assert mobile != everyone
        assert mobile["daily"]["series"]["b"][0]["mean"] == pytest.approx(0.10)
        assert everyone["daily"]["series"]["b"][0]["mean"] == pytest.approx(1080 / 9000)
        assert mobile["allocation"]["series"]["a"] == [50.0] * 5  # its units' split
        summary = (await client.get("/experiments/s/summary", params={"segment": "mobile"})).json()
        means = {v["variant_id"]: v["posterior_mean"] for v in summary["variants"]}
        x = np.array(mobile["density"]["x"])
        for variant, series in mobile["density"]["series"].items():
            peak = float(x[int(np.argmax(series))])
            assert peak == pytest.approx(means[variant], abs=0.01)
        csv_text = (
            await client.get("/ui/experiments/s/data/daily.csv", params={"segment": "mobile"})
        ).text
        assert "0.1" in csv_text.splitlines()[1]


class TestListBounds:
    async def _many(self, client: httpx.AsyncClient, count: int) -> None:
        rows = [
            {"experiment_id": f"x{n:02d}", "variant_id": v, "date": "2024-01-01",
             "impressions": 100, "successes": 10 + n % 3}
            for n in range(count) for v in ("a", "b")
        ]  # fmt: skip
        assert (await client.post("/metrics/batch", json={"metrics": rows})).status_code == 200

    async def test_the_list_is_paged_and_searched_in_the_database(
        self, client: httpx.AsyncClient
    ) -> None:
        from mabapi.dashboard.routes import PAGE_SIZE

        await self._many(client, PAGE_SIZE + 5)
        first = (await client.get("/ui")).text
        assert first.count('data-experiment="') == PAGE_SIZE
        assert "page 1 of 2" in first
        second = (await client.get("/ui?page=2")).text
        assert second.count('data-experiment="') == 5
        found = (await client.get("/ui?q=X07")).text  # case-insensitive, id or name
        assert found.count('data-experiment="') == 1
        assert 'data-experiment="x07"' in found
        assert (await client.get("/ui?q=50%25")).status_code == 200  # LIKE wildcards escaped

    async def test_a_load_computes_what_its_budget_allows_and_the_page_catches_up(
        self, app: FastAPI, client: httpx.AsyncClient, monkeypatch: Any
    ) -> None:
        from mabapi.dashboard import routes

        await self._many(client, 6)
        monkeypatch.setattr(routes, "LIST_BUDGET_SECONDS", 0.0)  # one summary a load
        loads = []
        for _ in range(10):
            page = (await client.get("/ui")).text
            loads.append(page.count("computing…"))
            if not loads[-1]:
                break
        assert loads == [5, 4, 3, 2, 1, 0]
        assert 'http-equiv="refresh"' not in page
        # The list and each experiment's page show one summary.
        summary = app.state.summaries.get("x03")
        assert summary is not None
        leader = max(summary.variants, key=lambda item: item.probability_best)
        detail = (await client.get("/ui/experiments/x03")).text
        assert f"{leader.probability_best:.4f}" in detail
        assert f"{leader.probability_best:.3f}" in page


async def test_a_page_without_a_control_says_how_to_name_one(client: httpx.AsyncClient) -> None:
    for variant, successes in (("a", 100), ("b", 130)):
        posted = await client.post(
            "/metrics/",
            json={"experiment_id": "auto", "variant_id": variant, "date": "2024-01-01",
                  "impressions": 1000, "successes": successes},
        )  # fmt: skip
        assert posted.status_code == 200
    page = (await client.get("/ui/experiments/auto")).text
    assert 'id="no-control"' in page
    assert "mabapi experiments control auto VARIANT" in page
    patched = await client.patch("/experiments/auto/variants/a", json={"is_control": True})
    assert patched.status_code == 200
    assert 'id="no-control"' not in (await client.get("/ui/experiments/auto")).text


async def test_what_the_bandit_earned_counts_only_what_it_served(
    client: httpx.AsyncClient,
) -> None:
    """An imported history (an even split nobody served through mabapi) earns nothing
    and sends nothing "to other variants"; a day planned by GET /allocations counts."""
    for day in ("2024-01-01", "2024-01-02"):
        for variant, successes in (("a", 100), ("b", 130)):
            posted = await client.post(
                "/metrics/",
                json={"experiment_id": "imported", "variant_id": variant, "date": day,
                      "impressions": 1000, "successes": successes},
            )  # fmt: skip
            assert posted.status_code == 200
    summary = (await client.get("/experiments/imported/summary")).json()
    gain = summary["gain_vs_even_split"]
    assert gain["units"] == {"a": 0, "b": 0}
    assert (gain["mean"], gain["lower"], gain["upper"]) == (0.0, 0.0, 0.0)
    page = (await client.get("/ui/experiments/imported")).text
    assert 'id="nothing-served"' in page
    assert "went to variants other than" not in page
    # A day mabapi planned (its allocation served) counts from then on.
    planned = await client.get("/allocations/imported", params={"for_date": "2024-01-03"})
    assert planned.status_code == 200
    for variant, n in (("a", 400), ("b", 1600)):
        posted = await client.post(
            "/metrics/",
            json={"experiment_id": "imported", "variant_id": variant, "date": "2024-01-03",
                  "impressions": n, "successes": n // 8},
        )  # fmt: skip
        assert posted.status_code == 200
    gain = (await client.get("/experiments/imported/summary")).json()["gain_vs_even_split"]
    assert gain["units"] == {"a": 400, "b": 1600}
    page = (await client.get("/ui/experiments/imported")).text
    assert "over the 2,000 units mabapi" in page


async def test_what_if_shows_the_apis_estimates(client: httpx.AsyncClient) -> None:
    """The "What if" panel: the even split and each variant alone, with the numbers the
    evaluate endpoint gives, what was served, and why a policy is not trustworthy."""
    await seed(client)
    page = (await client.get("/ui/experiments/home")).text
    assert 'id="what-if"' in page
    for policy in ({"control": 0.5, "b": 0.5}, {"control": 1.0, "b": 0.0}):
        answer = await client.post("/experiments/home/evaluate", json={"policy": policy})
        assert answer.status_code == 200, answer.text
        value = answer.json()["value"]
        assert f"{100 * value:.2f}%" in page
    assert 'data-policy="even split"' in page
    assert 'data-policy="only control"' in page
    assert 'data-policy="only b"' in page
    # Three days posted without a served allocation: the page says what stood in.
    assert "3 days without one" in page
    assert "served (what was earned)" in page


async def test_what_if_is_absent_without_logged_units(client: httpx.AsyncClient) -> None:
    await create_experiment(client, experiment_id="empty")
    page = (await client.get("/ui/experiments/empty")).text
    assert 'id="what-if"' not in page
