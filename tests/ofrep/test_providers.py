"""OpenFeature clients nobody here wrote, against a real server: the OpenFeature Python
SDK with the community OFREP provider (`openfeature-provider-ofrep`), and our own
provider (`mabapi.openfeature`) resolving and tracking."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.track import TrackingEventDetails
from sqlalchemy.engine import URL

from mabapi.openfeature import MabapiProvider
from tests.fixtures.databases import clear_database, url_text
from tests.fixtures.servers import free_port, running

ADMIN_KEY = "openfeature-admin-key-0123456789abcdef0"


def serve(database_url: URL, **env: str) -> Iterator[tuple[str, str]]:
    """A server on the test database; yields its URL and a client key."""
    port = free_port()
    environment = {
        "MABAPI_DATABASE_URL": url_text(database_url),
        "MABAPI_REQUIRE_AUTH": "true",
        "MABAPI_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "MABAPI_LOG_LEVEL": "warning",
        **env,
    }
    command = [sys.executable, "-m", "mabapi", "serve", "--port", str(port)]
    try:
        with running(command, env=environment, port=port) as base:
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            for experiment in (
                {"id": "headline", "variants": [{"id": "a", "value": "Save 10%"},
                                                {"id": "b", "value": "Free shipping"}]},
                {"id": "basket", "metric_kind": "value",
                 "variants": [{"id": "a", "value": 1.5}, {"id": "b", "value": 2.5}]},
            ):  # fmt: skip
                created = httpx.post(f"{base}/experiments", json=experiment, headers=admin)
                assert created.status_code == 201, created.text
            key = httpx.post(f"{base}/keys", json={"scope": "client", "name": "web"}, headers=admin)
            assert key.status_code == 201, key.text
            yield base, key.json()["key"]
    finally:
        asyncio.run(clear_database(database_url))


@pytest.fixture
def server(database_url: URL) -> Iterator[tuple[str, str]]:
    yield from serve(database_url, MABAPI_RATE_LIMIT_PER_SECOND="0")


def bearer_of(key: str) -> Callable[[], dict[str, str]]:
    return lambda: {"Authorization": f"Bearer {key}"}


def client_for(provider: Any) -> Any:
    domain = f"test-{uuid.uuid4().hex}"
    api.set_provider(provider, domain)
    return api.get_client(domain)


def summary(base: str, experiment: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{base}/experiments/{experiment}/summary",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.slow
class TestCommunityProvider:
    def test_resolve_sticky_and_errors(self, server: tuple[str, str]) -> None:
        base, key = server
        client = client_for(
            OFREPProvider(base, headers_factory=lambda: {"Authorization": f"Bearer {key}"})
        )
        context = EvaluationContext(targeting_key="user-1")
        first = client.get_string_details("headline", "Welcome", context)
        assert first.error_code is None, first.error_message
        assert first.value in {"Save 10%", "Free shipping"}
        assert first.reason == "SPLIT"
        assert first.variant in {"a", "b"}
        assert first.flag_metadata["new"] is True
        for _ in range(3):
            again = client.get_string_details("headline", "Welcome", context)
            assert again.variant == first.variant
            assert again.flag_metadata["new"] is False
        assert sum(v["impressions"] for v in summary(base, "headline")["variants"]) == 1
        number = client.get_float_details("basket", 0.0, context)
        assert number.value in {1.5, 2.5}
        missing = client.get_string_details("nope", "Welcome", context)
        assert missing.error_code == ErrorCode.FLAG_NOT_FOUND
        assert missing.value == "Welcome"
        anonymous = client.get_string_details("headline", "Welcome", EvaluationContext())
        assert anonymous.error_code == ErrorCode.TARGETING_KEY_MISSING
        assert anonymous.value == "Welcome"

    def test_a_429_pauses_the_provider(self, database_url: URL) -> None:
        for base, key in serve(
            database_url, MABAPI_RATE_LIMIT_PER_SECOND="0.5", MABAPI_RATE_LIMIT_BURST="3"
        ):
            client = client_for(OFREPProvider(base, headers_factory=bearer_of(key)))
            errors = []
            for unit in range(6):
                details = client.get_string_details(
                    "headline", "Welcome", EvaluationContext(targeting_key=f"u{unit}")
                )
                errors.append(details.error_message or "")
            limited = [e for e in errors if "Rate limited" in e or "paused" in e]
            assert limited, errors
            assert all(
                d == "Welcome"
                for d in [client.get_string_value("headline", "Welcome",
                                                  EvaluationContext(targeting_key="u9"))]
            )  # fmt: skip


@pytest.mark.slow
class TestOurProvider:
    def test_resolve_and_track(self, server: tuple[str, str]) -> None:
        base, key = server
        client = client_for(MabapiProvider(base, api_key=key))
        context = EvaluationContext(targeting_key="user-7")
        headline = client.get_string_details("headline", "Welcome", context)
        assert headline.reason == "SPLIT"
        client.track("headline", context)
        client.track("headline", context)  # once per unit
        variants = {v["variant_id"]: v for v in summary(base, "headline")["variants"]}
        assert variants[headline.variant]["successes"] == 1
        basket = client.get_float_details("basket", 0.0, context)
        client.track(
            "basket", context, TrackingEventDetails(value=42.5, attributes={"event_id": "o1"})
        )
        client.track(
            "basket", context, TrackingEventDetails(value=42.5, attributes={"event_id": "o1"})
        )
        values = {v["variant_id"]: v for v in summary(base, "basket")["variants"]}
        assert values[basket.variant]["value_sum"] == 42.5

    def test_tracking_an_unknown_unit_says_why(self, server: tuple[str, str]) -> None:
        from openfeature.exception import GeneralError

        base, key = server
        provider = MabapiProvider(base, api_key=key)
        with pytest.raises(GeneralError, match="refused"):
            provider.track("headline", EvaluationContext(targeting_key="never-assigned"))
