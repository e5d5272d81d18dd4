"""GET /metrics (Prometheus) beside POST /metrics/ (ingestion), request ids, JSON logs."""

from __future__ import annotations

import io
import json
import logging
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mabapi.observability import log_handler, request_id_var, resolve_log_format
from tests.fixtures.factories import create_experiment, post_metric


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


class TestPrometheus:
    async def test_scrape_and_ingestion_share_the_name(self, client: httpx.AsyncClient) -> None:
        before = (await client.get("/metrics")).text
        assert (await post_metric(client, experiment_id="exp")).status_code == 200
        assert (await client.post("/metrics", json={
            "experiment_id": "exp", "variant_id": "b", "date": "2023-07-15",
            "impressions": 10, "successes": 1})).status_code == 200  # fmt: skip
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        after = scrape.text
        route = {"method": "POST", "route": "/metrics/", "status": "200"}
        assert value(after, "mabapi_http_requests_total", **route) == (
            value(before, "mabapi_http_requests_total", **route) + 1
        )
        ingested = "mabapi_metric_rows_ingested_total"
        assert value(after, ingested) == value(before, ingested) + 2

    async def test_domain_counters_and_allocation_gauges(self, client: httpx.AsyncClient) -> None:
        await create_experiment(client, experiment_id="gauge-exp")
        before = (await client.get("/metrics")).text
        await client.post("/experiments/gauge-exp/assign", json={"unit_id": "u"})
        await client.post("/experiments/gauge-exp/assign", json={"unit_id": "u"})
        await client.post("/experiments/gauge-exp/conversions", json={"unit_id": "u"})
        allocation = (await client.get("/allocations/gauge-exp?for_date=2030-01-01")).json()
        after = (await client.get("/metrics")).text
        assert value(after, "mabapi_assignments_total", new="true") == 1 + value(
            before, "mabapi_assignments_total", new="true"
        )
        assert value(after, "mabapi_assignments_total", new="false") == 1 + value(
            before, "mabapi_assignments_total", new="false"
        )
        assert value(after, "mabapi_conversions_total", counted="true") == 1 + value(
            before, "mabapi_conversions_total", counted="true"
        )
        for variant, percent in allocation["allocations"].items():
            share = value(after, "mabapi_allocation_share", experiment="gauge-exp", variant=variant)
            assert share == pytest.approx(percent / 100, abs=1e-3)
        assert value(after, "mabapi_db_pool_connections", state="in_use") >= 0
        latency = "mabapi_http_request_duration_seconds_count"
        assert value(after, latency, method="GET", route="/allocations/{experiment_id}") >= 1

    async def test_paths_are_labelled_by_template(self, client: httpx.AsyncClient) -> None:
        await client.get("/experiments/some-id-1")
        await client.get("/no/such/route/123")
        text = (await client.get("/metrics")).text
        assert "some-id-1" not in text
        assert "/no/such/route" not in text
        assert 'route="unmatched"' in text


class TestRequestIds:
    async def test_generated_or_echoed(self, client: httpx.AsyncClient) -> None:
        generated = (await client.get("/health")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        echoed = await client.get("/health", headers={"X-Request-ID": "abc-123"})
        assert echoed.headers["x-request-id"] == "abc-123"
        hostile = await client.get("/health", headers={"X-Request-ID": "a\tb" + "x" * 100})
        assert hostile.headers["x-request-id"] != "a\tb" + "x" * 100


class TestJsonLogs:
    def test_one_json_object_per_line_with_the_request_id(self) -> None:
        stream = io.StringIO()
        handler = log_handler("json")
        handler.setStream(stream)  # type: ignore[attr-defined]
        logger = logging.getLogger("mabapi.test-json")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        token = request_id_var.set("req-1")
        try:
            logger.info("hello %s", "world", extra={"route": "/x"})
        finally:
            request_id_var.reset(token)
            logger.removeHandler(handler)
        line = json.loads(stream.getvalue().strip())
        assert line["message"] == "hello world"
        assert line["request_id"] == "req-1"
        assert line["level"] == "INFO"
        assert line["route"] == "/x"
        assert "time" in line

    def test_uvicorns_colour_codes_never_reach_a_json_line(self) -> None:
        stream = io.StringIO()
        handler = log_handler("json")
        handler.setStream(stream)  # type: ignore[attr-defined]
        logger = logging.getLogger("mabapi.test-colour")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            # What uvicorn logs at start: a plain message plus a coloured copy.
            logger.info(
                "Started server process [%d]",
                42,
                extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"},
            )
        finally:
            logger.removeHandler(handler)
        text = stream.getvalue()
        assert "\x1b" not in text
        assert "\\u001b" not in text
        assert json.loads(text)["message"] == "Started server process [42]"


class TestLogFormat:
    class _Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def test_auto_is_text_on_a_terminal_and_json_elsewhere(self) -> None:
        assert resolve_log_format("auto", self._Terminal()) == "text"
        assert resolve_log_format("auto", io.StringIO()) == "json"
        assert resolve_log_format("json", self._Terminal()) == "json"
        assert resolve_log_format("text", io.StringIO()) == "text"

    def test_the_default_is_auto(self) -> None:
        from mabapi.settings import Settings

        assert Settings(_env_file=None).log_format == "auto"
