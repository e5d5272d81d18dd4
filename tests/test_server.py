"""The real thing: `mabapi serve`, `uvicorn main:app` and `python -m mabapi` as processes,
driven over HTTP exactly as the README shows."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.fixtures.databases import (
    fresh_postgres,
)
from tests.fixtures.factories import metric
from tests.fixtures.servers import BIN, free_port, plain, running, started


@pytest.fixture
def postgres_database() -> Iterator[URL]:
    with fresh_postgres("mabapi_server") as url:
        yield url


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
class TestReadmeQuickStart:
    def test_mabapi_serve_on_sqlite_with_the_readme_curls(self, tmp_path: Path) -> None:
        port = free_port()
        env = {"MABAPI_DATABASE_URL": f"sqlite:///{tmp_path}/quick.db", "MABAPI_PORT": str(port)}
        with running([str(BIN / "mabapi"), "serve"], env=env, port=port) as base:
            host = base.replace("127.0.0.1", "localhost")
            post = subprocess.run(
                [
                    "curl", "-s", "-X", "POST", f"{host}/metrics/",
                    "-H", "Content-Type: application/json",
                    "-d", '{"experiment_id": "homepage_test", "variant_id": "control", '
                    '"date": "2023-07-15", "impressions": 1000, "successes": 120}',
                ],
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            assert post.stdout == '{"status":"success"}'
            second = metric(variant_id="variant1", successes=150)
            assert httpx.post(f"{base}/metrics/", json=second).status_code == 200
            get = subprocess.run(
                ["curl", "-s", f"{host}/allocations/homepage_test?for_date=2023-07-16"],
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            body = httpx.Response(200, content=get.stdout).json()
            assert body["experiment_id"] == "homepage_test"
            assert body["date"] == "2023-07-16"
            assert body["allocations"] == {"control": 2.5, "variant1": 97.5}
            assert httpx.get(f"{base}/docs").status_code == 200
            assert httpx.get(f"{base}/redoc").status_code == 200
        assert (tmp_path / "quick.db").exists()

    def test_original_uvicorn_main_app(self, tmp_path: Path) -> None:
        port = free_port()
        env = {"MABAPI_DATABASE_URL": f"sqlite:///{tmp_path}/orig.db"}
        command = [str(BIN / "uvicorn"), "main:app", "--port", str(port)]
        with running(command, env=env, port=port) as base:
            response = httpx.post(f"{base}/metrics/", json=metric())
            assert response.json() == {"status": "success"}
            assert httpx.get(f"{base}/ready").json()["status"] == "ready"

    def test_python_dash_m(self, tmp_path: Path) -> None:
        port = free_port()
        env = {"MABAPI_DATABASE_URL": f"sqlite:///{tmp_path}/m.db"}
        command = [sys.executable, "-m", "mabapi", "serve", "--port", str(port)]
        with running(command, env=env, port=port) as base:
            assert httpx.get(f"{base}/allocations/none").status_code == 404


class TestLogs:
    def test_under_json_every_line_from_the_first_is_json(self, tmp_path: Path) -> None:
        port = free_port()
        log = tmp_path / "server.log"
        env = {
            "MABAPI_DATABASE_URL": f"sqlite:///{tmp_path}/json.db",
            "MABAPI_PORT": str(port),
            "MABAPI_LOG_FORMAT": "json",
        }
        with started([str(BIN / "mabapi"), "serve"], env=env, port=port, log=log) as (base, _):
            assert httpx.get(f"{base}/health").status_code == 200
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        assert lines, "the server wrote nothing"
        first = json.loads(lines[0])
        assert "migrated to" in first["message"]
        for line in lines:
            assert isinstance(json.loads(line), dict), line


class TestPostgresServer:
    def test_two_workers_fifty_concurrent_posts(self, postgres_database: URL) -> None:
        port = free_port()
        env = {"MABAPI_DATABASE_URL": plain(postgres_database)}
        command = [str(BIN / "mabapi"), "serve", "--port", str(port), "--workers", "2"]
        rows = [
            metric(experiment_id="live", variant_id=f"v{i % 4}", date=f"2024-03-{1 + i // 4:02d}")
            for i in range(50)
        ]

        async def post_all(base: str) -> list[int]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                responses = await asyncio.gather(*(http.post("/metrics/", json=r) for r in rows))
                return [response.status_code for response in responses]

        with running(command, env=env, port=port) as base:
            assert asyncio.run(post_all(base)) == [200] * 50
            stored = httpx.get(f"{base}/experiments/live/metrics").json()["metrics"]
            assert len(stored) == 50
            allocation = httpx.get(f"{base}/allocations/live?for_date=2024-04-01").json()
            assert sum(allocation["inputs"][v]["impressions"] for v in allocation["inputs"]) == (
                50_000
            )


def test_start_up_objects_are_frozen_once_out_of_the_garbage_collectors_reach(
    tmp_path: Path,
) -> None:
    """A worker's start-up (modules, routes, models) is moved to the permanent generation,
    so full collections under load do not walk it again; a second app in the same process
    does not freeze again (test processes start many)."""
    script = f"""
import gc
calls = []
real_freeze = gc.freeze
gc.freeze = lambda: (calls.append(1), real_freeze())[1]
from fastapi.testclient import TestClient
from mabapi.app import create_app
from mabapi.settings import Settings
settings = Settings(database_url="sqlite:///{tmp_path}/gc.db")
before = gc.get_freeze_count()
with TestClient(create_app(settings)) as client:
    assert client.get("/health").status_code == 200
    first = gc.get_freeze_count()
with TestClient(create_app(settings)) as client:
    assert client.get("/health").status_code == 200
print(before, first, len(calls))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    before, first, freezes = (int(word) for word in out)
    assert before == 0
    assert first > 100_000  # the whole start-up, not a handful of objects
    assert freezes == 1
