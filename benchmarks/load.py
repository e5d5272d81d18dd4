"""Load test of real-time mode against real servers on PostgreSQL, with wrk.

    apt-get install wrk
    python benchmarks/load.py [--seconds 10] [--connections 64] [--workers 2]

Starts `mabapi serve --workers N` on a throwaway PostgreSQL database (and, in the same
run, a bare FastAPI endpoint under the same uvicorn settings: the ceiling), then drives
each endpoint with wrk for --seconds and prints requests/s, p50, p99 and errors, each as
a ratio to the bare endpoint, plus the peak memory (VmHWM) of each worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mabapi.settings import to_async_url

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def server(command: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)


def worker_peak_memory_mib(parent: int) -> list[float]:
    peaks = []
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        status = Path(f"/proc/{child}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            peaks.append(int(match.group(1)) / 1024)
    return peaks


LUA_TEMPLATE = """
local counter = 0
local thread_id = 0
local threads = {{}}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  thread_id = id
end
request = function()
  counter = counter + 1
  local n = {modulo}
  local body = string.format('{body}', n)
  local headers = {{["Content-Type"] = "application/json"}}
  local path = string.format("{path}", n)
  return wrk.format("{method}", path, headers, {has_body} and body or nil)
end
"""


def lua(method: str, path: str, body: str = "", modulo: str = "counter") -> str:
    return LUA_TEMPLATE.format(
        method=method, path=path, body=body.replace("'", "\\'"), modulo=modulo,
        has_body="true" if body else "false",
    )  # fmt: skip


def wrk(url: str, script: str, seconds: int, connections: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", handle.name, url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = result.stdout

    def latency(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    return {"rps": rate, "p50": latency("50"), "p99": latency("99"), "errors": errors}


async def admin(server_url: str, sql: str) -> None:
    engine = create_async_engine(to_async_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--returning-warmup", type=int, default=25)
    parser.add_argument("--only", default="", help="Run only endpoints whose label has this.")
    parser.add_argument(
        "--warmup", type=int, default=2,
        help="Seconds of unmeasured load before each measured run (0: none). Each worker "
        "learns a returning unit or a day's allocation on its first request for it.",
    )  # fmt: skip
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"mabapi_load_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(args.postgres, f'CREATE DATABASE "{name}"'))
    database = args.postgres.rsplit("/", 1)[0] + f"/{name}"
    results: dict[str, dict[str, float]] = {}
    memory: list[float] = []
    try:
        bare_port = free_port()
        bare = [str(BIN / "uvicorn"), "benchmarks.bare_app:app", "--port", str(bare_port),
                "--workers", str(args.workers), "--log-level", "warning",
                "--no-access-log"]  # fmt: skip
        with server(bare, {}, bare_port):
            time.sleep(1)
            if args.warmup:
                wrk(f"http://127.0.0.1:{bare_port}", lua("GET", "/"), args.warmup, args.connections)
            results["bare FastAPI endpoint (ceiling)"] = wrk(
                f"http://127.0.0.1:{bare_port}", lua("GET", "/"), args.seconds, args.connections
            )
        port = free_port()
        command = [
            str(BIN / "mabapi"),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ]
        env = {"MABAPI_DATABASE_URL": database, "MABAPI_LOG_LEVEL": "warning"}
        with server(command, env, port) as process:
            base = f"http://127.0.0.1:{port}"
            httpx.post(f"{base}/experiments", json={
                "id": "bench", "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}]})  # fmt: skip
            rows = [{"experiment_id": "bench", "variant_id": v, "date": f"2024-01-{d:02d}",
                     "impressions": 1000, "successes": s}
                    for d in range(1, 29)
                    for v, s in (("a", 50), ("b", 60), ("c", 55))]  # fmt: skip
            httpx.post(f"{base}/metrics/batch", json={"metrics": rows}, timeout=60)
            returning = 5000
            for start in range(0, returning, 1000):
                httpx.post(f"{base}/assign/batch", timeout=60, json={"assignments": [
                    {"experiment_id": "bench", "unit_id": f"r{i}"}
                    for i in range(start, start + 1000)]})  # fmt: skip
            time.sleep(1)
            runs = {
                "assign, new units": lua(
                    "POST", "/experiments/bench/assign", '{"unit_id": "n%d"}',
                    modulo="thread_id * 100000000 + counter",
                ),
                "assign, returning units": lua(
                    "POST", "/experiments/bench/assign", '{"unit_id": "r%d"}',
                    modulo=f"counter % {returning}",
                ),
                "conversions": lua(
                    "POST", "/experiments/bench/conversions", '{"unit_id": "r%d"}',
                    modulo=f"counter % {returning}",
                ),
                "GET /allocations": lua("GET", "/allocations/bench?for_date=2024-02-%02d",
                                        modulo="1 + counter % 28"),
                "POST /metrics/": lua(
                    "POST", "/metrics/",
                    '{"experiment_id": "bench", "variant_id": "a", "date": "2024-03-01", '
                    '"impressions": %d, "successes": 1}', modulo="1000 + counter % 1000",
                ),
            }  # fmt: skip
            for label, script in runs.items():
                if args.only and args.only not in label:
                    continue
                # Not measured: each worker's caches fill, as in service. Returning units
                # need longer: a worker learns a unit the first time that unit reaches it
                # (through the group commit, like a new unit), and with wrk's two threads
                # walking the same 5,000 ids in step, both workers have met every unit
                # only after about 20 s (watched on mabapi_group_commit_batch_size: no
                # more batches after that). Conversions get no such warm-up: their first
                # call per unit and worker is the real cost of a conversion.
                warmup = args.returning_warmup if "returning" in label else args.warmup
                if warmup:
                    wrk(base, script, warmup, args.connections)
                results[label] = wrk(base, script, args.seconds, args.connections)
            memory = worker_peak_memory_mib(process.pid)
    finally:
        asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    ceiling = results["bare FastAPI endpoint (ceiling)"]["rps"]
    print(f"{args.connections} connections, {args.workers} workers, {args.seconds} s each "
          f"after {args.warmup} s of warm-up\n")  # fmt: skip
    print("| endpoint | requests/s | ratio to bare | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for label, row in results.items():
        print(f"| {label} | {row['rps']:,.0f} | {row['rps'] / ceiling:.2f} | {row['p50']:.1f} "
              f"| {row['p99']:.1f} | {int(row['errors'])} |")  # fmt: skip
    print(f"\npeak memory per worker (VmHWM): {', '.join(f'{m:.0f} MiB' for m in memory)}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
