"""Scopes are declared on the routes (`dependencies=[needs(...)]`): every route has one,
authorization, the hot paths and browser CORS read them, and nothing restates them as
path strings."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from mabapi.access.models import Scope
from mabapi.deps import api_routes, declared, declared_scopes
from mabapi.middleware import client_paths

SRC = Path(__file__).resolve().parents[2] / "src" / "mabapi"
ORIGIN = "https://shop.example"


class TestDeclarations:
    def test_every_route_declares_one_scope(self, app: FastAPI) -> None:
        routes = list(api_routes(app.routes))
        assert len(routes) > 30
        undeclared = [route.path for route in routes if declared(route) is None]
        assert undeclared == []

    def test_the_client_routes_are_assignment_and_conversions(self, app: FastAPI) -> None:
        client = sorted(
            path for (_, path), d in declared_scopes(app).items() if d.scope is Scope.CLIENT
        )
        assert client == [
            "/assign/batch",
            "/conversions/batch",
            "/experiments/{experiment_id}/assign",
            "/experiments/{experiment_id}/conversions",
            "/ofrep/v1/configuration",
            "/ofrep/v1/evaluate/flags",
            "/ofrep/v1/evaluate/flags/{experiment_id}",
        ]
        patterns = client_paths(app)
        assert len(patterns) == len(client)
        assert any(p.match("/assign/batch") for p in patterns)
        assert not any(p.match("/keys") for p in patterns)

    def test_no_path_string_tables(self) -> None:
        for name in ("deps.py", "middleware.py", "hot_paths.py"):
            text = (SRC / name).read_text()
            assert "CLIENT_ROUTES" not in text, name
            assert '"/experiments/{experiment_id}/assign"' not in text, name
            assert "assign|conversions" not in text, name


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": ORIGIN}])
class TestCorsFollowsTheDeclarations:
    async def test_every_client_route_answers_a_preflight(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        preflight = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        for path in ("/experiments/e/assign", "/experiments/e/conversions", "/assign/batch",
                     "/conversions/batch", "/ofrep/v1/evaluate/flags",
                     "/ofrep/v1/evaluate/flags/e"):  # fmt: skip
            answer = await client.options(path, headers=preflight)
            assert answer.headers.get("access-control-allow-origin") == ORIGIN, path
        for path in ("/keys", "/metrics/batch", "/experiments/e/conclude"):
            answer = await client.options(path, headers=preflight)
            assert "access-control-allow-origin" not in answer.headers, path
