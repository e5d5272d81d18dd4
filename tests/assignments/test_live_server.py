"""Real-time mode against real server processes on PostgreSQL: two processes racing,
retries, and a SIGKILL in the middle of a load run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from mabapi.assignments.models import Assignment
from mabapi.counts.models import LiveMetric
from mabapi.db.engine import make_engine
from tests.fixtures.databases import (
    fresh_postgres,
)
from tests.fixtures.servers import free_port, plain, running, started

UNITS = 2000
CLIENTS = 64


@pytest.fixture
def postgres_database() -> Iterator[URL]:
    with fresh_postgres("mabapi_live") as url:
        yield url


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "mabapi", "serve", "--port", str(port)]


async def database_counts(url: URL) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            assignments = (
                await connection.execute(select(Assignment.unit_id, Assignment.variant_id,
                                                Assignment.converted_at))
            ).all()  # fmt: skip
            impressions = await connection.scalar(select(func.sum(LiveMetric.impressions)))
            successes = await connection.scalar(select(func.sum(LiveMetric.successes)))
    finally:
        await engine.dispose()
    return {
        "variants": {row[0]: row[1] for row in assignments},
        "converted": {row[0] for row in assignments if row[2] is not None},
        "rows": len(assignments),
        "impressions": int(impressions or 0),
        "successes": int(successes or 0),
    }


async def run_clients(bases: list[str], jobs: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Send jobs (path, body) round-robin over the servers with CLIENTS in flight."""
    queue: asyncio.Queue[tuple[int, str, dict[str, Any]]] = asyncio.Queue()
    for index, (path, body) in enumerate(jobs):
        queue.put_nowait((index, path, body))
    results: list[Any] = [None] * len(jobs)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            index, path, body = queue.get_nowait()
            base = bases[index % len(bases)]
            # Like a real client, retry a transport error (a keep-alive connection the
            # server closed as the request was sent): assign and convert are idempotent.
            for _attempt in range(3):
                try:
                    response = await http.post(base + path, json=body)
                    results[index] = (response.status_code, response.json())
                    break
                except httpx.TransportError as error:
                    results[index] = (None, repr(error))

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(CLIENTS)))
    return results


class TestTwoProcesses:
    def test_every_unit_gets_one_variant_and_counts_once(self, postgres_database: URL) -> None:
        env = {"MABAPI_DATABASE_URL": plain(postgres_database)}
        port_a, port_b = free_port(), free_port()
        with (
            running(serve_command(port_a), env=env, port=port_a) as base_a,
            running(serve_command(port_b), env=env, port=port_b) as base_b,
        ):
            created = httpx.post(f"{base_a}/experiments", json={
                "id": "live", "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}]})  # fmt: skip
            assert created.status_code == 201
            jobs = [("/experiments/live/assign", {"unit_id": f"user-{unit}"})
                    for _ in range(3) for unit in range(UNITS)]  # fmt: skip
            results = asyncio.run(run_clients([base_a, base_b], jobs))
            assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][
                :3
            ]
            seen: dict[str, set[str]] = {}
            for _, body in results:
                seen.setdefault(body["unit_id"], set()).add(body["variant_id"])
            assert len(seen) == UNITS
            assert all(len(variants) == 1 for variants in seen.values())
            # A retried call whose first answer was lost reports new: false; the database
            # count below is the exact check.
            assert sum(body["new"] for _, body in results) <= UNITS
            # Conversions for a quarter of the units, each retried 3 times, both servers.
            converting = [f"user-{unit}" for unit in range(0, UNITS, 4)]
            jobs = [("/experiments/live/conversions", {"unit_id": unit})
                    for _ in range(3) for unit in converting]  # fmt: skip
            results = asyncio.run(run_clients([base_b, base_a], jobs))
            assert all(status == 200 for status, _ in results)
            assert sum(body["counted"] for _, body in results) <= len(converting)
            summary = httpx.get(f"{base_a}/experiments/live/summary").json()
        counts = asyncio.run(database_counts(postgres_database))
        assert counts["rows"] == UNITS
        assert counts["impressions"] == UNITS
        assert counts["successes"] == len(converting)
        assert {u: {v} for u, v in counts["variants"].items()} == seen
        assert sum(v["impressions"] for v in summary["variants"]) == UNITS


class TestKill:
    def test_acknowledged_writes_survive_sigkill(self, postgres_database: URL) -> None:
        env = {"MABAPI_DATABASE_URL": plain(postgres_database)}
        port = free_port()
        acked_assign: dict[str, str] = {}
        acked_convert: set[str] = set()
        with started(serve_command(port), env=env, port=port) as (base, process):
            created = httpx.post(f"{base}/experiments", json={
                "id": "live", "variants": [{"id": "a"}, {"id": "b"}]})  # fmt: skip
            assert created.status_code == 201

            async def load() -> None:
                enough = asyncio.Event()

                async def one(http: httpx.AsyncClient, unit: int) -> None:
                    name = f"k-{unit}"
                    try:
                        response = await http.post(
                            f"{base}/experiments/live/assign", json={"unit_id": name}
                        )
                        if response.status_code == 200:
                            acked_assign[name] = response.json()["variant_id"]
                            if len(acked_assign) >= 300:
                                enough.set()
                            converted = await http.post(
                                f"{base}/experiments/live/conversions", json={"unit_id": name}
                            )
                            if converted.status_code == 200 and converted.json()["counted"]:
                                acked_convert.add(name)
                    except httpx.HTTPError:
                        pass  # the server died under this request: not acknowledged

                async def killer() -> None:
                    await enough.wait()
                    os.kill(process.pid, signal.SIGKILL)

                limits = httpx.Limits(max_connections=32)
                async with httpx.AsyncClient(timeout=10, limits=limits) as http:
                    semaphore = asyncio.Semaphore(32)

                    async def bounded(unit: int) -> None:
                        async with semaphore:
                            await one(http, unit)

                    await asyncio.gather(killer(), *(bounded(u) for u in range(3000)))

            asyncio.run(load())
            assert process.wait(timeout=10) == -signal.SIGKILL
        assert len(acked_assign) >= 300
        counts = asyncio.run(database_counts(postgres_database))
        for unit, variant in acked_assign.items():
            assert counts["variants"].get(unit) == variant
        assert acked_convert <= counts["converted"]
        # Nothing counted twice: one impression per stored assignment, one success per
        # converted unit, whatever was in flight when the process died.
        assert counts["impressions"] == counts["rows"]
        assert counts["successes"] == len(counts["converted"])
