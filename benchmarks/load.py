"""Load test of real-time mode against real servers, with wrk and an open-loop generator.

    apt-get install wrk
    python benchmarks/load.py [--seconds 6] [--workers 1,2] [--database postgresql|sqlite]

For each number of worker processes, starts `mabapi serve --workers N` on a throwaway
database (PostgreSQL, or the SQLite default in a temporary folder) beside a bare FastAPI
endpoint under the same uvicorn settings (the ceiling), then, per endpoint:

1. **Maximum**: wrk, closed-loop, `--connections` connections for `--seconds`: requests/s
   (and its ratio to the bare endpoint), p50/p95/p99.
2. **Fixed offered load**: `benchmarks/openloop.py` offers 25%, 50% and 75% of that
   maximum at a constant rate, latency counted from when each request was due; the bare
   endpoint is offered the same rates in the same run (the generator's own share of the
   2 cores shows there).
3. On PostgreSQL, **the database's own limit**: pgbench, `--pgbench-clients` clients for
   8 s, runs the same durable single-row write (`INSERT ... ON CONFLICT DO NOTHING` into
   a table shaped like `assignments`); each writing endpoint's maximum is reported as a
   ratio to it.

Then prints the tables and each target, met or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.openloop import Result, open_loop, request_bytes
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


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def measured_busy(run: Callable[[], Result]) -> dict[str, float]:
    """`run()`'s row plus "busy": the share of both cores in use meanwhile (server,
    database and load generator together)."""
    busy0, total0 = cpu_ticks()
    row = run().row()
    busy1, total1 = cpu_ticks()
    return {**row, "busy": (busy1 - busy0) / max(total1 - total0, 1)}


def worker_peak_memory_mib(parent: int) -> list[float]:
    """VmHWM of each worker process (with one worker, uvicorn serves in the parent)."""
    peaks = []
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for child in children or [str(parent)]:
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
function done(summary, latency, requests)
  for _, p in pairs({{50, 95, 99}}) do
    io.write(string.format("P%d %d\\n", p, latency:percentile(p)))
  end
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
    threads = min(2, connections)
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", handle.name, url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = result.stdout

    def latency(percent: int) -> float:
        match = re.search(rf"^P{percent} (\d+)$", out, re.MULTILINE)
        return int(match.group(1)) / 1000 if match else float("nan")  # wrk counts in us

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    return {"rps": rate, "p50": latency(50), "p95": latency(95), "p99": latency(99),
            "errors": errors}  # fmt: skip


async def admin(server_url: str, sql: str) -> None:
    engine = create_async_engine(to_async_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(sql))
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Endpoint:
    label: str
    method: str
    path: str  # with one %d, filled from the request's number
    body: str = ""  # likewise
    number: Callable[[int], int] = lambda i: i
    durable_write: bool = False

    def script(self, modulo: str) -> str:
        return lua(self.method, self.path, self.body, modulo)

    def factory(self, host: str, tag: int) -> Callable[[int], bytes]:
        """The i-th open-loop request; new units are numbered from `tag` so that no run
        meets another run's units."""

        def make(i: int) -> bytes:
            n = self.number(tag + i)
            path = self.path % n if "%" in self.path else self.path
            return request_bytes(self.method, path, host, self.body % n if self.body else "")

        return make


RETURNING = 5000
ENDPOINTS = [
    Endpoint("assign, new units", "POST", "/experiments/bench/assign", '{"unit_id": "n%d"}',
             durable_write=True),
    Endpoint("assign, returning units", "POST", "/experiments/bench/assign",
             '{"unit_id": "r%d"}', number=lambda i: i % RETURNING),
    Endpoint("conversions", "POST", "/experiments/bench/conversions", '{"unit_id": "r%d"}',
             number=lambda i: i % RETURNING, durable_write=True),
    Endpoint("GET /allocations", "GET", "/allocations/bench?for_date=2024-02-%02d",
             number=lambda i: 1 + i % 28),
    Endpoint("POST /metrics/", "POST", "/metrics/",
             '{"experiment_id": "bench", "variant_id": "a", "date": "2024-03-01", '
             '"impressions": %d, "successes": 1}', number=lambda i: 1000 + i % 1000,
             durable_write=True),
    Endpoint("OFREP, returning units", "POST", "/ofrep/v1/evaluate/flags/bench",
             '{"context": {"targetingKey": "r%d"}}', number=lambda i: i % RETURNING),
]  # fmt: skip
WRK_NUMBER = {
    "assign, new units": "thread_id * 100000000 + counter",
    "assign, returning units": f"counter % {RETURNING}",
    "conversions": f"counter % {RETURNING}",
    "GET /allocations": "1 + counter % 28",
    "POST /metrics/": "1000 + counter % 1000",
    "OFREP, returning units": f"counter % {RETURNING}",
}
BARE = "bare FastAPI endpoint"
# Kept within 10% of their ratio to bare before the structural step (--baseline): every
# endpoint the baseline has.
BEFORE = ("assign, new units", "assign, returning units", "conversions", "GET /allocations",
          "POST /metrics/")  # fmt: skip
# An OFREP evaluation of a returning unit costs at most this much more than an assign.
OFREP_COST = 1.2

PGBENCH_SCRIPT = """\\set n random(1, 2000000000)
INSERT INTO pgbench_assignments (experiment_id, unit_id, variant_id, probability,
  assigned_at, assigned_date) VALUES ('bench', 'u' || :n, 'a', 0.5, now(), current_date)
  ON CONFLICT DO NOTHING;
"""


def pgbench(url: str, clients: int, seconds: int = 8) -> float:
    """PostgreSQL's own rate for the durable single-row write a new unit costs."""
    parsed = urlsplit(url)
    asyncio.run(admin(url, "CREATE TABLE IF NOT EXISTS pgbench_assignments ("
                      "id BIGSERIAL PRIMARY KEY, experiment_id VARCHAR(128) NOT NULL, "
                      "unit_id VARCHAR(256) NOT NULL, variant_id VARCHAR(128) NOT NULL, "
                      "probability DOUBLE PRECISION NOT NULL, "
                      "assigned_at TIMESTAMPTZ NOT NULL, assigned_date DATE NOT NULL, "
                      "converted_at TIMESTAMPTZ, conversion_value DOUBLE PRECISION, "
                      "UNIQUE (experiment_id, unit_id))"))  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(PGBENCH_SCRIPT)
    out = subprocess.run(
        ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", handle.name,
         "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 5432),
         "-U", parsed.username or "postgres", parsed.path.lstrip("/")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]


def seed(base: str) -> None:
    httpx.post(f"{base}/experiments", json={
        "id": "bench", "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}]})  # fmt: skip
    rows = [{"experiment_id": "bench", "variant_id": v, "date": f"2024-01-{d:02d}",
             "impressions": 1000, "successes": s}
            for d in range(1, 29)
            for v, s in (("a", 50), ("b", 60), ("c", 55))]  # fmt: skip
    httpx.post(f"{base}/metrics/batch", json={"metrics": rows}, timeout=60)
    for start in range(0, RETURNING, 1000):
        httpx.post(f"{base}/assign/batch", timeout=60, json={"assignments": [
            {"experiment_id": "bench", "unit_id": f"r{i}"}
            for i in range(start, start + 1000)]})  # fmt: skip


Table = dict[tuple[str, int], dict[str, float]]


def measure(args: argparse.Namespace, database: str, workers: int, maxima: Table,
            fixed: dict[tuple[str, int, int], dict[str, float]]) -> list[float]:  # fmt: skip
    bare_port, port = free_port(), free_port()
    bare = [str(BIN / "uvicorn"), "benchmarks.bare_app:app", "--port", str(bare_port),
            "--workers", str(workers), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    command = [str(BIN / "mabapi"), "serve", "--port", str(port), "--workers", str(workers)]
    env = {"MABAPI_DATABASE_URL": database, "MABAPI_LOG_LEVEL": "warning"}
    if args.baseline and workers == max(args.worker_counts):
        measure_baseline(args, database, workers, maxima, command, env, bare)
    with server(bare, {}, bare_port), server(command, env, port) as process:
        bare_url, base = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{port}"
        seed(base)
        time.sleep(1)
        if args.warmup:
            wrk(bare_url, lua("GET", "/"), args.warmup, args.connections)
        maxima[BARE, workers] = wrk(bare_url, lua("GET", "/"), args.seconds, args.connections)
        bare_request = request_bytes("GET", "/", f"127.0.0.1:{bare_port}")
        for number, endpoint in enumerate(ENDPOINTS):
            if args.only and args.only not in endpoint.label:
                continue
            script = endpoint.script(WRK_NUMBER[endpoint.label])
            # Not measured: each worker's caches fill, as in service. Returning units
            # need longer: a worker learns a unit the first time that unit reaches it,
            # and with wrk's two threads walking the same 5,000 ids in step, both
            # workers have met every unit only after about 20 s. Conversions get no such
            # warm-up: the first call per unit and worker is the real cost of one.
            warmup = args.returning_warmup if "returning" in endpoint.label else args.warmup
            if warmup:
                wrk(base, script, warmup, args.connections)
            peak = maxima[endpoint.label, workers] = wrk(
                base, script, args.seconds, args.connections
            )
            for _ in range(args.rounds if args.rounds > 1 else 0):
                # Interleaved pairs: the machine's speed drifts over a run, and a bare
                # maximum measured minutes earlier carries that drift into the ratio.
                ceiling = wrk(bare_url, lua("GET", "/"), args.seconds, args.connections)
                own = wrk(base, script, args.seconds, args.connections)
                args.paired.setdefault((endpoint.label, workers), []).append(
                    own["rps"] / ceiling["rps"]
                )
            for level in args.levels:
                rate = peak["rps"] * level / 100
                tag = 10**9 * (1 + workers) + 10**7 * number + 10**5 * level
                make = endpoint.factory(f"127.0.0.1:{port}", tag)
                fixed[endpoint.label, workers, level] = measured_busy(
                    partial(open_loop, "127.0.0.1", port, make, rate, args.seconds,
                            args.connections)
                )  # fmt: skip
                fixed[f"{BARE} at {endpoint.label}'s rate", workers, level] = open_loop(
                    "127.0.0.1", bare_port, lambda _: bare_request, rate, args.seconds,
                    args.connections,
                ).row()  # fmt: skip
        return worker_peak_memory_mib(process.pid)


def measure_baseline(args: argparse.Namespace, database: str, workers: int, maxima: Table,
                     command: list[str], env: dict[str, str], bare: list[str]) -> None:  # fmt: skip
    """The same maxima for `args.baseline`'s code (its src/ on PYTHONPATH, this venv's
    dependencies) on a database of its own, beside the bare endpoint, as "LABEL @ REF"."""
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "archive", args.baseline, "src"], cwd=REPO,
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        name = f"mabapi_base_{uuid.uuid4().hex[:8]}"
        asyncio.run(admin(args.postgres, f'CREATE DATABASE "{name}"'))
        try:
            bare_port, port = free_port(), free_port()
            old = [sys.executable, "-m", "mabapi", "serve", "--port", str(port),
                   "--workers", str(workers)]  # fmt: skip
            old_env = {**env, "PYTHONPATH": f"{tree}/src",
                       "MABAPI_DATABASE_URL": database.rsplit("/", 1)[0] + f"/{name}"}  # fmt: skip
            bare_command = [*bare[:3], str(bare_port), *bare[4:]]
            with server(bare_command, {}, bare_port), server(old, old_env, port):
                base = f"http://127.0.0.1:{port}"
                seed(base)
                bare_url = f"http://127.0.0.1:{bare_port}"
                wrk(bare_url, lua("GET", "/"), args.warmup or 1, args.connections)
                maxima[f"{BARE} @ {args.baseline}", workers] = wrk(
                    bare_url, lua("GET", "/"), args.seconds, args.connections
                )
                for endpoint in ENDPOINTS:
                    if endpoint.label not in BEFORE:
                        continue
                    script = endpoint.script(WRK_NUMBER[endpoint.label])
                    warmup = args.returning_warmup if "returning" in endpoint.label else 2
                    wrk(base, script, warmup, args.connections)
                    maxima[f"{endpoint.label} @ {args.baseline}", workers] = wrk(
                        base, script, args.seconds, args.connections
                    )
        finally:
            drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            asyncio.run(admin(args.postgres, drop))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, help="Default: 64 (PostgreSQL), 16 (SQLite)")
    parser.add_argument("--workers", help="Comma-separated. Default: 1,2 (PostgreSQL), 1 (SQLite)")
    parser.add_argument("--levels", default="25,50,75", help="Percent of each maximum to offer")
    parser.add_argument("--pgbench-clients", type=int, default=64)
    parser.add_argument("--returning-warmup", type=int, default=25)
    parser.add_argument("--only", default="", help="Run only endpoints whose label has this.")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="Seconds of unmeasured load before each maximum (0: none).",
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--baseline",
        default="",
        help="A git revision to measure in the same run (returning units and allocations, "
        "with the largest worker count), e.g. fd936c3, the last commit before the "
        "structural step: before/after ratios to the same bare endpoint.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="Also measure each endpoint's ratio to bare in this many interleaved pairs "
        "of runs (bare, then the endpoint) and print each pair's ratio and their median.",
    )
    args = parser.parse_args()
    args.paired = {}
    postgres = args.database == "postgresql"
    args.connections = args.connections or (64 if postgres else 16)
    args.levels = [int(level) for level in args.levels.split(",")]
    worker_counts = [int(w) for w in (args.workers or ("1,2" if postgres else "1")).split(",")]
    args.worker_counts = worker_counts
    maxima: Table = {}
    fixed: dict[tuple[str, int, int], dict[str, float]] = {}
    memory: dict[int, list[float]] = {}
    pgbench_rates: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for workers in worker_counts:
            if postgres:
                name = f"mabapi_load_{uuid.uuid4().hex[:8]}"
                asyncio.run(admin(args.postgres, f'CREATE DATABASE "{name}"'))
                database = args.postgres.rsplit("/", 1)[0] + f"/{name}"
            else:
                database = f"sqlite:///{folder}/mabapi-{workers}.db"
            try:
                if postgres:
                    pgbench_rates.append(pgbench(database, args.pgbench_clients))
                memory[workers] = measure(args, database, workers, maxima, fixed)
                if postgres:
                    pgbench_rates.append(pgbench(database, args.pgbench_clients))
            finally:
                if postgres:
                    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                    asyncio.run(admin(args.postgres, drop))
    report(args, worker_counts, maxima, fixed, memory, pgbench_rates)


def report(
    args: argparse.Namespace,
    worker_counts: list[int],
    maxima: Table,
    fixed: dict[tuple[str, int, int], dict[str, float]],
    memory: dict[int, list[float]],
    pgbench_rates: list[float],
) -> None:
    postgres = args.database == "postgresql"
    print(
        f"{args.database}, {args.connections} connections, {args.seconds} s per run, "
        f"workers {worker_counts}\n"
    )
    if args.paired:
        print("Ratio to bare in interleaved pairs of runs (wrk, closed loop):\n")
        print("| endpoint | workers | each pair | median |")
        print("|---|---|---|---|")
        for (label, workers), ratios in args.paired.items():
            each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
            print(f"| {label} | {workers} | {each} | {statistics.median(ratios):.2f} |")
        print()
    print("Maximum (wrk, closed loop):\n")
    print("| endpoint | workers | requests/s | ratio to bare | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for (label, workers), row in maxima.items():
        ref = label.split(" @ ", 1)[1] if " @ " in label else None
        ceiling = maxima[BARE if ref is None else f"{BARE} @ {ref}", workers]["rps"]
        print(
            f"| {label} | {workers} | {row['rps']:,.0f} | {row['rps'] / ceiling:.2f} "
            f"| {row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} | {int(row['errors'])} |"
        )
    print("\nFixed offered load (open loop; latency from when each request was due):\n")
    print(
        "| endpoint | workers | offered | requests/s | p50 ms | p95 ms | p99 ms | errors "
        "| CPU busy | bare endpoint p99 ms at the same rate |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (label, workers, level), row in fixed.items():
        if label.startswith(BARE):
            continue
        bare = fixed[f"{BARE} at {label}'s rate", workers, level]
        print(
            f"| {label} | {workers} | {level}% = {row['offered']:,.0f}/s | {row['rps']:,.0f} "
            f"| {row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} | {int(row['errors'])} "
            f"| {row['busy']:.0%} | {bare['p99']:.1f} |"
        )
    for workers, peaks in memory.items():
        print(
            f"\npeak memory per process, {workers} workers (VmHWM): "
            f"{', '.join(f'{m:.0f} MiB' for m in peaks)}"
        )
    targets: list[tuple[str, bool]] = []
    top = max(worker_counts)
    ofrep = maxima.get(("OFREP, returning units", top))
    assign = maxima.get(("assign, returning units", top))
    if ofrep and assign:
        cost = assign["rps"] / ofrep["rps"]
        targets.append(
            (f"OFREP, returning units, {top} workers: {cost:.2f}x the cost of an assign "
             f"(target <= {OFREP_COST})", cost <= OFREP_COST)
        )  # fmt: skip
    if postgres:
        limit = sum(pgbench_rates) / len(pgbench_rates)
        print(
            f"\npgbench, {args.pgbench_clients} clients, durable INSERT ... ON CONFLICT DO "
            f"NOTHING: {', '.join(f'{r:,.0f}' for r in pgbench_rates)} tps (mean {limit:,.0f})"
        )
        for endpoint in ENDPOINTS:
            found = maxima.get((endpoint.label, top))
            if endpoint.durable_write and found:
                targets.append(
                    (
                        f"{endpoint.label}, {top} workers: {found['rps'] / limit:.2f}x of "
                        f"pgbench (>= 0.3x)",
                        found["rps"] >= 0.3 * limit,
                    )
                )
        for endpoint in ENDPOINTS:
            found = fixed.get((endpoint.label, top, 50))
            if found:
                targets.append(
                    (
                        f"{endpoint.label}, {top} workers, 50% load: p99 "
                        f"{found['p99']:.1f} ms (< 25 ms)",
                        found["p99"] < 25,
                    )
                )
        for label in BEFORE:
            found = maxima.get((label, top))
            old = maxima.get((f"{label} @ {args.baseline}", top))
            if found and old:
                ratio = found["rps"] / maxima[BARE, top]["rps"]
                before = old["rps"] / maxima[f"{BARE} @ {args.baseline}", top]["rps"]
                kept = ratio >= 0.9 * before
                targets.append((f"{label}, {top} workers: {ratio:.2f}x of bare, {before:.2f}x at "
                                f"{args.baseline} (within 10%)", kept))  # fmt: skip
    else:
        for label in ("assign, new units", "assign, returning units", "conversions"):
            found = maxima.get((label, top))
            if found:
                targets.append(
                    (
                        f"{label}, {args.connections} clients: p99 {found['p99']:.1f} ms "
                        f"(< 100 ms)",
                        found["p99"] < 100,
                    )
                )
    print()
    for text_, met in targets:
        print(f"{'met   ' if met else 'MISSED'}  {text_}")
    print(
        json.dumps(
            {
                "maxima": {f"{k[0]} / {k[1]}": v for k, v in maxima.items()},
                "fixed": {f"{k[0]} / {k[1]} / {k[2]}": v for k, v in fixed.items()},
                "pgbench": pgbench_rates,
            }
        )
    )


if __name__ == "__main__":
    main()
