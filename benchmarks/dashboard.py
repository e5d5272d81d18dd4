"""The dashboard's experiment list at size: N experiments of V variants with a week of
data each. Reports the time of each load of /ui (a page of 20) against the baseline
measured in the same run, GET /health (a bare endpoint), and how many loads it takes
until every row of the first page shows its summary (each load computes the summaries
it lacks for at most 1 s, and a page with rows still missing reloads itself).

Target: every load of /ui under 2 s at 200 experiments x 100 variants (two loads took
412 s when the list summarised all 200 on every load).

    python -m benchmarks.dashboard                  # 200 x 100
    python -m benchmarks.dashboard --experiments 50 --variants 10
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from mabapi.app import create_app
from mabapi.db.migrate import upgrade_url
from mabapi.settings import Settings, to_async_url


async def measure(experiments: int, variants: int) -> list[tuple[str, float, str]]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        await upgrade_url(to_async_url(url))
        settings = Settings(
            _env_file=None,
            database_url=SecretStr(url),
            migrate_on_start=False,
            webhook_delivery=False,
            rate_limit_per_second=0,
        )
        app = create_app(settings)
        results: list[tuple[str, float, str]] = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                rows = [
                    {"experiment_id": f"e{e:03d}", "variant_id": f"v{k}",
                     "date": f"2024-01-{d:02d}", "impressions": 1000, "successes": 100 + k % 13}
                    for e in range(experiments) for k in range(variants) for d in range(1, 8)
                ]  # fmt: skip
                for at in range(0, len(rows), 10_000):
                    posted = await http.post(
                        "/metrics/batch", json={"metrics": rows[at : at + 10_000]}
                    )
                    assert posted.status_code == 200, posted.text
                started = time.perf_counter()
                assert (await http.get("/health")).status_code == 200
                results.append(("GET /health (baseline)", time.perf_counter() - started, ""))
                for load in range(1, 30):
                    started = time.perf_counter()
                    page = await http.get("/ui")
                    took = time.perf_counter() - started
                    assert page.status_code == 200
                    pending = page.text.count("computing…")
                    results.append((f"GET /ui, load {load}", took, f"{pending} rows pending"))
                    if not pending:
                        break
                    await asyncio.sleep(2.0)  # what the page's own reload waits
                started = time.perf_counter()
                assert (await http.get("/ui")).status_code == 200
                results.append(("GET /ui, once filled", time.perf_counter() - started, ""))
                started = time.perf_counter()
                second = await http.get("/ui?page=2")
                results.append(("GET /ui?page=2, first load", time.perf_counter() - started,
                                f"{second.text.count('computing…')} rows pending"))  # fmt: skip
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--variants", type=int, default=100)
    args = parser.parse_args()
    results = asyncio.run(measure(args.experiments, args.variants))
    base = results[0][1]
    print(f"{args.experiments} experiments x {args.variants} variants, a week of data each")
    print()
    print("| request | time | vs GET /health | note |")
    print("|---|---|---|---|")
    for name, took, note in results:
        print(f"| {name} | {took * 1000:.0f} ms | {took / base:.0f}x | {note} |")
    slowest = max(took for name, took, _ in results[1:])
    print()
    print(f"slowest load: {slowest:.2f} s (target < 2 s): {'met' if slowest < 2 else 'missed'}")


if __name__ == "__main__":
    main()
