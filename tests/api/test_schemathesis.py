"""schemathesis against the live OpenAPI document of a real server on PostgreSQL: every
check, a fixed seed, 100 examples per operation, with a valid admin key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.fixtures.databases import (
    fresh_postgres,
    url_text,
)
from tests.fixtures.servers import BIN, free_port, running

CONFIG = Path(__file__).with_name("schemathesis.toml")
ADMIN_KEY = "schemathesis-admin-key-0123456789abcdef"
SEED = 20261128


@pytest.fixture
def postgres_database() -> Iterator[URL]:
    with fresh_postgres("mabapi_schemathesis") as url:
        yield url


@pytest.mark.slow
def test_schemathesis_finds_nothing(postgres_database: URL, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "MABAPI_DATABASE_URL": url_text(postgres_database),
        "MABAPI_REQUIRE_AUTH": "true",
        "MABAPI_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "MABAPI_RATE_LIMIT_PER_SECOND": "0",
        "MABAPI_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "mabapi", "serve", "--port", str(port)]
    with running(command, env=env, port=port) as base:
        result = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "--config-file", str(CONFIG),
                "run", f"{base}/openapi.json",
                "--checks", "all",
                "--seed", str(SEED),
                "--max-examples", "100",
                "--header", f"Authorization: Bearer {ADMIN_KEY}",
                "--workers", "1",
                "--report", "junit",
                "--report-dir", str(tmp_path),
            ],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        output = result.stdout + result.stderr
        # Inside the `with`: a failure prints the server's log too (5xx tracebacks).
        assert result.returncode == 0, output[-20_000:]
    assert "Authentication failed" not in output, output[-5_000:]  # the key worked
    assert "Tested: 39" in output, output[-5_000:]  # every operation (OFREP included)
