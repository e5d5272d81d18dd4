"""Does an allocation slow down as an experiment ages?

    python benchmarks/history.py [--postgres URL] [--repeats 30]

Two experiments of 50 variants on a throwaway PostgreSQL database: one with a single day
of data, one with three years of daily rows (54,750 rows). Prints the median time of
GET /allocations (in process, no network) for each and their ratio (target: <= 2).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import statistics
import time
import uuid

import httpx
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mabapi.app import create_app
from mabapi.db.migrate import upgrade_url
from mabapi.settings import Settings, to_async_url


async def admin(server: str, sql: str) -> None:
    engine = create_async_engine(to_async_url(server), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


async def measure(server: str, repeats: int) -> dict[str, float]:
    name = f"mabapi_history_{uuid.uuid4().hex[:8]}"
    await admin(server, f'CREATE DATABASE "{name}"')
    url = to_async_url(server).set(database=name)
    try:
        await upgrade_url(url)
        settings = Settings(
            _env_file=None,
            database_url=SecretStr(url.render_as_string(hide_password=False)),
            migrate_on_start=False,
            # Computed on every call: a cached answer would time the cache, not the query.
            allocation_cache_seconds=0,
        )
        app = create_app(settings)
        medians: dict[str, float] = {}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://b", timeout=300
            ) as c:
                start = datetime.date(2021, 1, 1)
                for experiment, days in (("one_day", 1), ("three_years", 3 * 365)):
                    rows = [
                        {"experiment_id": experiment, "variant_id": f"v{v}",
                         "date": (start + datetime.timedelta(days=d)).isoformat(),
                         "impressions": 1000, "successes": 50 + v}
                        for d in range(days) for v in range(50)
                    ]  # fmt: skip
                    for index in range(0, len(rows), 10_000):
                        batch = {"metrics": rows[index : index + 10_000]}
                        assert (await c.post("/metrics/batch", json=batch)).status_code == 200
                for experiment in ("one_day", "three_years"):
                    times = []
                    for _ in range(repeats):
                        started = time.perf_counter()
                        response = await c.get(f"/allocations/{experiment}?for_date=2025-01-01")
                        times.append(time.perf_counter() - started)
                        assert response.status_code == 200
                    medians[experiment] = statistics.median(times) * 1000
        return medians
    finally:
        await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    medians = asyncio.run(measure(args.postgres, args.repeats))
    ratio = medians["three_years"] / medians["one_day"]
    print("| experiment (50 variants) | GET /allocations median ms |")
    print("|---|---|")
    print(f"| 1 day of data | {medians['one_day']:.1f} |")
    print(f"| 3 years of daily rows (54,750) | {medians['three_years']:.1f} |")
    print(f"\nratio: {ratio:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
