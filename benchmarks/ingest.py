"""Ingestion: one POST /metrics/ per row vs POST /metrics/batch, on SQLite and PostgreSQL.

    python benchmarks/ingest.py [--rows 1000] [--postgres postgresql://postgres@127.0.0.1/postgres]

Runs the app in process (httpx ASGI transport, no network) on a fresh database per
backend, posts the same rows both ways and prints rows per second and the batch/single
speed-up measured in the same run. Pass `--postgres ''` to skip PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from mabapi.app import create_app
from mabapi.db.migrate import upgrade_url
from mabapi.settings import Settings, to_async_url


def rows(count: int, experiment_id: str) -> list[dict[str, Any]]:
    return [
        {
            "experiment_id": experiment_id,
            "variant_id": f"v{index % 10}",
            "date": f"{2000 + index // 10 // 336}-{1 + (index // 10 // 28) % 12:02d}-"
            f"{1 + (index // 10) % 28:02d}",
            "impressions": 1000,
            "successes": index % 100,
        }
        for index in range(count)
    ]


async def measure(url: URL, count: int) -> tuple[float, float]:
    await upgrade_url(url)
    settings = Settings(
        _env_file=None,
        database_url=SecretStr(url.render_as_string(hide_password=False)),
        migrate_on_start=False,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            single_rows = rows(count, "single")
            start = time.perf_counter()
            for row in single_rows:
                response = await client.post("/metrics/", json=row)
                assert response.status_code == 200, response.text
            single = time.perf_counter() - start
            start = time.perf_counter()
            response = await client.post("/metrics/batch", json={"metrics": rows(count, "batch")})
            assert response.status_code == 200, response.text
            batch = time.perf_counter() - start
    return count / single, count / batch


async def admin(server: URL, sql: str) -> None:
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    results: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        sqlite = to_async_url(f"sqlite:///{Path(folder) / 'bench.db'}")
        results.append(("sqlite", *await measure(sqlite, args.rows)))
    if args.postgres:
        server = to_async_url(args.postgres)
        name = f"mabapi_bench_{uuid.uuid4().hex[:8]}"
        await admin(server, f'CREATE DATABASE "{name}"')
        try:
            results.append(("postgresql", *await measure(server.set(database=name), args.rows)))
        finally:
            await admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')
    print(
        f"{args.rows} rows | {'backend':<10} | {'single rows/s':>13} | {'batch rows/s':>12} | ratio"
    )
    for backend, single, batch in results:
        print(f"{'':>{len(str(args.rows)) + 5}} | {backend:<10} | {single:13.0f} | {batch:12.0f} |"
              f" {batch / single:5.1f}x")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
