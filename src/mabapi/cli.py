"""The `mabapi` command line (typer)."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
from rich.console import Console

from mabapi.db import migrate
from mabapi.db.engine import engine_from_settings
from mabapi.settings import Settings

app = typer.Typer(help="mabapi: a multi-armed bandit service for A/B tests.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as error:
        console.print(f"[red]invalid settings:[/red] {error}")
        raise typer.Exit(2) from error


def _describe(settings: Settings) -> str:
    # Never print credentials: render the URL with its password masked.
    return settings.async_database_url.render_as_string(hide_password=True)


async def _upgrade(settings: Settings) -> str | None:
    engine = engine_from_settings(settings)
    try:
        await migrate.upgrade(engine)
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


async def _current(settings: Settings) -> str | None:
    engine = engine_from_settings(settings)
    try:
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the configured database to the latest schema."""
    settings = _settings()
    revision = asyncio.run(_upgrade(settings))
    console.print(f"database {_describe(settings)} is at revision {revision}")


@app.command("init-db")
def init_db() -> None:
    """Alias of `mabapi db upgrade`."""
    db_upgrade()


@db_app.command("check")
def db_check() -> None:
    """Exit 0 if the database is at the latest revision, 1 if it needs `db upgrade`."""
    settings = _settings()
    current = asyncio.run(_current(settings))
    head = migrate.head_revision()
    if current != head:
        console.print(
            f"database {_describe(settings)} is at {current}, latest is {head}: "
            "run `mabapi db upgrade`"
        )
        raise typer.Exit(1)
    console.print(f"database {_describe(settings)} is up to date ({head})")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Run the API server (migrating the database first unless told not to)."""
    import uvicorn

    settings = _settings()
    if settings.migrate_on_start:
        revision = asyncio.run(_upgrade(settings))
        console.print(f"database {_describe(settings)} migrated to {revision}")
        # Migrated once here; the worker processes need not race to do it again.
        os.environ["MABAPI_MIGRATE_ON_START"] = "false"
    uvicorn.run(
        "mabapi.app:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=None if reload else (workers or settings.workers),
        reload=reload,
        log_level=settings.log_level,
    )
