"""Webhooks over the API and the delivery loop, on both databases: subscriptions, the
private-address refusal (at creation, at delivery, after a redirect), signatures,
retries against a receiver that fails then recovers, the outbox surviving a crash
between commit and delivery, the lease, and each event emitted once per change."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from mabapi.db.base import utcnow
from mabapi.db.transactions import background_transaction
from mabapi.reports import watch
from mabapi.runtime import runtime_of
from mabapi.webhooks import network, repository, service
from mabapi.webhooks.models import Delivery, Lease
from mabapi.webhooks.runner import WebhookRunner

AppFactory = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@dataclass
class Receiver:
    """A local HTTP receiver: records each request; answers `statuses` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allow_private": True}


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (the README's example, in four lines)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


async def subscribe(client: httpx.AsyncClient, url: str, *events: str) -> dict[str, Any]:
    response = await client.post(
        "/webhooks", json={"url": url, "events": list(events) or ["experiment.concluded"]}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def runner_for(app: FastAPI, **config: Any) -> WebhookRunner:
    runtime = runtime_of(app)
    return WebhookRunner(
        runtime.sessionmaker,
        service.DeliveryConfig(
            config.get("public_url", "https://bandit.example.com"),
            config.get("allow_private", True),
        ),
        poll_seconds=0.05,
    )


async def conclude(client: httpx.AsyncClient, experiment_id: str = "e") -> None:
    response = await client.post(
        "/experiments", json={"id": experiment_id, "variants": [{"id": "a"}, {"id": "b"}]}
    )
    assert response.status_code == 201, response.text
    response = await client.post(f"/experiments/{experiment_id}/conclude", json={"winner": "b"})
    assert response.status_code == 200, response.text


async def deliveries(client: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["deliveries"]
    return items


class TestSubscriptions:
    async def test_create_list_delete_and_the_secret_is_shown_once(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        created = await subscribe(client, receiver.url, "guardrail.breached")
        assert created["id"].startswith("wh_")
        assert len(created["secret"]) >= 32
        listed = (await client.get("/webhooks")).json()["webhooks"]
        assert [w["id"] for w in listed] == [created["id"]]
        assert "secret" not in listed[0]
        removed = await client.delete(f"/webhooks/{created['id']}")
        assert removed.status_code == 200
        assert removed.json()["id"] == created["id"]
        assert (await client.get("/webhooks")).json()["webhooks"] == []
        assert (await client.get(f"/webhooks/{created['id']}/deliveries")).status_code == 404

    async def test_a_given_secret_is_kept_and_unknown_events_are_refused(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
        response = await client.post(
            "/webhooks",
            json={"url": receiver.url, "events": ["experiment.concluded"], "secret": secret},
        )
        assert response.json()["secret"] == secret
        bad = await client.post("/webhooks", json={"url": receiver.url, "events": ["oops"]})
        assert bad.status_code == 422
        assert "guardrail.breached" in bad.text


class TestPrivateAddresses:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"webhook_allow_private": False}

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
        ],
    )
    async def test_refused_at_creation_with_what_to_do(
        self, client: httpx.AsyncClient, url: str
    ) -> None:
        response = await client.post(
            "/webhooks", json={"url": url, "events": ["experiment.concluded"]}
        )
        assert response.status_code == 422, response.text
        assert "MABAPI_WEBHOOK_ALLOW_PRIVATE" in response.text
        assert (await client.get("/webhooks")).json()["webhooks"] == []

    @pytest.mark.parametrize("url", ["ftp://example.com/x", "http://user:pw@example.com/x"])
    async def test_other_schemes_and_credentials_are_refused(
        self, client: httpx.AsyncClient, url: str
    ) -> None:
        response = await client.post(
            "/webhooks", json={"url": url, "events": ["experiment.concluded"]}
        )
        assert response.status_code == 422

    async def test_refused_again_at_delivery(
        self, make_app: AppFactory, receiver: Receiver
    ) -> None:
        """Created while allowed; a deployment that does not allow it never sends."""
        async with make_app(webhook_allow_private=True) as (app, client):
            hook = await subscribe(client, receiver.url)
            await conclude(client)
            assert await runner_for(app, allow_private=False).run_once() == 1
            [delivery] = await deliveries(client, hook["id"])
        assert receiver.requests == []
        assert delivery["status"] == "pending"
        assert "non-public" in delivery["attempts"][0]["error"]

    async def test_a_redirect_to_a_private_address_is_not_followed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def lookup(host: str, port: int) -> list[str]:
            return {"hooks.example.com": ["93.184.216.34"], "internal.example.com": ["10.0.0.5"]}[
                host
            ]

        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(f"{request.url.host} {request.headers['host']}")
            return httpx.Response(302, headers={"Location": "http://internal.example.com/steal"})

        monkeypatch.setattr(network, "lookup", lookup)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            outcome = await network.post(
                http, "https://hooks.example.com/in", body=b"{}", headers={}, allow_private=False
            )
        # Sent to the checked address with the real host name; the redirect refused.
        assert seen == ["93.184.216.34 hooks.example.com"]
        assert not outcome.ok
        assert outcome.error is not None
        assert "non-public" in outcome.error
        assert "10.0.0.5" not in outcome.error  # what an internal name resolves to is not told

    async def test_a_host_with_one_private_address_among_public_ones_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def lookup(host: str, port: int) -> list[str]:
            return ["93.184.216.34", "127.0.0.1"]

        monkeypatch.setattr(network, "lookup", lookup)
        with pytest.raises(network.UnsafeURLError, match="non-public") as refused:
            await network.resolve("https://rebind.example.com/", allow_private=False)
        assert "127.0.0.1" not in str(refused.value)


class TestDelivery:
    async def test_signed_with_event_and_unique_delivery_headers(
        self, app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        hook = await subscribe(client, receiver.url, "experiment.concluded")
        await conclude(client, "e1")
        await conclude(client, "e2")
        assert await runner_for(app).run_once() == 2
        assert len(receiver.requests) == 2
        ids = set()
        for headers, body in receiver.requests:
            assert verify(hook["secret"], body, headers["x-mabapi-signature"])
            assert not verify("another secret!", body, headers["x-mabapi-signature"])
            assert headers["x-mabapi-event"] == "experiment.concluded"
            assert headers["content-type"] == "application/json"
            payload = json.loads(body)
            assert payload["delivery_id"] == headers["x-mabapi-delivery"]
            assert payload["winner"] == "b"
            assert payload["link"] == (
                f"https://bandit.example.com/ui/experiments/{payload['experiment']['id']}"
            )
            assert "secret" not in body.decode()
            assert hook["secret"] not in body.decode()
            ids.add(headers["x-mabapi-delivery"])
        assert len(ids) == 2
        statuses = {d["status"] for d in await deliveries(client, hook["id"])}
        assert statuses == {"delivered"}

    async def test_retried_with_backoff_until_the_receiver_recovers(
        self, app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        receiver.statuses = [500, 503]
        hook = await subscribe(client, receiver.url)
        await conclude(client)
        runner = runner_for(app)
        sessionmaker = runtime_of(app).sessionmaker
        config = service.DeliveryConfig("https://x", True)
        async with network.client() as http:
            assert await service.deliver_due(sessionmaker, http, config) == 1
            # Not due again before its backoff (10 s), then due.
            assert await service.deliver_due(sessionmaker, http, config) == 0
            later = utcnow() + timedelta(seconds=11)
            assert await service.deliver_due(sessionmaker, http, config, now=later) == 1
            much_later = utcnow() + timedelta(seconds=40)
            assert await service.deliver_due(sessionmaker, http, config, now=much_later) == 1
        assert await runner.run_once() == 0  # delivered: nothing left
        [delivery] = await deliveries(client, hook["id"])
        assert delivery["status"] == "delivered"
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
        assert len({h["x-mabapi-delivery"] for h, _ in receiver.requests}) == 1
        assert [service.retry_delay(n) for n in (1, 2, 3, 12)] == [10.0, 20.0, 40.0, 3600.0]

    async def test_gives_up_after_24_hours(
        self, app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        receiver.statuses = [500] * 5
        hook = await subscribe(client, receiver.url)
        await conclude(client)
        sessionmaker = runtime_of(app).sessionmaker
        async with background_transaction(sessionmaker) as session:
            await session.execute(
                update(Delivery).values(
                    created_at=utcnow() - timedelta(hours=24) + timedelta(seconds=5)
                )
            )
        await runner_for(app).run_once()
        [delivery] = await deliveries(client, hook["id"])
        assert delivery["status"] == "failed"
        assert delivery["next_attempt_at"] is None

    @pytest.mark.slow
    async def test_a_slow_receiver_times_out_after_5_seconds(
        self, app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        receiver.delay = 6.0
        hook = await subscribe(client, receiver.url)
        await conclude(client)
        await runner_for(app).run_once()
        [delivery] = await deliveries(client, hook["id"])
        [attempt] = delivery["attempts"]
        assert "timed out" in attempt["error"]
        assert 4500 <= attempt["duration_ms"] < 6000

    async def test_the_test_command_queues_a_delivery_to_that_webhook_only(
        self, app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        hook = await subscribe(client, receiver.url)
        other = await subscribe(client, receiver.url)
        response = await client.post(f"/webhooks/{hook['id']}/test")
        assert response.status_code == 202
        await runner_for(app).run_once()
        [(headers, _)] = receiver.requests
        assert headers["x-mabapi-event"] == "webhook.test"
        assert headers["x-mabapi-delivery"] == response.json()["delivery_id"]
        assert await deliveries(client, other["id"]) == []


class TestOutbox:
    async def test_a_crash_between_commit_and_delivery_then_restart_delivers_once(
        self, make_app: AppFactory, receiver: Receiver
    ) -> None:
        """The event commits with the conclusion; the process that committed it dies
        before sending (its app closes with no loop); a new process sends it once."""
        async with make_app(webhook_allow_private=True) as (app, client):
            hook = await subscribe(client, receiver.url)
            await conclude(client)
            sessionmaker = runtime_of(app).sessionmaker
            # A sender that claimed it and died mid-send: it is due again after the claim.
            async with background_transaction(sessionmaker) as session:
                claimed = await repository.claim_due(
                    session,
                    utcnow(),
                    utcnow() + timedelta(seconds=service.CLAIM_SECONDS),
                    10,
                    per_webhook=service.PER_WEBHOOK,
                )
            assert len(claimed) == 1
            assert await runner_for(app).run_once() == 0  # held by the dead sender's claim
            async with background_transaction(sessionmaker) as session:
                await session.execute(update(Delivery).values(next_attempt_at=utcnow()))
            # "Restart": a fresh runner (new holder) takes the lease once it expires.
            restarted = runner_for(app)
            async with background_transaction(sessionmaker) as session:
                await session.execute(
                    update(Lease).values(expires_at=utcnow() - timedelta(seconds=1))
                )
            assert await restarted.run_once() == 1
            assert await restarted.run_once() == 0
            [delivery] = await deliveries(client, hook["id"])
        assert len(receiver.requests) == 1
        assert delivery["status"] == "delivered"

    async def test_no_event_without_the_commit(
        self, app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        hook = await subscribe(client, receiver.url)
        response = await client.post("/experiments/missing/conclude", json={"winner": "b"})
        assert response.status_code == 404
        await client.post("/experiments", json={"id": "e", "variants": [{"id": "a"}]})
        bad = await client.post("/experiments/e/conclude", json={"winner": "zzz"})
        assert bad.status_code == 422
        assert await deliveries(client, hook["id"]) == []

    async def test_one_process_holds_the_delivery_lease(self, app: FastAPI) -> None:
        first, second = runner_for(app), runner_for(app)
        sessionmaker = runtime_of(app).sessionmaker
        assert await service.take_lease(sessionmaker, first.holder, 15)
        assert not await service.take_lease(sessionmaker, second.holder, 15)
        assert await service.take_lease(sessionmaker, first.holder, 15)  # renewal
        await service.release_lease(sessionmaker, first.holder)
        assert await service.take_lease(sessionmaker, second.holder, 15)

    async def test_the_loop_of_a_running_app_delivers(
        self, make_app: AppFactory, receiver: Receiver
    ) -> None:
        async with make_app(
            webhook_allow_private=True, webhook_delivery=True, webhook_poll_seconds=0.05
        ) as (_, client):
            await subscribe(client, receiver.url)
            await conclude(client)
            for _ in range(100):
                if receiver.requests:
                    break
                await asyncio.sleep(0.05)
        assert len(receiver.requests) == 1


class TestEvents:
    async def test_concluded_once_per_conclusion(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        hook = await subscribe(client, receiver.url, "experiment.concluded")
        await conclude(client)
        again = await client.post("/experiments/e/conclude", json={"winner": "b"})
        assert again.status_code == 200
        assert len(await deliveries(client, hook["id"])) == 1

    async def test_only_subscribed_events_and_only_the_projects_own(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        hook = await subscribe(client, receiver.url, "guardrail.breached")
        await conclude(client)
        assert await deliveries(client, hook["id"]) == []

    async def test_recommendation_change_and_mismatch_are_announced_once(
        self, app: FastAPI, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        hook = await subscribe(
            client, receiver.url, "recommendation.changed", "sample_ratio.mismatch"
        )
        await client.post(
            "/experiments",
            json={
                "id": "e",
                "variants": [{"id": "a"}, {"id": "b"}],
                "settings": {"stop_rule": {"min_days": 0}},
            },
        )
        # Each day served 50/50 (planned before any data), then b far better on a 2:1
        # split of the units: a sample-ratio mismatch.
        for day in range(1, 11):
            response = await client.get("/allocations/e", params={"for_date": f"2024-01-{day:02d}"})
            assert response.status_code == 200
        metrics = [
            {"experiment_id": "e", "variant_id": v, "date": f"2024-01-{d:02d}",
             "impressions": n, "successes": s}
            for d in range(1, 11)
            for v, n, s in (("a", 20_000, 1_000), ("b", 10_000, 1_500))
        ]  # fmt: skip
        assert (await client.post("/metrics/batch", json={"metrics": metrics})).status_code == 200
        sessionmaker = runtime_of(app).sessionmaker
        assert await watch.watch_all(sessionmaker) == 1  # its project has a webhook
        for _ in range(2):  # watching again announces nothing new
            async with background_transaction(sessionmaker) as session:
                await watch.watch_one(session, "e")
        rows = await deliveries(client, hook["id"])
        events = sorted(row["event"] for row in rows)
        assert events == ["recommendation.changed", "sample_ratio.mismatch"]
        await runner_for(app).run_once()
        payloads = {
            headers["x-mabapi-event"]: json.loads(body) for headers, body in receiver.requests
        }
        change = payloads["recommendation.changed"]
        assert (change["from"], change["to"], change["winner"]) == ("continue", "stop_winner", "b")
        assert change["claims_better"] is True
        assert change["variants"]["b"]["probability_best"] > 0.99
        assert payloads["sample_ratio.mismatch"]["p_value"] < 0.001


@pytest.fixture
def sessions(app: FastAPI) -> Any:
    return runtime_of(app).sessionmaker


async def test_deliveries_are_rows_of_the_outbox(
    app: FastAPI, client: httpx.AsyncClient, receiver: Receiver, sessions: Any
) -> None:
    hook = await subscribe(client, receiver.url)
    await conclude(client)
    async with background_transaction(sessions) as session:
        rows = list(await session.scalars(select(Delivery)))
    assert [(r.webhook_id, r.event, r.status) for r in rows] == [
        (hook["id"], "experiment.concluded", "pending")
    ]


class TestReadmeReceiver:
    """The README's receiver (on the standardwebhooks library), run as it is shown (its
    secret and port swapped in)."""

    def test_it_accepts_signed_deliveries_once_and_refuses_forgeries(self) -> None:
        import re
        import subprocess
        import sys
        import time
        from pathlib import Path

        from tests.fixtures.servers import free_port

        readme = (Path(__file__).parents[2] / "README.md").read_text()
        code = re.search(r"drops repeats[^\n]*\n\n```python\n(.*?)```", readme, re.S)
        assert code is not None
        port = free_port()
        source = code.group(1).replace('("", 9000)', f'("127.0.0.1", {port})')
        secret = service.new_secret()
        source = source.replace("the secret POST /webhooks answered", secret)
        process = subprocess.Popen(
            [sys.executable, "-u", "-c", source], stdout=subprocess.PIPE, text=True
        )
        try:
            body = b'{"event":"webhook.test"}'
            good = service.standard_headers(secret, "d1", utcnow(), body)
            forged = service.standard_headers(service.new_secret(), "d2", utcnow(), body)
            url = f"http://127.0.0.1:{port}/"
            for _ in range(100):
                try:
                    httpx.get(url, timeout=0.2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)
            statuses = [
                httpx.post(url, content=body, headers=headers).status_code
                for headers in (good, good, forged)
            ]
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=5)
        assert statuses == [204, 204, 401]
        assert output.count("webhook.test") == 1  # the repeat is dropped
