"""Webhooks against hostile receivers and noisy tenants (loopback only), on both
databases: a failing delivery never touches another, every stored text is bounded, a
delivery is never sent twice by two senders, an answer is read only so far, one tenant's
slow receiver or heavy experiment costs only that tenant, changes are damped, address
checks unwrap embedded IPv4 addresses, and deliveries verify with the standardwebhooks
library (a replay outside its tolerance refused)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import standardwebhooks
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from mabapi.db.base import utcnow
from mabapi.db.transactions import background_transaction
from mabapi.reports import watch
from mabapi.runtime import runtime_of
from mabapi.webhooks import network, outbox, repository, service
from mabapi.webhooks.models import Attempt, Delivery, Webhook
from mabapi.webhooks.runner import WebhookRunner
from tests.fixtures.keys import bearer, make_key

AppFactory = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@dataclass
class Receiver:
    """Records each request; answers `status` with `headers`, after `delay` seconds."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    requests: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)
    url: str = ""
    on_request: Callable[[], None] | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append((headers, body, time.monotonic()))
                if receiver.on_request is not None:
                    receiver.on_request()
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                try:
                    self.send_response(receiver.status)
                    for name, value in receiver.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many deliveries connect at once


@pytest.fixture
def serve() -> Iterator[Callable[[Receiver], Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(receiver: Receiver) -> Receiver:
        server = Server(("127.0.0.1", 0), receiver.handler())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allow_private": True}


async def stop_delivery(app: FastAPI) -> None:
    """Stop the app's delivery loop and watcher before its tables are emptied."""
    runner = runtime_of(app).webhooks
    assert runner is not None
    await runner.close()


def runner_for(app: FastAPI) -> WebhookRunner:
    return WebhookRunner(
        runtime_of(app).sessionmaker,
        service.DeliveryConfig("https://bandit.example.com", True),
        poll_seconds=0.05,
    )


async def subscribe(
    client: httpx.AsyncClient, url: str, *events: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/webhooks",
        json={"url": url, "events": list(events) or ["experiment.concluded"]},
        headers=headers or {},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def conclude(
    client: httpx.AsyncClient, experiment_id: str, headers: dict[str, str] | None = None
) -> None:
    response = await client.post(
        "/experiments",
        json={"id": experiment_id, "variants": [{"id": "a"}, {"id": "b"}]},
        headers=headers or {},
    )
    assert response.status_code == 201, response.text
    response = await client.post(
        f"/experiments/{experiment_id}/conclude", json={"winner": "b"}, headers=headers or {}
    )
    assert response.status_code == 200, response.text


async def rows_of(app: FastAPI) -> list[Delivery]:
    async with background_transaction(runtime_of(app).sessionmaker) as session:
        return list(await session.scalars(select(Delivery).order_by(Delivery.created_at)))


async def attempts_of(app: FastAPI, delivery_id: str) -> list[Attempt]:
    async with background_transaction(runtime_of(app).sessionmaker) as session:
        return list(
            await session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id))
        )


class TestOneDeliveryNeverTouchesAnother:
    async def test_a_redirect_to_a_600_character_host_is_recorded_bounded_and_alone(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        serve: Callable[[Receiver], Receiver],
    ) -> None:
        long_host = ".".join(["a" * 59] * 10) + ".example"
        assert len(long_host) > 600
        redirecting = serve(Receiver(status=302, headers={"Location": f"http://{long_host}/"}))
        good = serve(Receiver())
        bad_hook = await subscribe(client, redirecting.url)
        good_hook = await subscribe(client, good.url)
        await conclude(client, "e1")
        await conclude(client, "e2")
        runner = runner_for(app)
        assert await runner.run_once() == 4
        assert await runner.run_once() == 0  # nothing is sent again
        assert len(good.requests) == 2
        assert len(redirecting.requests) == 2
        by_webhook: dict[str, list[Delivery]] = {}
        for row in await rows_of(app):
            by_webhook.setdefault(row.webhook_id, []).append(row)
        assert {row.status for row in by_webhook[good_hook["id"]]} == {"delivered"}
        for row in by_webhook[bad_hook["id"]]:
            assert row.status == "pending"
            assert row.attempts == 1
            assert row.next_attempt_at > utcnow() + timedelta(seconds=5)  # backing off
            [attempt] = await attempts_of(app, row.id)
            assert attempt.error is not None
            assert "does not resolve" in attempt.error
            assert len(attempt.error) <= network.ERROR_CHARS

    async def test_every_error_text_is_bounded(self) -> None:
        assert network.bounded("x" * 10_000) == "x" * (network.ERROR_CHARS - 1) + "…"
        assert network.bounded("short") == "short"

    async def test_a_delivery_that_cannot_be_recorded_backs_off_then_gives_up(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        serve: Callable[[Receiver], Receiver],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        receiver = serve(Receiver(status=500))
        await subscribe(client, receiver.url)
        await conclude(client, "e")

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the database refused the record")

        monkeypatch.setattr(repository, "record_outcome", broken)
        monkeypatch.setattr(repository, "record_attempt", broken)
        sessionmaker = runtime_of(app).sessionmaker
        async with network.client() as http:
            assert await service.deliver_due(sessionmaker, http, service.DeliveryConfig("x", True))
            # Not due again soon: the claim itself held it at least CLAIM_SECONDS.
            soon = utcnow() + timedelta(seconds=service.CLAIM_SECONDS - 1)
            config = service.DeliveryConfig("x", True)
            assert await service.deliver_due(sessionmaker, http, config, now=soon) == 0
        [row] = await rows_of(app)
        assert (row.status, row.attempts) == ("pending", 1)
        # A day later it is still unrecordable: the claim gives it up, sending nothing.
        async with background_transaction(sessionmaker) as session:
            await session.execute(
                update(Delivery).values(created_at=utcnow() - timedelta(hours=25))
            )
        later = utcnow() + timedelta(hours=2)
        assert await service.claim(sessionmaker, now=later, limit=10) == []
        [row] = await rows_of(app)
        assert row.status == "failed"
        assert len(receiver.requests) == 1

    async def test_deleting_a_webhook_mid_delivery_leaves_the_others_recorded(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        serve: Callable[[Receiver], Receiver],
    ) -> None:
        slow = serve(Receiver(delay=1.0))
        fast = serve(Receiver())
        slow_hook = await subscribe(client, slow.url)
        fast_hook = await subscribe(client, fast.url)
        await conclude(client, "e")
        runner = runner_for(app)
        round_ = asyncio.create_task(runner.run_once())
        for _ in range(200):
            if slow.requests:
                break
            await asyncio.sleep(0.02)
        assert slow.requests, "the slow receiver was never called"
        deleted = await client.delete(f"/webhooks/{slow_hook['id']}")
        assert deleted.status_code == 200
        assert await round_ == 2  # no foreign-key violation ends the round
        rows = await rows_of(app)
        assert [(r.webhook_id, r.status) for r in rows] == [(fast_hook["id"], "delivered")]
        assert await runner.run_once() == 0
        assert len(fast.requests) == 1


class TestClaims:
    @pytest.mark.slow
    async def test_concurrent_senders_never_send_one_delivery_twice(
        self, app: FastAPI, serve: Callable[[Receiver], Receiver]
    ) -> None:
        receiver = serve(Receiver())
        sessionmaker = runtime_of(app).sessionmaker
        async with background_transaction(sessionmaker) as session:
            for n in range(10):
                session.add(
                    Webhook(
                        id=f"wh_{n}",
                        project_id="default",
                        url=receiver.url,
                        events=["experiment.concluded"],
                        secret=service.new_secret(),
                        created_at=utcnow(),
                    )
                )
            await session.flush()
            for n in range(10):
                for _ in range(3):
                    await outbox.queue(
                        session,
                        [f"wh_{n}"] * 10,
                        event="experiment.concluded",
                        experiment_id=None,
                        data={"n": n},
                    )
        config = service.DeliveryConfig("x", True)

        async def worker() -> int:
            sent = 0
            async with network.client() as http:
                while (batch := await service.deliver_due(sessionmaker, http, config)) > 0:
                    sent += batch
            return sent

        sent = await asyncio.gather(*(worker() for _ in range(4)))
        assert sum(sent) == 300
        ids = Counter(headers["webhook-id"] for headers, _, _ in receiver.requests)
        assert len(ids) == 300
        assert max(ids.values()) == 1
        assert {row.status for row in await rows_of(app)} == {"delivered"}

    async def test_a_claim_takes_at_most_per_webhook_of_one_webhook_and_none_busy(
        self, app: FastAPI, client: httpx.AsyncClient, serve: Callable[[Receiver], Receiver]
    ) -> None:
        receiver = serve(Receiver())
        first = await subscribe(client, receiver.url)
        second = await subscribe(client, receiver.url)
        for _ in range(4):
            assert (await client.post(f"/webhooks/{first['id']}/test")).status_code == 202
            assert (await client.post(f"/webhooks/{second['id']}/test")).status_code == 202
        sessionmaker = runtime_of(app).sessionmaker
        claimed = await service.claim(sessionmaker, now=utcnow(), limit=100, busy={second["id"]})
        assert [c.webhook_id for c in claimed] == [first["id"]] * service.PER_WEBHOOK
        assert all(c.attempts == 1 for c in claimed)


class SlowBody(httpx.AsyncByteStream):
    """An endless answer body that counts what was pulled from it."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(100_000):  # 6.4 GB if read in full
            self.pulled += 65_536
            yield b"\x1f\x8b" + bytes(65_534)  # says gzip; is no valid gzip stream

    async def aclose(self) -> None:
        pass


class TestAnswersAreReadOnlySoFar:
    @pytest.mark.parametrize("encoding", ["identity", "gzip"])
    async def test_at_most_a_few_kib_of_an_endless_answer_and_never_inflated(
        self, encoding: str
    ) -> None:
        body = SlowBody()
        sent_headers: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            sent_headers.append(request.headers.get("accept-encoding", ""))
            return httpx.Response(200, headers={"Content-Encoding": encoding}, stream=body)

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            outcome = await network.post(
                http, "http://127.0.0.1/x", body=b"{}", headers={}, allow_private=True
            )
        assert outcome.ok, outcome.error  # a decoder would have failed on it
        assert body.pulled <= network.RESPONSE_BYTES + 65_536
        assert sent_headers == ["identity"]

    async def test_a_real_receiver_sending_hundreds_of_megabytes_is_cut_off(self) -> None:
        written = [0]
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def serve_one() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65_536)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 400000000\r\n"
                    b"Content-Type: application/octet-stream\r\n\r\n"
                )
                chunk = bytes(65_536)
                try:
                    while written[0] < 400_000_000:
                        connection.sendall(chunk)
                        written[0] += len(chunk)
                except OSError:
                    pass

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        started = time.monotonic()
        async with network.client() as http:
            outcome = await network.post(
                http, f"http://127.0.0.1:{port}/", body=b"{}", headers={}, allow_private=True
            )
        thread.join(10)
        listener.close()
        assert outcome.status_code == 200
        assert time.monotonic() - started < 4
        # What the kernel's socket buffers took before the connection closed, not 400 MB.
        assert written[0] < 32_000_000


class TestFairness:
    async def test_caps_on_webhooks_per_project_and_queued_tests(
        self, make_app: AppFactory, serve: Callable[[Receiver], Receiver]
    ) -> None:
        receiver = serve(Receiver())
        async with make_app(webhook_allow_private=True, webhook_max_per_project=3) as (_, client):
            hooks = [await subscribe(client, receiver.url) for _ in range(3)]
            refused = await client.post(
                "/webhooks", json={"url": receiver.url, "events": ["experiment.concluded"]}
            )
            assert refused.status_code == 409
            assert "MABAPI_WEBHOOK_MAX_PER_PROJECT" in refused.text
            assert len((await client.get("/webhooks")).json()["webhooks"]) == 3
            test_url = f"/webhooks/{hooks[0]['id']}/test"
            for _ in range(service.QUEUED_TESTS):
                assert (await client.post(test_url)).status_code == 202
            limited = await client.post(test_url)
            assert limited.status_code == 429
            assert limited.headers["Retry-After"]
            assert "still pending" in limited.text
            assert (await client.post(f"/webhooks/{hooks[1]['id']}/test")).status_code == 202

    @pytest.mark.slow
    async def test_a_tenants_hanging_receivers_do_not_delay_another_tenants_delivery(
        self, make_app: AppFactory, serve: Callable[[Receiver], Receiver]
    ) -> None:
        """Bound: another project's delivery is sent within a poll interval and its own
        receiver's time, whatever one project queues to receivers that hang."""
        hanging = serve(Receiver(delay=8.0))
        fast = serve(Receiver())
        async with make_app(
            webhook_allow_private=True,
            webhook_delivery=True,
            webhook_poll_seconds=0.05,
            webhook_watch_seconds=3600,
        ) as (app, client):
            noisy = bearer(await make_key(app, scope="admin", project="noisy"))
            quiet = bearer(await make_key(app, scope="admin", project="quiet"))
            for _ in range(10):
                hook = await subscribe(client, hanging.url, headers=noisy)
                for _ in range(service.QUEUED_TESTS):
                    queued = await client.post(f"/webhooks/{hook['id']}/test", headers=noisy)
                    assert queued.status_code == 202
            await subscribe(client, fast.url, headers=quiet)
            for _ in range(200):  # the noisy project's receivers are busy hanging
                if len(hanging.requests) >= 10:
                    break
                await asyncio.sleep(0.02)
            assert len(hanging.requests) >= 10
            delays = []
            for n in range(3):
                started = time.monotonic()
                await conclude(client, f"q{n}", headers=quiet)
                for _ in range(400):
                    if len(fast.requests) > n:
                        break
                    await asyncio.sleep(0.01)
                assert len(fast.requests) == n + 1, "the quiet project's event never came"
                delays.append(fast.requests[n][2] - started)
            await stop_delivery(app)
        assert max(delays) < 1.5, delays


class TestWatcher:
    async def test_a_flapping_recommendation_is_announced_only_once_it_holds(
        self, app: FastAPI, client: httpx.AsyncClient, serve: Callable[[Receiver], Receiver]
    ) -> None:
        receiver = serve(Receiver())
        hook = await subscribe(client, receiver.url, "recommendation.changed")
        created = await client.post(
            "/experiments",
            json={
                "id": "e",
                "variants": [{"id": "a"}, {"id": "b"}],
                "settings": {"stop_rule": {"min_days": 0}},
            },
        )
        assert created.status_code == 201

        async def data(b_successes: int) -> None:
            metrics = [
                {"experiment_id": "e", "variant_id": v, "date": f"2024-01-{d:02d}",
                 "impressions": 10_000, "successes": s}
                for d in range(1, 8)
                for v, s in (("a", 1_000), ("b", b_successes))
            ]  # fmt: skip
            response = await client.post("/metrics/batch", json={"metrics": metrics})
            assert response.status_code == 200

        sessionmaker = runtime_of(app).sessionmaker
        start = utcnow()

        async def look(at_seconds: float) -> None:
            async with background_transaction(sessionmaker) as session:
                await watch.watch_one(
                    session, "e", now=start + timedelta(seconds=at_seconds), hold_seconds=60
                )

        for flip in range(10):  # every 4 s: b far better, then no difference
            await data(1_500 if flip % 2 == 0 else 1_000)
            await look(4 * flip)
        async with background_transaction(sessionmaker) as session:
            queued = list(await session.scalars(select(Delivery)))
        assert queued == []
        await data(1_500)  # now it holds
        await look(100)
        await look(130)
        await look(170)
        async with background_transaction(sessionmaker) as session:
            queued = list(await session.scalars(select(Delivery)))
        assert [(d.webhook_id, d.event) for d in queued] == [(hook["id"], "recommendation.changed")]

    @pytest.mark.slow
    async def test_a_heavy_tenant_does_not_delay_another_tenants_events(
        self, make_app: AppFactory, serve: Callable[[Receiver], Receiver]
    ) -> None:
        """Bound: while one project's 100-variant x 20-guardrail experiment is watched,
        another project's delivery comes within a second, and a change in its own
        experiment is announced within two watch rounds (2 x (interval + budget + the
        slowest experiment's watch))."""
        receiver = serve(Receiver())
        interval, budget = 0.2, 0.2
        async with make_app(
            webhook_allow_private=True,
            webhook_delivery=True,
            webhook_poll_seconds=0.05,
            webhook_watch_seconds=interval,
            webhook_watch_budget_seconds=budget,
            webhook_change_hold_seconds=0,
        ) as (app, client):
            heavy = bearer(await make_key(app, scope="admin", project="heavy"))
            light = bearer(await make_key(app, scope="admin", project="light"))
            await subscribe(client, receiver.url, "guardrail.breached", headers=heavy)
            guardrails = [
                {"metric_id": f"g{g}", "max_relative_harm": 0.05, "probability": 0.95}
                for g in range(20)
            ]
            variants: list[dict[str, Any]] = [{"id": f"v{k}"} for k in range(100)]
            variants[0]["is_control"] = True
            created = await client.post(
                "/experiments",
                json={"id": "big", "variants": variants, "guardrails": guardrails},
                headers=heavy,
            )
            assert created.status_code == 201, created.text
            metrics = [
                {"experiment_id": "big", "variant_id": f"v{k}", "date": f"2024-01-0{d}",
                 "impressions": 1000, "successes": 100 + k % 7,
                 **({"metric_id": f"g{g}"} if g >= 0 else {})}
                for d in range(1, 4) for k in range(100) for g in range(-1, 20)
            ]  # fmt: skip
            for at in range(0, len(metrics), 10_000):
                posted = await client.post(
                    "/metrics/batch", json={"metrics": metrics[at : at + 10_000]}, headers=heavy
                )
                assert posted.status_code == 200, posted.text
            sessionmaker = runtime_of(app).sessionmaker
            started = time.monotonic()
            async with background_transaction(sessionmaker) as session:
                await watch.watch_one(session, "big")
            slowest = time.monotonic() - started

            await subscribe(
                client, receiver.url, "experiment.concluded", "recommendation.changed",
                headers=light,
            )  # fmt: skip
            created = await client.post(
                "/experiments",
                json={"id": "small", "variants": [{"id": "a"}, {"id": "b"}],
                      "settings": {"stop_rule": {"min_days": 0}}},
                headers=light,
            )  # fmt: skip
            assert created.status_code == 201
            small = [
                {"experiment_id": "small", "variant_id": v, "date": "2024-01-01",
                 "impressions": 20_000, "successes": s}
                for v, s in (("a", 1_000), ("b", 1_500))
            ]  # fmt: skip
            changed_at = time.monotonic()
            posted = await client.post("/metrics/batch", json={"metrics": small}, headers=light)
            assert posted.status_code == 200
            await conclude(client, "other", headers=light)
            concluded_at = time.monotonic()
            bound = 2 * (interval + budget + slowest) + 1.0
            arrived: dict[str, float] = {}
            deadline = time.monotonic() + bound + 5
            while time.monotonic() < deadline and len(arrived) < 2:
                for headers, _, received in list(receiver.requests):
                    event = headers.get("x-mabapi-event", "")
                    if event in ("experiment.concluded", "recommendation.changed"):
                        arrived.setdefault(event, received)
                await asyncio.sleep(0.02)
            await stop_delivery(app)
        assert arrived["experiment.concluded"] - concluded_at < 1.0
        assert arrived["recommendation.changed"] - changed_at < bound, (slowest, arrived)


class TestAddresses:
    @pytest.mark.parametrize(
        "address",
        [
            "::7f00:1", "::a00:1", "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1",
            "2002:7f00:1::1", "2002:5db8:d822::1", "::ffff:0:7f00:1", "::ffff:0:5db8:d822",
            "fec0::1", "192.0.0.1", "192.0.0.9", "192.0.0.170", "100::1", "2001::1",
            "2001:db8::1", "fe80::1", "fc00::1", "ff02::1", "3fff::1", "198.18.0.1",
            "100.64.0.1", "240.0.0.1", "255.255.255.255", "224.0.0.1", "::", "::1",
            "::ffff:10.0.0.1", "192.88.99.1", "0.1.2.3",
        ],
    )  # fmt: skip
    def test_special_purpose_and_wrapped_private_addresses_are_refused(self, address: str) -> None:
        assert not network.is_public(ipaddress.ip_address(address))

    @pytest.mark.parametrize(
        "address",
        ["93.184.216.34", "2606:4700:4700::1111", "::ffff:93.184.216.34", "64:ff9b::5db8:d822"],
    )
    def test_public_addresses_pass(self, address: str) -> None:
        assert network.is_public(ipaddress.ip_address(address))

    @pytest.mark.parametrize("settings_overrides", [{"webhook_allow_private": False}])
    @pytest.mark.parametrize("host", ["[::7f00:1]", "[64:ff9b::a00:1]", "[2002:7f00:1::1]"])
    async def test_refused_at_creation(self, client: httpx.AsyncClient, host: str) -> None:
        response = await client.post(
            "/webhooks", json={"url": f"http://{host}/hook", "events": ["experiment.concluded"]}
        )
        assert response.status_code == 422, response.text
        assert "non-public" in response.text

    async def test_the_refusal_never_says_what_an_internal_name_resolves_to(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def lookup(host: str, port: int) -> list[str]:
            return ["10.20.30.40"]

        monkeypatch.setattr(network, "lookup", lookup)
        with pytest.raises(network.UnsafeURLError) as refused:
            await network.resolve("https://intranet.corp/", allow_private=False)
        assert "10.20.30.40" not in str(refused.value)
        assert "intranet.corp" in str(refused.value)


class TestHostileValues:
    @pytest.mark.parametrize(
        "body",
        [
            {"url": "http://127.0.0.1:9/ho\u0000ok", "events": ["experiment.concluded"]},
            {"url": "http://127.0.0.1:9/hook", "events": ["experiment.concluded"],
             "secret": "whsec_" + "A" * 30 + "\u0000" + "A" * 9},
            {"url": "http://127.0.0.1:9/ho\nok", "events": ["experiment.concluded"]},
        ],
    )  # fmt: skip
    async def test_a_control_character_in_a_url_or_secret_is_a_422(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await client.post("/webhooks", json=body)
        assert response.status_code == 422, response.text
        assert "control characters" in response.text
        assert (await client.get("/webhooks")).json()["webhooks"] == []

    @pytest.mark.parametrize("secret", ["s" * 20, "whsec_" + "A" * 20, "whsec_" + "!" * 40])
    async def test_a_secret_not_in_the_standard_form_is_a_422_saying_which(
        self, client: httpx.AsyncClient, secret: str
    ) -> None:
        response = await client.post(
            "/webhooks",
            json={"url": "http://127.0.0.1:9/h", "events": ["experiment.concluded"],
                  "secret": secret},
        )  # fmt: skip
        assert response.status_code == 422
        assert "whsec_" in response.text

    async def test_a_failing_statement_never_shows_its_parameters(
        self, app: FastAPI, caplog: pytest.LogCaptureFixture
    ) -> None:
        secret = service.new_secret()
        sessionmaker = runtime_of(app).sessionmaker

        def row() -> Webhook:
            return Webhook(
                id="wh_same", project_id="default", url="http://x.example/", events=[],
                secret=secret, created_at=utcnow(),
            )  # fmt: skip

        async with background_transaction(sessionmaker) as session:
            session.add(row())

        async def again() -> None:
            async with background_transaction(sessionmaker) as session:
                session.add(row())
                await session.flush()

        with pytest.raises(IntegrityError) as failed:
            await again()
        logging.getLogger("test").exception("as a log line", exc_info=failed.value)
        for text in (str(failed.value), caplog.text):
            assert secret not in text
            assert secret.removeprefix("whsec_")[:12] not in text
        assert "parameters hidden" in str(failed.value)


class TestStandardWebhooks:
    async def test_deliveries_verify_with_the_standardwebhooks_library(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        serve: Callable[[Receiver], Receiver],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        receiver = serve(Receiver())
        hook = await subscribe(client, receiver.url)
        assert hook["secret"].startswith("whsec_")
        await conclude(client, "e")
        assert await runner_for(app).run_once() == 1
        [(headers, body, _)] = receiver.requests
        verifier = standardwebhooks.Webhook(hook["secret"])
        payload = verifier.verify(body, headers)
        assert payload["event"] == "experiment.concluded"
        assert headers["webhook-id"] == payload["delivery_id"]
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            verifier.verify(body.replace(b'"b"', b'"a"'), headers)
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(service.new_secret()).verify(body, headers)

        # The same delivery replayed six minutes later: outside the 5-minute tolerance.
        class Later(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Later:
                moment = datetime.now(tz=tz or UTC) + timedelta(minutes=6)
                return cls.fromtimestamp(moment.timestamp(), tz=moment.tzinfo)

        monkeypatch.setattr(standardwebhooks.webhooks, "datetime", Later)
        with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
            verifier.verify(body, headers)

    async def test_a_retry_keeps_its_id_and_signs_its_own_timestamp(self) -> None:
        secret = service.new_secret()
        body = b'{"event":"webhook.test"}'
        first = service.standard_headers(secret, "d1", utcnow() - timedelta(seconds=20), body)
        again = service.standard_headers(secret, "d1", utcnow(), body)
        assert first["webhook-id"] == again["webhook-id"] == "d1"
        assert first["webhook-signature"] != again["webhook-signature"]
        verifier = standardwebhooks.Webhook(secret)
        verifier.verify(body, first)
        verifier.verify(body, again)
