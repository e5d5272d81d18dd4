"""The README's browser snippet in a real browser (Debian's chromium, playwright): a page
on one origin assigns a unit and reports its conversion through an API on another
origin; a page on an origin not on MABAPI_CORS_ORIGINS is refused by the browser."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from mabapi.client import Client
from tests.dashboard.test_browser import CHROMIUM, _browser_or_skip
from tests.fixtures.servers import REPO, free_port, running

pytestmark = pytest.mark.slow

ADMIN_KEY = "cors-test-admin-key-0123456789abcdef0123"


def _readme_snippet() -> str:
    section = (REPO / "README.md").read_text().split("## In a web page", 1)[1]
    match = re.search(r"```html\n(.*?)```", section, re.S)
    assert match, "the README's browser snippet is gone"
    return match.group(1)


class _Pages(ThreadingHTTPServer):
    page = b""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, _Pages)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.server.page)

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture(scope="module")
def allowed_page_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, allowed_page_port: int) -> Iterator[str]:
    database = tmp_path_factory.mktemp("cors") / "mabapi.db"
    port = free_port()
    env = {
        "MABAPI_DATABASE_URL": f"sqlite:///{database}",
        "MABAPI_REQUIRE_AUTH": "true",
        "MABAPI_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "MABAPI_LOG_LEVEL": "warning",
        "MABAPI_CORS_ORIGINS": f"http://127.0.0.1:{allowed_page_port}",
    }
    command = [sys.executable, "-m", "mabapi", "serve", "--port", str(port)]
    with running(command, env=env, port=port) as base:
        with Client(base, api_key=ADMIN_KEY) as client:
            client.create_experiment("landing", ["control", "b"], name="Landing page")
        yield base


def _client_key(base: str) -> str:
    created = httpx.post(
        f"{base}/keys",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"scope": "client", "name": "web page"},
    )
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


def _page(base: str, key: str) -> str:
    snippet = (
        _readme_snippet()
        .replace('"http://127.0.0.1:8000"', f'"{base}"')
        .replace('"mab_..."', f'"{key}"')
    )
    return f"<!doctype html><html><head>{snippet}</head><body>shop</body></html>"


@contextmanager
def serving(html: str, port: int) -> Iterator[str]:
    """The page on its own origin (another port than the API's)."""
    server = _Pages(("127.0.0.1", port), _Handler)
    server.page = html.encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


RUN = """async () => {
  try {
    const first = await variantFor("landing");
    const again = await variantFor("landing");
    const conversion = await converted("landing");
    return {first, again, unit: localStorage.getItem("mabapi_unit"),
            counted: conversion.counted, error: null};
  } catch (error) {
    return {error: String(error)};
  }
}"""


def _run_in_browser(page_url: str) -> dict[str, Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.goto(page_url)
            result: dict[str, Any] = page.evaluate(RUN)
        finally:
            browser.close()
    return result


def test_a_page_on_an_allowed_origin_assigns_and_converts(api: str, allowed_page_port: int) -> None:
    key = _client_key(api)
    with serving(_page(api, key), allowed_page_port) as page_url:
        assert not page_url.startswith(api)  # another origin than the API's
        result = _run_in_browser(page_url)
    assert result["error"] is None, result
    assert result["first"] in ("control", "b")
    assert result["again"] == result["first"]  # sticky
    assert result["counted"] is True
    # The server stored exactly that: one conversion for that unit.
    with Client(api, api_key=ADMIN_KEY) as client:
        summary = client.summary("landing")
    conversions = {v.variant_id: v.successes for v in summary.variants}
    assert conversions[result["first"]] == 1


def test_a_page_on_another_origin_is_refused(api: str) -> None:
    key = _client_key(api)
    with serving(_page(api, key), free_port()) as page_url:
        result = _run_in_browser(page_url)
    assert result["error"] is not None
    assert "Failed to fetch" in result["error"]


def test_preflight_is_answered_for_client_routes_only(api: str, allowed_page_port: int) -> None:
    origin = f"http://127.0.0.1:{allowed_page_port}"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    assign = httpx.options(f"{api}/experiments/landing/assign", headers=preflight)
    assert assign.status_code == 200
    assert assign.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-credentials" not in assign.headers
    refused = httpx.options(
        f"{api}/experiments/landing/assign", headers={**preflight, "Origin": "http://evil.test"}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # An admin route never answers cross-origin, even to an allowed origin.
    keys = httpx.options(f"{api}/keys", headers=preflight)
    assert "access-control-allow-origin" not in keys.headers
