"""Off-policy evaluation over a million logged units: how long one answer takes.

    python -m benchmarks.ope_scale [--units 1000000] [--repeats 5]

On a throwaway PostgreSQL database, in process (no network): `--units` assignments are
loaded by SQL into one experiment (3 variants, propensities from 50 allocation refreshes,
5% of units converted), then `POST /experiments/{id}/evaluate` is timed (median of
`--repeats`), next to the database's own full read of the same rows (`SELECT count(*),
sum(probability)` over the experiment), which is the floor any answer that reads every
unit pays. Target: under 2 s, and a small multiple of that floor (one aggregation by
variant and propensity, not a row-by-row read).
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

from benchmarks.assignment_scale import sql
from mabapi.app import create_app
from mabapi.db.migrate import upgrade_url
from mabapi.settings import Settings, to_async_url

# Refresh r serves shares (p_a, p_b, p_c) drifting towards c; unit g is in refresh g % 50.
LOAD = """
INSERT INTO assignments (experiment_id, unit_id, variant_id, probability, assigned_at,
                         assigned_date, converted_at)
SELECT 'ope', 'u' || g, v.variant,
       CASE v.variant WHEN 'a' THEN 0.4 - 0.006 * (g % 50)
                      WHEN 'b' THEN 0.3 ELSE 0.3 + 0.006 * (g % 50) END,
       now(), current_date, CASE WHEN g % 20 = 0 THEN now() END
FROM generate_series(1, CAST(:units AS bigint)) AS g
CROSS JOIN LATERAL (SELECT (ARRAY['a', 'b', 'c'])[1 + (g / 50) % 3] AS variant) AS v
"""
FLOOR = "SELECT count(*), sum(probability) FROM assignments WHERE experiment_id = 'ope'"


async def floor_seconds(url: str, repeats: int) -> float:
    engine = create_async_engine(to_async_url(url))
    times = []
    try:
        async with engine.connect() as connection:
            for _ in range(repeats + 1):
                started = time.perf_counter()
                await connection.execute(text(FLOOR))
                times.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return statistics.median(times[1:])


async def measure(server: str, units: int, repeats: int) -> tuple[float, float, int]:
    name = f"mabapi_ope_{uuid.uuid4().hex[:8]}"
    await sql(server, f'CREATE DATABASE "{name}"')
    url = to_async_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade_url(to_async_url(url))
        settings = Settings(_env_file=None, database_url=SecretStr(url), migrate_on_start=False)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                variants = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
                created = await client.post(
                    "/experiments", json={"id": "ope", "variants": variants}
                )
                assert created.status_code == 201, created.text
                await sql(url, LOAD, units=units)
                await sql(url, "ANALYZE assignments")
                floor = await floor_seconds(url, repeats)
                body = {"policy": {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}}
                times = []
                for _ in range(repeats + 1):
                    started = time.perf_counter()
                    answer = await client.post("/experiments/ope/evaluate", json=body, timeout=60)
                    times.append(time.perf_counter() - started)
                    assert answer.status_code == 200, answer.text
                logged = answer.json()["logged"]["units"]
        return statistics.median(times[1:]), floor, logged
    finally:
        await sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    seconds, floor, logged = asyncio.run(measure(args.server, args.units, args.repeats))
    print("| logged units | evaluate (s) | full read by PostgreSQL (s) | ratio | target |")
    print("|---|---|---|---|---|")
    verdict = "met" if seconds < 2.0 else "MISSED"
    print(
        f"| {logged:,} | {seconds:.3f} | {floor:.3f} | {seconds / floor:.1f}x | < 2 s: {verdict} |"
    )


if __name__ == "__main__":
    main()
