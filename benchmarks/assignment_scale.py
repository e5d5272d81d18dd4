"""Does assignment stay fast with 10 million stored assignments?

    python benchmarks/assignment_scale.py [--rows 10000000] [--repeats 300]

On a throwaway PostgreSQL database, in process (no network): the median time of
`POST /experiments/{id}/assign` for a new unit and for a stored unit this process has
not seen (its memo cannot answer: the database read the first visit costs), first with
1,000 stored assignments, then after `--rows` more are loaded by SQL into the same
experiment (the unique index on (experiment, unit) then holds all of them). Prints both
and their ratio (assignment must stay fast: we call <= 2x fast).
"""

from __future__ import annotations

import argparse
import asyncio
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

LOAD = """
INSERT INTO assignments
    (experiment_id, unit_id, variant_id, probability, assigned_at, assigned_date)
SELECT 'scale', 'stored-' || g, (ARRAY['a', 'b', 'c'])[1 + g % 3], 1.0 / 3, now(), current_date
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
"""


async def sql(url: str, statement: str, **params: int) -> None:
    engine = create_async_engine(to_async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement), params)
    finally:
        await engine.dispose()


async def timed_assigns(url: str, units: list[str]) -> float:
    """Median ms of one assign per unit, through a fresh app (an empty memo)."""
    settings = Settings(_env_file=None, database_url=SecretStr(url), migrate_on_start=False)
    app = create_app(settings)
    times = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
            await client.post("/experiments/scale/assign", json={"unit_id": "warm-up"})
            for unit in units:
                started = time.perf_counter()
                response = await client.post("/experiments/scale/assign", json={"unit_id": unit})
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
    return statistics.median(times) * 1000


async def measure(server: str, rows: int, repeats: int) -> dict[str, float]:
    name = f"mabapi_scale_{uuid.uuid4().hex[:8]}"
    await sql(server, f'CREATE DATABASE "{name}"')
    url = to_async_url(server).set(database=name).render_as_string(hide_password=False)
    results: dict[str, float] = {}
    try:
        await upgrade_url(to_async_url(url))
        settings = Settings(_env_file=None, database_url=SecretStr(url), migrate_on_start=False)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                variants = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
                created = await client.post(
                    "/experiments", json={"id": "scale", "variants": variants}
                )
                assert created.status_code == 201, created.text
        await sql(url, LOAD, first=1, last=1_000)
        await sql(url, "VACUUM ANALYZE assignments")
        step = max(1, 1_000 // repeats)
        results["new, 1k stored"] = await timed_assigns(
            url, [f"new-small-{i}" for i in range(repeats)]
        )
        results["stored, 1k stored"] = await timed_assigns(
            url, [f"stored-{i}" for i in range(1, 1_001, step)][:repeats]
        )
        started = time.perf_counter()
        for first in range(1_001, rows + 1, 1_000_000):
            await sql(url, LOAD, first=first, last=min(rows, first + 999_999))
        await sql(url, "VACUUM ANALYZE assignments")
        results["load seconds"] = time.perf_counter() - started
        results["new, big"] = await timed_assigns(url, [f"new-big-{i}" for i in range(repeats)])
        spread = max(1, rows // repeats)
        results["stored, big"] = await timed_assigns(
            url, [f"stored-{i}" for i in range(1, rows + 1, spread)][:repeats]
        )
        return results
    finally:
        await sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    r = asyncio.run(measure(args.postgres, args.rows, args.repeats))
    big = f"{args.rows + 1_000:,}"
    print(
        f"| assign (median of {args.repeats}, in process) | 1,000 stored | {big} stored | ratio |"
    )
    print("|---|---|---|---|")
    for kind in ("new", "stored"):
        small, large = r[f"{kind}, 1k stored"], r[f"{kind}, big"]
        label = "new unit" if kind == "new" else "stored unit, first visit to this process"
        print(f"| {label} | {small:.2f} ms | {large:.2f} ms | {large / small:.2f} |")
    print(f"\n{args.rows:,} rows loaded (with the unique index) in {r['load seconds']:.0f} s")


if __name__ == "__main__":
    main()
