"""Webhook fairness: how long a quiet project's event takes to reach its receiver while a
noisy project has deliveries queued to receivers that hang (each answers after 8 s, past
the 5-second limit). Each row is reported as a ratio to the baseline measured in the same
run: the same quiet delivery with nothing else queued. The delivery loop runs in a real
app (the API's lifespan), on SQLite, against loopback receivers.

Target: the quiet project's delay grows by at most one poll interval (0.05 s here) plus
noise, whatever the noisy project queues (before per-webhook limits it grew linearly:
0.5 s to 16.9 s for 100 queued tests).

    python -m benchmarks.webhooks            # 5 quiet events per row
    python -m benchmarks.webhooks --quick    # 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from mabapi.access import service as access
from mabapi.access.models import Scope
from mabapi.app import create_app
from mabapi.db.migrate import upgrade_url
from mabapi.runtime import runtime_of
from mabapi.settings import Settings
from mabapi.webhooks import service


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


@contextmanager
def receiver(delay: float) -> Iterator[tuple[str, list[float]]]:
    """A loopback receiver answering 200 after `delay` s; yields (url, arrival times)."""
    arrivals: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrivals.append(time.monotonic())
            if delay:
                threading.Event().wait(delay)
            try:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", arrivals
    finally:
        server.shutdown()
        server.server_close()


async def _key(app: Any, project: str) -> dict[str, str]:
    async with runtime_of(app).sessionmaker() as session, session.begin():
        _, token = await access.create_key(
            session, project_id=project, scope=Scope.ADMIN, name="bench"
        )
    runtime_of(app).keyring.forget()
    return {"Authorization": f"Bearer {token}"}


async def measure(queued: int, events: int) -> list[float]:
    """Seconds from each quiet event's commit to its arrival, with `queued` test
    deliveries of the noisy project waiting on hanging receivers."""
    with tempfile.TemporaryDirectory() as folder:
        url = make_url(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
        await upgrade_url(url)
        settings = Settings(
            _env_file=None,
            database_url=SecretStr(f"sqlite:///{Path(folder) / 'bench.db'}"),
            migrate_on_start=False,
            webhook_allow_private=True,
            webhook_delivery=True,
            webhook_poll_seconds=0.05,
            webhook_watch_seconds=3600,
            rate_limit_per_second=0,
        )
        app = create_app(settings)
        with receiver(8.0) as (hanging, _), receiver(0.0) as (fast, arrivals):
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                    noisy, quiet = await _key(app, "noisy"), await _key(app, "quiet")
                    hooks = max(1, -(-queued // service.QUEUED_TESTS)) if queued else 0
                    left = queued
                    for _ in range(hooks):
                        made = await http.post(
                            "/webhooks",
                            json={"url": hanging, "events": ["experiment.concluded"]},
                            headers=noisy,
                        )
                        for _ in range(min(left, service.QUEUED_TESTS)):
                            await http.post(f"/webhooks/{made.json()['id']}/test", headers=noisy)
                            left -= 1
                    await http.post(
                        "/webhooks",
                        json={"url": fast, "events": ["experiment.concluded"]},
                        headers=quiet,
                    )
                    await asyncio.sleep(0.5)  # the noisy deliveries are in flight
                    delays = []
                    for n in range(events):
                        name = f"q{n}"
                        await http.post(
                            "/experiments",
                            json={"id": name, "variants": [{"id": "a"}, {"id": "b"}]},
                            headers=quiet,
                        )
                        started = time.monotonic()
                        await http.post(
                            f"/experiments/{name}/conclude", json={"winner": "b"}, headers=quiet
                        )
                        for _ in range(6000):  # 30 s at most
                            if len(arrivals) > n:
                                break
                            await asyncio.sleep(0.005)
                        delays.append(arrivals[n] - started if len(arrivals) > n else 30.0)
        return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    events = 2 if args.quick else 5
    rows = []
    for queued in (0, 10, 50):
        delays = asyncio.run(measure(queued, events))
        rows.append((queued, statistics.median(delays), max(delays)))
    base = rows[0][1]
    print("| noisy deliveries queued to hanging receivers | quiet delay, median | max | ratio |")
    print("|---|---|---|---|")
    for queued, median, worst in rows:
        ratio = median / base if base > 0 else float("nan")
        print(f"| {queued} | {median * 1000:.0f} ms | {worst * 1000:.0f} ms | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
