"""Outages and shutdown against real server processes on a throwaway PostgreSQL cluster
(docs/OPERATIONS.md): the database going away and coming back, a PostgreSQL crash in the middle of
a load, SIGTERM with requests in flight, and metrics added up over workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from mabapi.assignments.models import Assignment
from mabapi.counts.models import LiveMetric
from mabapi.db.engine import make_engine
from mabapi.experiments.models import ExperimentMetric
from tests.fixtures.cluster import Cluster, throwaway_cluster
from tests.fixtures.databases import url_text
from tests.fixtures.servers import free_port, started

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as running_cluster:
        yield running_cluster


_counter = 0


@pytest.fixture
def database(cluster: Cluster) -> URL:
    global _counter
    _counter += 1
    if not _is_up(cluster):
        cluster.start()
    return cluster.create_database(f"mabapi_outage_{_counter}")


def _is_up(cluster: Cluster) -> bool:
    try:
        cluster._run("pg_isready", "-h", "127.0.0.1", "-p", str(cluster.port))
    except subprocess.CalledProcessError:
        return False
    return True


def serve(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mabapi", "serve", "--port", str(port), *extra]


def env_for(url: URL, **extra: str) -> dict[str, str]:
    return {"MABAPI_DATABASE_URL": url_text(url), "MABAPI_LOG_LEVEL": "warning", **extra}


async def counts(url: URL) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            assignments = (
                await connection.execute(select(Assignment.unit_id, Assignment.converted_at))
            ).all()
            impressions = await connection.scalar(select(func.sum(LiveMetric.impressions)))
            successes = await connection.scalar(select(func.sum(LiveMetric.successes)))
            metric_rows = (
                await connection.execute(
                    select(
                        ExperimentMetric.variant_id,
                        ExperimentMetric.date,
                        ExperimentMetric.impressions,
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return {
        "units": {row[0] for row in assignments},
        "converted": {row[0] for row in assignments if row[1] is not None},
        "impressions": int(impressions or 0),
        "successes": int(successes or 0),
        "metric_rows": [(str(r[0]), r[1].isoformat(), int(r[2])) for r in metric_rows],
    }


async def count_metric_rows(url: URL) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            return int(
                await connection.scalar(select(func.count()).select_from(ExperimentMetric)) or 0
            )
    finally:
        await engine.dispose()


class TestDatabaseDown:
    def test_outage_answers_503_on_a_kept_connection_and_logs_state_changes_only(
        self, cluster: Cluster, database: URL, tmp_path: Path
    ) -> None:
        port = free_port()
        log = tmp_path / "server.log"
        environment = env_for(database, MABAPI_LOG_LEVEL="info", MABAPI_LOG_FORMAT="json")
        with started(serve(port), env=environment, port=port, log=log) as (base, _):
            assert httpx.post(f"{base}/experiments", json={"id": "e"}).status_code == 201
            cluster.stop("fast")
            try:
                # One keep-alive connection: a reset would raise here (RemoteProtocolError
                # or ConnectError), where the documented answer is a 503 on the same socket.
                with httpx.Client(base_url=base, timeout=10) as client:
                    for index in range(60):
                        response = (
                            client.post("/metrics/", json=_metric("v1"))
                            if index % 2
                            else client.get("/experiments/e/summary")
                        )
                        assert response.status_code == 503, response.text
                        assert response.headers["retry-after"] == "2"
            finally:
                cluster.start()
            deadline = time.monotonic() + 10
            while httpx.post(f"{base}/metrics/", json=_metric("v1")).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        text = log.read_text()
        assert "Traceback" not in text
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        outage = [r["message"] for r in records if r.get("logger") == "mabapi.outage"]
        assert len(outage) == 2, outage  # down once, back once: not one line per request
        assert "unreachable" in outage[0]
        assert "reachable again" in outage[1]

    def test_503_then_recovers_within_two_seconds(self, cluster: Cluster, database: URL) -> None:
        port = free_port()
        with started(serve(port), env=env_for(database), port=port) as (base, _):
            assert httpx.post(f"{base}/experiments", json={"id": "e"}).status_code == 201
            cluster.stop("fast")
            try:
                for method, path, body in (
                    ("POST", "/metrics/", _metric("v1")),
                    ("GET", "/experiments", None),
                    ("GET", "/experiments/e/summary", None),
                ):
                    response = httpx.request(method, base + path, json=body, timeout=10)
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"] == "2"
                    message = response.json()["error"]["message"]
                    assert "postgres" not in message.lower()
                    assert "127.0.0.1" not in message
                assert httpx.get(f"{base}/ready", timeout=10).status_code == 503
                assert httpx.get(f"{base}/health", timeout=10).status_code == 200
            finally:
                cluster.start()
            back = time.monotonic()
            while True:
                response = httpx.post(f"{base}/metrics/", json=_metric("v1"), timeout=10)
                if response.status_code == 200:
                    break
                assert time.monotonic() - back < 2.0, "not recovered within 2 s"
                time.sleep(0.05)
            assert time.monotonic() - back < 2.0
            assert httpx.get(f"{base}/ready").status_code == 200

    def test_first_writes_after_a_restart_succeed_on_fresh_connections(
        self, cluster: Cluster, database: URL
    ) -> None:
        """The engine does not ping a pooled connection before use; after the server
        restarted, the group commit's first batch meets a dead connection and runs again
        on a new one, so the client sees a 200, not a 503 (and the write counts once)."""
        port = free_port()
        with started(serve(port), env=env_for(database), port=port) as (base, _):
            created = httpx.post(
                f"{base}/experiments", json={"id": "e", "variants": [{"id": "v1"}, {"id": "v2"}]}
            )
            assert created.status_code == 201, created.text
            for unit in ("warm1", "warm2"):  # the pool holds connections now
                assign = httpx.post(f"{base}/experiments/e/assign", json={"unit_id": unit})
                assert assign.status_code == 200, assign.text
            assert httpx.post(f"{base}/metrics/", json=_metric("v1", 5)).status_code == 200
            cluster.stop("fast")
            cluster.start()
            first = httpx.post(f"{base}/experiments/e/assign", json={"unit_id": "after"})
            assert first.status_code == 200, first.text
            posted = httpx.post(f"{base}/metrics/", json=_metric("v1", 7))
            assert posted.status_code == 200, posted.text
        found = asyncio.run(counts(database))
        assert found["units"] == {"warm1", "warm2", "after"}
        assert found["impressions"] == 3
        assert found["metric_rows"] == [("v1", "2024-01-01", 7)]


def _metric(variant: str, impressions: int = 100, day: str = "2024-01-01") -> dict[str, Any]:
    return {
        "experiment_id": "e",
        "variant_id": variant,
        "date": day,
        "impressions": impressions,
        "successes": 1,
    }


def _unit_metric(unit: str) -> dict[str, Any]:
    """Each unit's own daily row: 2 variants x 200 days (an experiment holds at most 100
    variants), with a value that says which unit posted it."""
    number = int(unit[1:])
    day = (date(2024, 1, 1) + timedelta(days=number // 2)).isoformat()
    return _metric(f"m{number % 2}", number + 1, day)


UNITS = [f"u{i}" for i in range(400)]


def retrying_load(
    base: str, disrupt: Callable[[set[str]], Awaitable[None]]
) -> tuple[set[str], set[str]]:
    """400 units assigned, half of them converted (each conversion sent twice, as by a
    client that did not see the first answer), each posting its own daily row; every
    call retried until acknowledged, as the idempotent API allows. `disrupt` runs
    alongside and is handed the set of acknowledged units. Returns (assigned, converted)."""
    acked: set[str] = set()
    converted: set[str] = set()

    async def load() -> None:
        async def until_acked(http: httpx.AsyncClient, path: str, body: Any) -> Any:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    response = await http.post(base + path, json=body)
                    if response.status_code == 200:
                        return response.json()
                    assert response.status_code == 503, response.text
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            raise AssertionError(f"{path} never acknowledged")

        async def one(http: httpx.AsyncClient, unit: str) -> None:
            await until_acked(http, "/experiments/e/assign", {"unit_id": unit})
            acked.add(unit)
            if int(unit[1:]) % 2 == 0:
                body = {"unit_id": unit}
                await until_acked(http, "/experiments/e/conversions", body)
                await until_acked(http, "/experiments/e/conversions", body)
                converted.add(unit)
            await until_acked(http, "/metrics/", _unit_metric(unit))

        semaphore = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=10) as http:

            async def bounded(unit: str) -> None:
                async with semaphore:
                    await one(http, unit)

            await asyncio.gather(disrupt(acked), *(bounded(unit) for unit in UNITS))

    asyncio.run(load())
    return acked, converted


def assert_all_there_once(database: URL, acked: set[str], converted: set[str]) -> None:
    found = asyncio.run(counts(database))
    assert acked == set(UNITS)
    assert found["units"] == acked
    assert found["impressions"] == len(UNITS)  # one per unit, however often retried
    assert found["converted"] == converted
    assert found["successes"] == len(converted)
    # Each unit's own metrics row: present with the value it was posted with.
    assert sorted(found["metric_rows"]) == sorted(
        (m["variant_id"], m["date"], m["impressions"]) for m in map(_unit_metric, UNITS)
    )


async def _after(acked: set[str], count: int) -> None:
    while len(acked) < count:  # noqa: ASYNC110 - polling a plain set is simplest
        await asyncio.sleep(0.01)


class TestPostgresCrash:
    def test_acknowledged_writes_survive_and_retries_count_once(
        self, cluster: Cluster, database: URL
    ) -> None:
        """`pg_ctl stop -m immediate` (a crash: no checkpoint, no goodbye) mid-load."""
        port = free_port()
        with started(serve(port), env=env_for(database), port=port) as (base, _):
            httpx.post(
                f"{base}/experiments", json={"id": "e", "variants": [{"id": "a"}, {"id": "b"}]}
            )

            async def crash(acked: set[str]) -> None:
                await _after(acked, 100)
                await asyncio.to_thread(cluster.stop, "immediate")
                await asyncio.sleep(0.5)
                await asyncio.to_thread(cluster.start)

            acked, converted = retrying_load(base, crash)
        assert_all_there_once(database, acked, converted)


class TestServerKilled:
    def test_acknowledged_writes_survive_sigkill_and_restart(self, database: URL) -> None:
        """The API process SIGKILLed mid-load, then started again on the same port."""
        port = free_port()
        env = env_for(database)
        replacement: list[subprocess.Popen[bytes]] = []
        with started(serve(port), env=env, port=port) as (base, first):
            httpx.post(
                f"{base}/experiments", json={"id": "e", "variants": [{"id": "a"}, {"id": "b"}]}
            )

            def restart() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    serve(port),
                    env={**os.environ, **env},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )

            async def kill(acked: set[str]) -> None:
                await _after(acked, 100)
                first.send_signal(signal.SIGKILL)
                await asyncio.to_thread(first.wait)
                replacement.append(await asyncio.to_thread(restart))

            try:
                acked, converted = retrying_load(base, kill)
            finally:
                for process in replacement:
                    process.terminate()
                    process.wait(timeout=15)
        assert replacement, "the server was never killed"
        assert_all_there_once(database, acked, converted)


def slowly(body: bytes, parts: int = 10, pause_s: float = 0.1) -> Iterator[bytes]:
    """The body in `parts` chunks, `pause_s` apart: a request that is surely in flight."""
    size = -(-len(body) // parts)
    for start in range(0, len(body), size):
        yield body[start : start + size]
        time.sleep(pause_s)


# Small enough to be processed well inside MABAPI_SHUTDOWN_TIMEOUT_SECONDS (4 s): a
# request still running when that runs out is cancelled, by design (exit within 5 s).
ROWS = 2_000


class TestSigterm:
    def test_in_flight_requests_finish_then_exit_within_5_s(self, database: URL) -> None:
        port = free_port()
        first = date(2020, 1, 1)
        rows = [
            {
                "experiment_id": "big",
                "variant_id": f"v{i % 50}",
                "date": (first + timedelta(days=i // 50)).isoformat(),
                "impressions": 10,
                "successes": 1,
            }
            for i in range(ROWS)
        ]
        with started(serve(port), env=env_for(database), port=port) as (base, process):
            answer: dict[str, Any] = {}

            def post() -> None:
                try:
                    answer["response"] = httpx.post(
                        f"{base}/metrics/batch",
                        content=slowly(json.dumps({"metrics": rows}).encode()),
                        headers={"Content-Type": "application/json"},
                        timeout=30,
                    )
                    answer["done"] = time.monotonic()
                except httpx.HTTPError as error:
                    answer["error"] = error

            thread = threading.Thread(target=post)
            thread.start()
            time.sleep(0.3)  # the body is still being sent (over about a second)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            thread.join(timeout=30)
            process.wait(timeout=10)
            exited_after = time.monotonic() - signalled
        assert "error" not in answer, answer
        assert answer["response"].status_code == 200
        assert answer["response"].json()["rows"] == ROWS
        assert answer["done"] > signalled  # it was in flight when the signal came
        assert exited_after < 5.0
        assert asyncio.run(count_metric_rows(database)) == ROWS


class TestMultiProcessMetrics:
    def test_every_scrape_adds_up_both_workers(self, database: URL) -> None:
        port = free_port()
        with started(serve(port, "--workers", "2"), env=env_for(database), port=port) as (
            base,
            _,
        ):
            for _ in range(40):  # a new connection each: the kernel spreads them
                assert httpx.get(f"{base}/experiments").status_code == 200
            totals = set()
            for _ in range(6):
                text = httpx.get(f"{base}/metrics").text
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name == "mabapi_http_requests_total" and sample.labels == {
                            "method": "GET",
                            "route": "/experiments",
                            "status": "200",
                        }:
                            totals.add(sample.value)
        assert totals == {40.0}
