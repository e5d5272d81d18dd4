"""What FastAPI's own OpenTelemetry check costs a cached answer.

    python -m benchmarks.telemetry [--requests 10000] [--rounds 3]

A cached GET /allocations served in process (the ASGI app called directly: no HTTP
server, no network, so the app's own work is all that is timed), on a throwaway SQLite
database, with MABAPI_OPENTELEMETRY on (FastAPI asks OpenTelemetry on every request
whether an SDK is configured) and off (the default). Prints the best of `rounds` runs of
`requests` calls, in microseconds per request, each setting measured twice, alternately,
and the bare endpoint load.py compares with, called the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import MutableMapping
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from mabapi.app import create_app
from mabapi.db.migrate import upgrade_url
from mabapi.settings import Settings

SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
    "scheme": "http", "path": "/allocations/e", "raw_path": b"/allocations/e",
    "query_string": b"", "root_path": "", "headers": [(b"host", b"bench")],
    "client": ("127.0.0.1", 1), "server": ("bench", 80),
}  # fmt: skip


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: MutableMapping[str, Any]) -> None:
    if message["type"] == "http.response.start":
        assert message["status"] == 200, message


async def best_time(app: Any, scope: dict[str, Any], requests: int, rounds: int) -> float:
    """Microseconds per call of `app` with `scope`, after a warm-up: the best of `rounds`
    runs of `requests` calls."""
    for _ in range(requests // 5):
        await app(dict(scope), _receive, _send)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(requests):
            await app(dict(scope), _receive, _send)
        best = min(best, (time.perf_counter() - start) / requests * 1e6)
    return best


async def per_request(opentelemetry: bool, requests: int, rounds: int) -> float:
    """Microseconds per cached GET /allocations, the best of `rounds`."""
    url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
    await upgrade_url(make_url(url))
    settings = Settings(
        database_url=SecretStr(url), opentelemetry=opentelemetry, log_level="warning"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            body = {"id": "e", "variants": [{"id": "a"}, {"id": "b"}]}
            assert (await client.post("/experiments", json=body)).status_code == 201
        # The warm-up's first call caches the answer; every timed call reuses it.
        return await best_time(app, SCOPE, requests, rounds)


async def bare_per_request(requests: int, rounds: int) -> float:
    """The same for the bare endpoint of benchmarks/load.py (`benchmarks/bare_app.py`)."""
    from benchmarks.bare_app import app

    return await best_time(app, {**SCOPE, "path": "/", "raw_path": b"/"}, requests, rounds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[float]] = {True: [], False: []}
    for opentelemetry in (True, False, True, False):
        results[opentelemetry].append(await per_request(opentelemetry, args.requests, args.rounds))
    print("| MABAPI_OPENTELEMETRY | us per cached GET /allocations (in process) | ratio to off |")
    print("|---|---|---|")
    off = min(results[False])
    for setting in (False, True):
        value = min(results[setting])
        print(f"| {str(setting).lower()} | {value:.1f} | {value / off:.2f}x |")
    bare = await bare_per_request(args.requests, args.rounds)
    print(f"| (the bare endpoint of benchmarks/load.py, GET /) | {bare:.1f} | {bare / off:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
