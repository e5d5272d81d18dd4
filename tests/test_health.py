"""Probes, and what clients see while the database is unreachable."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from mabapi.app import create_app
from tests.conftest import make_settings
from tests.fixtures.factories import metric


def closed_port() -> int:
    """A local port with nothing listening (bound then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class TestProbes:
    async def test_health(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"

    async def test_ready_when_the_database_answers(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/ready")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "database": "ok"}

    async def test_docs_and_openapi_are_served(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/redoc")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        assert "/metrics/" in spec["paths"]
        assert "/allocations/{experiment_id}" in spec["paths"]
        post = spec["paths"]["/metrics/"]["post"]
        assert {"200", "422", "413", "503"} <= set(post["responses"])


@pytest.fixture
async def unreachable_client() -> AsyncIterator[httpx.AsyncClient]:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing"
    application: FastAPI = create_app(make_settings(url))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


class TestDatabaseDown:
    async def test_health_stays_up_ready_says_no(
        self, unreachable_client: httpx.AsyncClient
    ) -> None:
        assert (await unreachable_client.get("/health")).status_code == 200
        ready = await unreachable_client.get("/ready")
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == "2"

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("POST", "/metrics/", metric()),
            ("POST", "/metrics/batch", {"metrics": [metric()]}),
            ("GET", "/allocations/homepage_test", None),
            ("GET", "/experiments", None),
            ("POST", "/experiments", {"id": "x"}),
        ],
    )
    async def test_requests_get_503_with_retry_after_not_500(
        self,
        unreachable_client: httpx.AsyncClient,
        method: str,
        path: str,
        body: object,
    ) -> None:
        response = await unreachable_client.request(method, path, json=body)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "2"
        error = response.json()["error"]
        assert error["code"] == "service_unavailable"
        # Never leak connection details.
        assert "127.0.0.1" not in response.text
        assert "postgres" not in response.text.lower()
