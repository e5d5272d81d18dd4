"""Races an adversarial run found, reproduced with real server processes (`mabapi serve
--workers 2`): two projects creating one new experiment at the same moment, and
GET /allocations read while live traffic writes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.databases import fresh_postgres
from tests.fixtures.servers import free_port, plain, running

pytestmark = pytest.mark.slow

ADMIN_KEY = "isolation-admin-key-0123456789abcdef0123456789"


@contextmanager
def server(database: str, **env: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "mabapi", "serve", "--port", str(port), "--workers", "2"]
    settings = {"MABAPI_DATABASE_URL": database, "MABAPI_LOG_LEVEL": "warning", **env}
    with running(command, env=settings, port=port) as base:
        yield base


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'mabapi.db'}"
        return
    with fresh_postgres("mabapi_race") as url:
        yield plain(url)


def _key(url: str, project: str, scope: str) -> dict[str, str]:
    """A key of another project than the admin's, made as an operator does (the CLI)."""
    made = subprocess.run(
        [sys.executable, "-m", "mabapi", "keys", "create", "--project", project, "--scope", scope],
        env={**os.environ, "MABAPI_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=True,
    )
    return {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}


def test_two_projects_racing_to_create_one_experiment_never_mix(tmp_path: Path) -> None:
    rounds = 150
    with (
        database("postgresql", tmp_path) as url,
        server(url, MABAPI_REQUIRE_AUTH="true", MABAPI_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY) as base,
    ):
        keys = {project: _key(url, project, "write") for project in ("alpha", "beta")}

        async def race() -> list[dict[str, list[int]]]:
            outcomes = []
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                for index in range(rounds):
                    experiment = f"race-{index}"

                    def post(project: str, day: int, experiment: str = experiment) -> Any:
                        body = {
                            "experiment_id": experiment,
                            "variant_id": f"{project}-arm",
                            "date": f"2024-01-0{day}",
                            "impressions": 100,
                            "successes": 10,
                        }
                        return client.post("/metrics/", json=body, headers=keys[project])

                    calls = [post(p, day) for day in range(1, 5) for p in ("alpha", "beta")]
                    answers = await asyncio.gather(*calls)
                    codes: dict[str, list[int]] = {"alpha": [], "beta": []}
                    for position, answer in enumerate(answers):
                        codes["alpha" if position % 2 == 0 else "beta"].append(answer.status_code)
                    outcomes.append(codes)
            return outcomes

        outcomes = asyncio.run(race())
        mixed = []
        for index, codes in enumerate(outcomes):
            experiment = f"race-{index}"
            winners = [p for p, got in codes.items() if set(got) == {200}]
            losers = [p for p, got in codes.items() if set(got) == {404}]
            if len(winners) != 1 or len(losers) != 1:
                mixed.append((experiment, codes))
                continue
            winner, loser = winners[0], losers[0]
            stored = httpx.get(f"{base}/experiments/{experiment}/metrics", headers=keys[winner])
            assert stored.status_code == 200
            variants = {row["variant_id"] for row in stored.json()["metrics"]}
            if variants != {f"{winner}-arm"} or len(stored.json()["metrics"]) != 4:
                mixed.append((experiment, stored.json()))
            # The loser's key learns nothing: the same 404 as for an id that exists nowhere.
            hidden = httpx.get(f"{base}/experiments/{experiment}", headers=keys[loser])
            assert hidden.status_code == 404
        assert mixed == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_allocations_under_live_traffic_use_inputs_that_existed(
    backend: str, tmp_path: Path
) -> None:
    """Readers plan today while 16 clients assign and convert (all dated today): every
    answer's inputs are exactly the days before today, and no answer is a 500."""
    today = datetime.now(UTC).date()
    past = [today - timedelta(days=offset) for offset in range(1, 4)]
    with (
        database(backend, tmp_path) as url,
        server(url, MABAPI_ALLOCATION_CACHE_SECONDS="0") as base,
    ):
        expected = {
            "control": {"impressions": 0, "successes": 0},
            "b": {"impressions": 0, "successes": 0},
        }
        for day in past:
            for variant, successes in (("control", 30), ("b", 45)):
                response = httpx.post(
                    f"{base}/metrics/",
                    json={
                        "experiment_id": "live",
                        "variant_id": variant,
                        "date": day.isoformat(),
                        "impressions": 300,
                        "successes": successes,
                    },
                )
                assert response.status_code == 200
                expected[variant]["impressions"] += 300
                expected[variant]["successes"] += successes

        async def traffic() -> tuple[list[int], list[dict[str, Any]]]:
            statuses: list[int] = []
            answers: list[dict[str, Any]] = []
            stop = asyncio.Event()
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:

                async def writer(worker: int) -> None:
                    for unit in range(60):
                        unit_id = f"w{worker}-u{unit}"
                        assigned = await client.post(
                            "/experiments/live/assign", json={"unit_id": unit_id}
                        )
                        statuses.append(assigned.status_code)
                        if unit % 2 == 0:
                            converted = await client.post(
                                "/experiments/live/conversions", json={"unit_id": unit_id}
                            )
                            statuses.append(converted.status_code)

                async def reader() -> None:
                    while not stop.is_set():
                        answer = await client.get(
                            "/allocations/live", params={"for_date": today.isoformat()}
                        )
                        statuses.append(answer.status_code)
                        if answer.status_code == 200:
                            answers.append(answer.json())

                readers = [asyncio.create_task(reader()) for _ in range(4)]
                await asyncio.gather(*(writer(worker) for worker in range(16)))
                stop.set()
                await asyncio.gather(*readers)
            return statuses, answers

        statuses, answers = asyncio.run(traffic())
        assert sorted(set(statuses)) == [200]
        assert len(answers) > 20
        wrong = [a["inputs"] for a in answers if a["inputs"] != expected]
        assert wrong == []


def test_workers_starting_together_on_a_fresh_database_both_stay_up(tmp_path: Path) -> None:
    """Both workers insert the bootstrap key at start; the loser of that race used to hit
    the unique key, and uvicorn then stopped the whole server."""
    for _ in range(4):
        with (
            database("postgresql", tmp_path) as url,
            server(url, MABAPI_REQUIRE_AUTH="true", MABAPI_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY) as base,
        ):
            for _ in range(20):  # both workers answer (connections spread over them)
                answer = httpx.get(f"{base}/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
                assert answer.status_code == 200


def test_concurrent_bootstraps_insert_one_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race itself, made certain: two transactions look for the key before either
    inserts it."""
    from sqlalchemy import func, select

    from mabapi.access import repository as key_repository
    from mabapi.access import service as access
    from mabapi.access.models import ApiKey
    from mabapi.db.engine import make_engine, make_sessionmaker
    from mabapi.db.migrate import upgrade_url

    with fresh_postgres("mabapi_bootstrap") as url:
        asyncio.run(upgrade_url(url))

        async def race() -> int:
            engine = make_engine(url)
            sessionmaker = make_sessionmaker(engine)
            both_looked = asyncio.Barrier(2)
            original = key_repository.get_key

            async def slow_get_key(session: Any, key_id: str) -> Any:
                found = await original(session, key_id)
                # Wait (a little) for the other to have looked too. Where the insert
                # comes first, the other is blocked on it: the timeout lets this go on.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(both_looked.wait(), 1.0)
                return found

            async def start() -> None:
                async with sessionmaker() as session, session.begin():
                    await access.ensure_bootstrap_key(session, token=ADMIN_KEY)

            monkeypatch.setattr(key_repository, "get_key", slow_get_key)
            await asyncio.gather(start(), start())
            async with sessionmaker() as session:
                count = await session.scalar(select(func.count()).select_from(ApiKey))
            await engine.dispose()
            return int(count or 0)

        assert asyncio.run(race()) == 1
