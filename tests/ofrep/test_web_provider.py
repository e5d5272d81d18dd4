"""The npm OpenFeature web SDK with `@openfeature/ofrep-web-provider`, bundled for the
test (npm and esbuild) and run in Chromium: a page on another origin gets its variant's
value through OFREP bulk evaluation and reports a conversion, as the README shows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.dashboard.test_browser import CHROMIUM, _browser_or_skip
from tests.dashboard.test_cors_browser import serving
from tests.fixtures.servers import free_port, running

pytestmark = pytest.mark.slow

ADMIN_KEY = "ofrep-web-admin-key-0123456789abcdef012"
PACKAGES = ["@openfeature/web-sdk@1.10.0", "@openfeature/ofrep-web-provider@0.4.3",
            "esbuild@0.25"]  # fmt: skip
ENTRY = """import { OpenFeature } from "@openfeature/web-sdk";
import { OFREPWebProvider } from "@openfeature/ofrep-web-provider";
window.OpenFeature = OpenFeature;
window.OFREPWebProvider = OFREPWebProvider;
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real npm packages, bundled into one script for the page."""
    npm = shutil.which("npm")
    assert npm, "npm is needed for the web provider test (apt-get install npm)"
    work = tmp_path_factory.mktemp("ofrep-web")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", *PACKAGES],
        cwd=work, check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    (work / "entry.js").write_text(ENTRY)
    subprocess.run(
        [str(work / "node_modules" / ".bin" / "esbuild"), "entry.js", "--bundle",
         "--format=iife", "--outfile=bundle.js"],
        cwd=work, check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    return (work / "bundle.js").read_text()


@pytest.fixture(scope="module")
def page_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, page_port: int) -> Iterator[tuple[str, str]]:
    database = tmp_path_factory.mktemp("ofrep-web-db") / "mabapi.db"
    port = free_port()
    env = {
        "MABAPI_DATABASE_URL": f"sqlite:///{database}",
        "MABAPI_REQUIRE_AUTH": "true",
        "MABAPI_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "MABAPI_LOG_LEVEL": "warning",
        "MABAPI_CORS_ORIGINS": f"http://127.0.0.1:{page_port}",
    }
    command = [sys.executable, "-m", "mabapi", "serve", "--port", str(port)]
    with running(command, env=env, port=port) as base:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        created = httpx.post(
            f"{base}/experiments",
            json={"id": "headline", "variants": [{"id": "a", "value": "Save 10%"},
                                                 {"id": "b", "value": "Free shipping"}]},
            headers=admin,
        )  # fmt: skip
        assert created.status_code == 201, created.text
        key = httpx.post(f"{base}/keys", json={"scope": "client", "name": "web"}, headers=admin)
        assert key.status_code == 201, key.text
        yield base, key.json()["key"]


RUN = """async ([api, key]) => {
  try {
    await OpenFeature.setProviderAndWait(new OFREPWebProvider({
      baseUrl: api, headers: [["Authorization", `Bearer ${key}`]],
    }), {targetingKey: "visitor-1", flags: ["headline"]});
    const details = OpenFeature.getClient().getStringDetails("headline", "Welcome");
    const response = await fetch(`${api}/experiments/headline/conversions`, {
      method: "POST",
      headers: {"Authorization": `Bearer ${key}`, "Content-Type": "application/json"},
      body: JSON.stringify({unit_id: "visitor-1"}),
    });
    const conversion = await response.json();
    return {value: details.value, variant: details.variant, reason: details.reason,
            error: details.errorCode || null, counted: conversion.counted};
  } catch (error) {
    return {error: String(error)};
  }
}"""


def test_a_page_evaluates_a_flag_and_reports_a_conversion(
    api: tuple[str, str], bundle: str, page_port: int
) -> None:
    base, key = api
    html = f"<!doctype html><html><head><script>{bundle}</script></head><body>shop</body></html>"
    sync_playwright = _browser_or_skip()
    with serving(html, page_port) as page_url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.goto(page_url)
            result: dict[str, Any] = page.evaluate(RUN, [base, key])
        finally:
            browser.close()
    assert result["error"] is None, result
    assert result["reason"] == "SPLIT"
    assert result["value"] == {"a": "Save 10%", "b": "Free shipping"}[result["variant"]]
    assert result["counted"] is True
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    summary = httpx.get(f"{base}/experiments/headline/summary", headers=admin).json()
    units = {v["variant_id"]: (v["impressions"], v["successes"]) for v in summary["variants"]}
    assert units[result["variant"]] == (1, 1), json.dumps(units)
