"""Shared fixtures. Every database test runs once per selected backend:
`[sqlite]` and `[postgresql]` (MABAPI_TEST_DATABASES picks; default both)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import URL

from mabapi.app import create_app
from mabapi.db.migrate import upgrade_url
from mabapi.settings import Settings
from tests.fixtures.databases import (
    clear_database,
    create_postgres_database,
    drop_postgres_database,
    pgbouncer_port,
    selected_backends,
    sqlite_url,
    through_pgbouncer,
    url_text,
)


@pytest.fixture(scope="session", params=selected_backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[URL]:
    """A migrated, empty database for this session and backend."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("sqlite") / "mabapi.db")
        asyncio.run(upgrade_url(url))
        yield url
        return
    url = create_postgres_database()
    try:
        asyncio.run(upgrade_url(url))
        # The app talks to it through PgBouncer (transaction mode) for that backend.
        yield url.set(port=pgbouncer_port()) if request.param == "pgbouncer" else url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def backend(database_url: URL) -> str:
    return database_url.get_backend_name()


def make_settings(url: URL | str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": SecretStr(url if isinstance(url, str) else url_text(url)),
        "db_transaction_pooler": not isinstance(url, str) and through_pgbouncer(url),
        "migrate_on_start": False,
        # Tests that deliver webhooks turn the loop on (or run it by hand).
        "webhook_delivery": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module or class to change the app's settings."""
    return {}


@pytest.fixture
async def app(database_url: URL, settings_overrides: dict[str, Any]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url, **settings_overrides))
    try:
        async with application.router.lifespan_context(application):
            yield application
    finally:
        # After the lifespan: the app's background loops have stopped.
        await clear_database(database_url)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


AppAndClient = tuple[FastAPI, httpx.AsyncClient]


@pytest.fixture
def make_app(
    database_url: URL,
) -> Callable[..., AbstractAsyncContextManager[AppAndClient]]:
    """Build an app with particular settings inside a test: `async with make_app(x=1)`."""

    @asynccontextmanager
    async def build(**overrides: Any) -> AsyncIterator[AppAndClient]:
        application = create_app(make_settings(database_url, **overrides))
        try:
            async with application.router.lifespan_context(application):
                transport = httpx.ASGITransport(app=application)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://testserver"
                ) as http:
                    yield application, http
        finally:
            await clear_database(database_url)

    return build
