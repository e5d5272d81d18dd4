"""`mabapi webhooks list|create|delete|test` against a running server (`mabapi serve`,
whose delivery loop sends to a local receiver)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mabapi import cli
from tests.fixtures.servers import keyed_server
from tests.webhooks.test_webhooks import Receiver
from tests.webhooks.test_webhooks import receiver as receiver

KEY = "webhook-cli-admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database: Path = tmp_path_factory.mktemp("webhooks") / "mabapi.db"
    with keyed_server(
        database, KEY, MABAPI_WEBHOOK_ALLOW_PRIVATE="true", MABAPI_WEBHOOK_POLL_SECONDS="0.1"
    ) as base:
        yield base


def invoke(server: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, ["webhooks", *args, "--url", server, "--key", KEY])
    return result.exit_code, result.stdout, result.stderr


def test_create_list_test_delete(server: str, receiver: Receiver) -> None:
    code, stdout, _ = invoke(server, "create", receiver.url, "--event", "experiment.concluded")
    assert code == 0, stdout
    webhook_id = stdout.split()[1]
    secret = stdout.strip().splitlines()[-1].split()[-1]
    code, stdout, _ = invoke(server, "list")
    assert code == 0
    assert webhook_id in stdout
    assert secret not in stdout
    code, stdout, stderr = invoke(server, "test", webhook_id)
    assert code == 0, stderr
    assert "delivered" in stdout
    [(headers, body)] = receiver.requests
    assert headers["x-mabapi-event"] == "webhook.test"
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-mabapi-signature"] == expected
    code, stdout, _ = invoke(server, "delete", webhook_id)
    assert code == 0
    assert webhook_id in stdout
    code, _, stderr = invoke(server, "delete", webhook_id)
    assert code == 1
    assert "404" in stderr


def test_a_failing_receiver_is_reported(server: str, receiver: Receiver) -> None:
    receiver.statuses = [500]
    code, stdout, _ = invoke(server, "create", receiver.url, "--event", "guardrail.breached")
    assert code == 0
    code, _, stderr = invoke(server, "test", stdout.split()[1])
    assert code == 1
    assert "HTTP 500" in stderr
