"""The dashboard in a real headless browser (Debian's chromium, driven by playwright; no
browser download): the charts draw with one series per variant, the numbers shown equal
the API's, it logs in with a key, acts for an admin, and fits a phone. Screenshots go to
test-artifacts/screenshots/ (CI keeps them)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mabapi.client import Client
from tests.fixtures.servers import REPO, keyed_server

CHROMIUM = os.environ.get("MABAPI_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
ADMIN_KEY = "dashboard-test-admin-key-0123456789abcdef"
VARIANTS = ("control", "b", "c")

pytestmark = pytest.mark.slow


def _browser_or_skip() -> Any:
    if importlib.util.find_spec("playwright") is None or not Path(CHROMIUM).exists():
        message = f"playwright or {CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with keyed_server(tmp_path_factory.mktemp("ui") / "mabapi.db", ADMIN_KEY) as base:
        with Client(base, api_key=ADMIN_KEY) as client:
            client.create_experiment("landing", list(VARIANTS), name="Landing page")
            # Ten days of traffic split the way the service said each morning.
            split = dict.fromkeys(VARIANTS, 100 / len(VARIANTS))
            for day in range(1, 11):
                for variant, rate in zip(VARIANTS, (0.10, 0.13, 0.11), strict=True):
                    visitors = round(3000 * split[variant] / 100)
                    successes = round(visitors * rate)
                    client.post_metric(
                        "landing", variant, f"2026-10-{day:02d}", visitors, successes
                    )
                split = client.allocations("landing", for_date=f"2026-10-{day + 1:02d}").allocations
        yield base


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        opened = context.new_page()
        opened.goto(f"{server}/ui")
        assert "/ui/login" in opened.url  # keys are on: the dashboard asks for one
        opened.fill("#key", ADMIN_KEY)
        opened.click("#login button")
        opened.wait_for_url(f"{server}/ui")
        yield opened
        browser.close()


def api(server: str) -> Client:
    return Client(server, api_key=ADMIN_KEY)


class TestList:
    def test_list_shows_the_apis_leader(self, server: str, page: Any) -> None:
        page.goto(f"{server}/ui")
        row = page.locator('tr[data-experiment="landing"]')
        with api(server) as client:
            summary = client.summary("landing")
        leader = max(summary.variants, key=lambda v: v.probability_best)
        assert row.locator(".leader").inner_text() == leader.variant_id
        assert row.locator(".probability").inner_text() == f"{leader.probability_best:.3f}"
        page.screenshot(path=str(SCREENSHOTS / "list.png"), full_page=True)
        page.fill("input[name=q]", "nothing-like-this")
        page.click(".filters button")
        assert page.locator('tr[data-experiment="landing"]').count() == 0


class TestExperimentPage:
    def test_charts_draw_one_series_per_variant(self, server: str, page: Any) -> None:
        page.goto(f"{server}/ui/experiments/landing")
        page.wait_for_function("document.querySelectorAll('canvas[data-chart]').length === 4")
        charts = page.evaluate(
            """() => Array.from(document.querySelectorAll('canvas[data-chart]')).map(c => {
                const chart = Chart.getChart(c);
                const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) painted++; }
                return {name: c.dataset.chart, painted: painted,
                        series: chart.data.datasets.filter(d => !d.band).length,
                        points: chart.data.labels.length};
            })"""
        )
        assert {c["name"] for c in charts} == {"allocation", "daily", "density", "best"}
        for chart in charts:
            assert chart["series"] == len(VARIANTS), chart
            assert chart["painted"] > 1000, chart  # the canvas is not blank
            assert chart["points"] >= 10, chart
        page.screenshot(path=str(SCREENSHOTS / "experiment.png"), full_page=True)

    def test_numbers_equal_the_api(self, server: str, page: Any) -> None:
        page.goto(f"{server}/ui/experiments/landing")
        with api(server) as client:
            summary = client.summary("landing")
            served = client.allocations("landing", for_date="2026-10-11")
        for variant in summary.variants:
            row = page.locator(f'#summary-table tr[data-variant="{variant.variant_id}"]')
            assert int(row.locator(".impressions").inner_text()) == variant.impressions
            assert int(row.locator(".successes").inner_text()) == variant.successes
            assert (
                row.locator(".probability-best").inner_text() == f"{variant.probability_best:.4f}"
            )
        # The last point of the allocation chart is the split the API served that day.
        last = page.evaluate(
            """() => Chart.getChart(document.querySelector('canvas[data-chart=allocation]'))
                  .data.datasets.map(d => [d.label, d.data[d.data.length - 1]])"""
        )
        assert dict(last) == served.allocations
        # Its numbers are a click away, as a table and as CSV.
        page.click("#chart-allocation summary")
        assert page.locator('table[data-table="allocation"] tbody tr').count() == 10

    def test_phone_sized_screen(self, server: str, page: Any) -> None:
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{server}/ui/experiments/landing")
        page.wait_for_function("document.querySelectorAll('canvas[data-chart]').length === 4")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        page.screenshot(path=str(SCREENSHOTS / "experiment-phone.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})

    def test_admin_pauses_and_resumes(self, server: str, page: Any) -> None:
        page.goto(f"{server}/ui/experiments/landing")
        page.click("button[value=pause]")
        page.wait_for_selector("button[value=resume]")
        with api(server) as client:
            assert client.experiment("landing").status.value == "paused"
        page.click("button[value=resume]")
        page.wait_for_selector("button[value=pause]")
        with api(server) as client:
            assert client.experiment("landing").status.value == "running"

    def test_no_secret_in_the_page(self, server: str, page: Any) -> None:
        page.goto(f"{server}/ui/experiments/landing")
        assert ADMIN_KEY not in page.content()
        cookie = next(c for c in page.context.cookies() if c["name"] == "mabapi_key")
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
