"""What many segments cost: an experiment with S segments of data (2 variants, reported
rows), then the time of an assign naming a new segment, an assign naming a known one,
`GET /allocations?segment=` for a segment never seen, and the segment listing. Each
assign is reported as a ratio to the baseline measured in the same run: an assign of a new
unit on an experiment without segments. In process (the API over ASGI), SQLite by default
or PostgreSQL with --postgres URL; the allocation cache is off (0 s) so every call
computes what it answers, the worst case.

Targets, at 1,000 segments: an assign naming a new segment at most 1.5x the baseline;
the listing under a second.

    python -m benchmarks.segment_scale                   # 1,000 segments
    python -m benchmarks.segment_scale --segments 200 2000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from mabapi.app import create_app
from mabapi.db.migrate import upgrade_url
from mabapi.settings import Settings, to_async_url


async def _timed(call: Callable[[int], Awaitable[httpx.Response]], repeats: int) -> float:
    """Median seconds of `repeats` calls (each with its own number)."""
    times = []
    for n in range(repeats):
        started = time.perf_counter()
        response = await call(n)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return statistics.median(times)


async def measure(segments: int, database_url: str, repeats: int) -> dict[str, float]:
    await upgrade_url(to_async_url(database_url))
    settings = Settings(
        _env_file=None,
        database_url=SecretStr(database_url),
        migrate_on_start=False,
        webhook_delivery=False,
        allocation_cache_seconds=0.0,
        rate_limit_per_second=0,
        # Room for the segments posted and the new ones the assigns name.
        segments_max_per_experiment=max(segments + 10 * repeats, 1000),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            for name in ("plain", "seg"):
                created = await http.post(
                    "/experiments", json={"id": name, "variants": [{"id": "a"}, {"id": "b"}]}
                )
                assert created.status_code == 201, created.text
            rows: list[dict[str, Any]] = [
                {"experiment_id": "seg", "variant_id": v, "date": "2024-01-01",
                 "impressions": 100, "successes": (7 if v == "a" else 9) + s % 5,
                 "segment": f"s{s}"}
                for s in range(segments) for v in ("a", "b")
            ]  # fmt: skip
            for at in range(0, len(rows), 10_000):
                posted = await http.post("/metrics/batch", json={"metrics": rows[at : at + 10_000]})
                assert posted.status_code == 200, posted.text
            await http.post("/metrics/", json={"experiment_id": "plain", "variant_id": "a",
                                               "date": "2024-01-01", "impressions": 100,
                                               "successes": 7})  # fmt: skip

            def assign(experiment: str, segment: Callable[[int], str | None]) -> Any:
                async def call(n: int) -> httpx.Response:
                    body: dict[str, Any] = {"unit_id": f"u{experiment}{n}-{time.time_ns()}"}
                    if (name := segment(n)) is not None:
                        body["segment"] = name
                    return await http.post(f"/experiments/{experiment}/assign", json=body)

                return call

            async def unknown(n: int) -> httpx.Response:
                return await http.get("/allocations/seg", params={"segment": f"never{n}"})

            async def listing(n: int) -> httpx.Response:
                return await http.get("/experiments/seg/segments")

            baseline = await _timed(assign("plain", lambda n: None), repeats)
            return {
                "baseline": baseline,
                "new": await _timed(assign("seg", lambda n: f"new{n}"), repeats),
                "known": await _timed(assign("seg", lambda n: f"s{n % segments}"), repeats),
                "unknown_read": await _timed(unknown, repeats),
                "listing": await _timed(listing, max(3, repeats // 5)),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, nargs="+", default=[1000])
    parser.add_argument("--postgres", help="PostgreSQL URL of an empty database to use")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(
        "| segments | assign, no segments | new segment | known segment "
        "| unknown ?segment= | listing |"
    )
    print("|---|---|---|---|---|---|")
    for count in args.segments:
        with tempfile.TemporaryDirectory() as folder:
            url = args.postgres or f"sqlite:///{Path(folder) / 'bench.db'}"
            make_url(url)  # a clear error for a malformed URL
            times = asyncio.run(measure(count, url, args.repeats))
        base = times["baseline"]
        cells = [f"{base * 1000:.1f} ms (1.00x)"] + [
            f"{times[key] * 1000:.1f} ms ({times[key] / base:.2f}x)"
            for key in ("new", "known", "unknown_read")
        ]
        print(f"| {count:,} | " + " | ".join(cells) + f" | {times['listing'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
