"""The rolling-upgrade promise (docs/OPERATIONS.md, "Upgrade"): a server of the previous
migration head keeps answering every write path against the schema upgraded to this
head, on SQLite and PostgreSQL; and this head's code reads what it wrote.

The previous head's code is that of the parent of the commit that added this head's
migration, taken from git (`git archive`) and run on this environment's dependencies."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from mabapi.db import migrate
from mabapi.db.migrate import upgrade_url
from tests.fixtures.databases import create_postgres_database, drop_postgres_database, sqlite_url
from tests.fixtures.servers import REPO, free_port, plain, running

VERSIONS = REPO / "src" / "mabapi" / "db" / "migrations" / "versions"
pytestmark = pytest.mark.slow


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree of the previous migration head (its src/ folder)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        if os.environ.get("CI"):
            pytest.fail("the rolling-upgrade test needs the git history (a clone)")
        pytest.skip("not a git checkout: no previous release to run")
    head = migrate.head_revision()
    [head_file] = [p for p in VERSIONS.glob(f"{head}_*.py")]
    added = _git("log", "--diff-filter=A", "--format=%H", "--", str(head_file)).split()
    if os.environ.get("MABAPI_TEST_PREVIOUS_COMMIT"):  # any earlier release, by hand
        commit = _git("rev-parse", os.environ["MABAPI_TEST_PREVIOUS_COMMIT"]).strip()
    elif not added:  # this head's migration is not committed yet: the previous is HEAD
        commit = _git("rev-parse", "HEAD").strip()
    else:
        commit = _git("rev-parse", f"{added[-1]}^").strip()
    folder = tmp_path_factory.mktemp("previous")
    archive = folder / "src.tar"
    subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), commit, "src", "pyproject.toml"],
        cwd=REPO,
        check=True,
        timeout=60,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    previous_heads = {
        p.name.split("_")[0] for p in (folder / "src/mabapi/db/migrations/versions").glob("0*.py")
    }
    assert head not in previous_heads, f"{commit} already has migration {head}"
    return folder / "src"


@pytest.fixture(params=["sqlite", "postgresql"])
def upgraded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A database migrated to this head by this head's code."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "rolling.db")
        asyncio.run(upgrade_url(url))
        yield url
        return
    url = create_postgres_database("mabapi_rolling")
    try:
        asyncio.run(upgrade_url(url))
        yield url
    finally:
        drop_postgres_database(url)


def _server(source: Path | None, url: URL) -> Any:
    """A server of `source` (the previous release), or of this code (None)."""
    port = free_port()
    env = {
        "MABAPI_DATABASE_URL": plain(url),
        "MABAPI_MIGRATE_ON_START": "false",
        "MABAPI_WEBHOOK_DELIVERY": "false",
        "MABAPI_LOG_LEVEL": "warning",
        "PYTHONPATH": str(source) if source else "",
    }
    launcher = "import sys; from mabapi.cli import app; sys.argv[0] = 'mabapi'; app()"
    command = [sys.executable, "-c", launcher, "serve", "--port", str(port)]
    return running(command, env=env, port=port)


def _writes(base: str) -> list[tuple[str, int]]:
    """Every write path once (and twice where a retry is the point): (call, status)."""
    day = "2026-11-30"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/experiments", {"id": "r", "variants": [{"id": "a", "is_control": True},
         {"id": "b"}], "guardrails": [{"metric_id": "refunds", "max_relative_harm": 0.05,
         "probability": 0.95}]}),
        ("POST", "/metrics/", {"experiment_id": "r", "variant_id": "a", "date": day,
         "impressions": 1000, "successes": 100}),
        ("POST", "/metrics/", {"experiment_id": "r", "variant_id": "a", "date": day,
         "impressions": 1000, "successes": 110}),
        ("POST", "/metrics/", {"experiment_id": "r", "variant_id": "b", "date": day,
         "impressions": 400, "successes": 50, "segment": "mobile"}),
        ("POST", "/metrics/batch", {"metrics": [
            {"experiment_id": "r", "variant_id": "b", "date": day, "impressions": 1000,
             "successes": 120},
            {"experiment_id": "r", "variant_id": "a", "date": day, "impressions": 300,
             "successes": 30, "segment": "desktop"},
            {"experiment_id": "r", "variant_id": "b", "date": day, "impressions": 1000,
             "successes": 9, "metric_id": "refunds"}]}),
        ("POST", "/metrics", {"experiment_id": "auto", "variant_id": "x", "date": day,
         "impressions": 10, "successes": 1}),
        ("POST", "/experiments/r/assign", {"unit_id": "u1"}),
        ("POST", "/experiments/r/assign", {"unit_id": "u2", "segment": "mobile"}),
        ("POST", "/experiments/r/assign", {"unit_id": "u2", "segment": "mobile"}),
        ("POST", "/assign/batch", {"assignments": [
            {"experiment_id": "r", "unit_id": "u3"},
            {"experiment_id": "r", "unit_id": "u4", "segment": "tablet"}]}),
        ("POST", "/experiments/r/conversions", {"unit_id": "u1"}),
        ("POST", "/experiments/r/conversions", {"unit_id": "u1"}),
        ("POST", "/conversions/batch", {"conversions": [
            {"experiment_id": "r", "unit_id": "u2"},
            {"experiment_id": "r", "unit_id": "u3", "metric_id": "refunds"}]}),
        ("PATCH", "/experiments/r", {"description": "rolled"}),
    ]  # fmt: skip
    answers = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for method, path, body in calls:
            response = client.request(method, path, json=body)
            answers.append((f"{method} {path}", response.status_code))
    return answers


def test_the_previous_release_writes_on_the_upgraded_schema(
    previous_release: Path, upgraded: URL
) -> None:
    with _server(previous_release, upgraded) as old:
        answers = _writes(old)
    failed = [(call, status) for call, status in answers if status >= 300]
    assert failed == [], failed
    assert len(answers) == 14
    # This release reads what the previous one wrote, segments included.
    with _server(None, upgraded) as new:
        summary = httpx.get(f"{new}/experiments/r/summary", timeout=30).json()
        listing = httpx.get(f"{new}/experiments/r/segments", timeout=30).json()
        again = _writes(new)
    totals = {v["variant_id"]: v["impressions"] for v in summary["variants"]}
    assert totals["a"] >= 1300, totals
    assert totals["b"] >= 1400, totals
    assert {"desktop", "mobile", "tablet"} <= {s["segment"] for s in listing["segments"]}
    # Its writes still work on data the previous release left (the experiment exists).
    assert [status for call, status in again if call != "POST /experiments"] == [200] * 13


def test_the_version_names_the_schema_and_changed_with_it(previous_release: Path) -> None:
    """A release that changes the schema is a new version."""
    from importlib import metadata

    from typer.testing import CliRunner

    from mabapi.cli import app

    printed = CliRunner().invoke(app, ["--version"]).stdout
    assert (
        printed.strip() == f"mabapi {metadata.version('mabapi')} (schema {migrate.head_revision()})"
    )
    previous = (previous_release.parent / "pyproject.toml").read_text()
    assert 'version = "' in previous
    assert f'version = "{metadata.version("mabapi")}"' not in previous
