"""The deploy/ files agree with the service: compose runs the five services with keys on,
2 workers and Redis for their shared rate limits, Prometheus scrapes the real path, every
metric the Grafana dashboard queries is one the service exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


class TestCompose:
    def test_services_and_settings(self) -> None:
        compose = load("docker-compose.yml")
        assert set(compose["services"]) == {"db", "redis", "api", "prometheus", "grafana"}
        api = compose["services"]["api"]["environment"]
        assert api["MABAPI_WORKERS"] == "2"
        # More than one worker: rate limits are shared through Redis (docs/OPERATIONS.md).
        assert api["MABAPI_REDIS_URL"].startswith("redis://redis:")
        assert "redis" in compose["services"]["api"]["depends_on"]
        assert api["MABAPI_REQUIRE_AUTH"] == "true"
        assert "MABAPI_BOOTSTRAP_ADMIN_KEY" in api

    def test_prometheus_scrapes_the_metrics_path_with_a_key(self) -> None:
        job = load("prometheus.yml")["scrape_configs"][0]
        assert job["metrics_path"] == "/metrics"
        assert job["static_configs"][0]["targets"] == ["api:8000"]
        assert job["authorization"]["type"] == "Bearer"


class TestGrafana:
    async def test_every_queried_metric_exists(self, client: httpx.AsyncClient) -> None:
        dashboard = json.loads((DEPLOY / "grafana/dashboards/mabapi.json").read_text())
        queried = {
            name
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for name in re.findall(r"\bmabapi_[a-z_]+", target["expr"])
        }
        exposed = (await client.get("/metrics")).text
        # Histograms are queried through their _bucket series.
        for name in queried:
            assert re.search(rf"^# TYPE {name.removesuffix('_bucket')} ", exposed, re.M), name
        assert len(queried) >= 8
        assert "mabapi_http_requests_total" in queried
