"""An open-loop (constant-rate) HTTP/1.1 load generator for benchmarks/load.py.

wrk is closed-loop: a connection sends its next request only when the previous answer
is back, so a slow server is offered less load and its queueing never shows in the
latency (coordinated omission). Here request i is due at t0 + i / rate whatever the
server does; it goes out on an idle keep-alive connection, or waits in a queue for the
first one to free up, and its latency is measured from when it was due, as wrk2 and
Gil Tene's HdrHistogram tools do. A server that cannot keep up shows it as a growing
latency instead of a lower request rate.

The client is a bare asyncio protocol on uvloop (a request is one `write`, an answer is
parsed only for its status and Content-Length), so that it takes as little as possible of
the CPU it shares with the server under test.

    python -m benchmarks.openloop --rate 2000 --seconds 5 http://127.0.0.1:8000/health
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import uvloop

RequestFactory = Callable[[int], bytes]


def request_bytes(
    method: str, path: str, host: str, body: str = "", headers: dict[str, str] | None = None
) -> bytes:
    """One HTTP/1.1 keep-alive request, ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    encoded = body.encode()
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(encoded)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + encoded


@dataclass
class Result:
    """What one open-loop run measured; latencies are in milliseconds."""

    offered: float
    achieved: float
    p50: float
    p95: float
    p99: float
    errors: int

    def row(self) -> dict[str, float]:
        return {
            "offered": self.offered, "rps": self.achieved, "p50": self.p50,
            "p95": self.p95, "p99": self.p99, "errors": self.errors,
        }  # fmt: skip


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.WriteTransport | None = None
        self.buffer = bytearray()
        self.expected: int | None = None
        self.status = 0
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def send(self, payload: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.expected is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                self.status = int(head[9:12])
                start = head.find(b"\r\ncontent-length:")
                if start < 0:
                    raise RuntimeError("the benchmark client needs Content-Length answers")
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : stop if stop >= 0 else len(head)])
                self.expected = end + 4 + length
            if len(self.buffer) < self.expected:
                return
            del self.buffer[: self.expected]
            self.expected = None
            self.run.completed(self, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.lost(self)


@dataclass
class _Run:
    make: RequestFactory
    rate: float
    total: int
    idle: list[_Connection] = field(default_factory=list)
    pending: deque[tuple[bytes, float]] = field(default_factory=deque)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    done: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def dispatch(self, payload: bytes, due: float) -> None:
        if self.idle:
            self.idle.pop().send(payload, due)
        else:
            self.pending.append((payload, due))

    def completed(self, connection: _Connection, status: int) -> None:
        self.latencies.append(time.perf_counter() - connection.due)
        if not 200 <= status < 300:
            self.errors += 1
        self._count()
        if self.pending:
            connection.send(*self.pending.popleft())
        else:
            self.idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)
        elif not self.finished.is_set():
            self.errors += 1
            self._count()

    def _count(self) -> None:
        self.done += 1
        if self.done >= self.total:
            self.finished.set()


async def _drive(
    host: str, port: int, make: RequestFactory, rate: float, seconds: float, connections: int
) -> Result:
    loop = asyncio.get_running_loop()
    run = _Run(make=make, rate=rate, total=max(1, int(rate * seconds)))
    for _ in range(connections):
        _, protocol = await loop.create_connection(lambda: _Connection(run), host, port)
        run.idle.append(protocol)
    payloads = [make(i) for i in range(run.total)]  # built before the clock starts
    start = time.perf_counter()
    sent = 0
    while sent < run.total:
        due_now = min(run.total, int((time.perf_counter() - start) * rate) + 1)
        for i in range(sent, due_now):
            run.dispatch(payloads[i], start + i / rate)
        sent = due_now
        # Until the next request is due, but at least 1 ms: uvloop's timers count whole
        # milliseconds, and a shorter sleep spins (it took a whole core at 1,000/s).
        await asyncio.sleep(max(0.001, start + sent / rate - time.perf_counter()))
    try:
        await asyncio.wait_for(run.finished.wait(), timeout=seconds + 30)
    except TimeoutError:
        run.errors += run.total - run.done
    elapsed = time.perf_counter() - start
    for connection in run.idle:
        if connection.transport is not None:
            connection.transport.close()
    p50, p95, p99 = (
        np.percentile(np.array(run.latencies) * 1000, [50, 95, 99])
        if run.latencies
        else (float("nan"),) * 3
    )
    return Result(rate, len(run.latencies) / elapsed, p50, p95, p99, run.errors)


def open_loop(
    host: str,
    port: int,
    make: RequestFactory,
    rate: float,
    seconds: float,
    connections: int = 64,
) -> Result:
    """Offer `rate` requests/s for `seconds`, the i-th request being `make(i)`."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_drive(host, port, make, rate, seconds, connections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    rest = args.url.split("://", 1)[1]
    address, _, path = rest.partition("/")
    host, _, port = address.partition(":")
    payload = request_bytes("GET", "/" + path, address)
    result = open_loop(host, int(port or 80), lambda _: payload, args.rate, args.seconds,
                       args.connections)  # fmt: skip
    print(result)


if __name__ == "__main__":
    main()
