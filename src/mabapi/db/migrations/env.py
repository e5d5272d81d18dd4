"""Alembic environment: async engines, a shared connection when called from code.

When mabapi runs migrations itself (startup, CLI, tests) it passes an open connection in
`config.attributes["connection"]` (Alembic cookbook: "Using Asyncio with Alembic",
programmatic API). Run as plain `alembic ...`, the URL comes from mabapi's Settings.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from mabapi.db.engine import make_engine
from mabapi.db.models import Base
from mabapi.settings import Settings

target_metadata = Base.metadata

if context.config.config_file_name is not None:  # run as `alembic ...` with alembic.ini
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_new_engine() -> None:
    url = context.config.attributes.get("url") or Settings().async_database_url
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline() -> None:
    url = context.config.attributes.get("url") or Settings().async_database_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (shared := context.config.attributes.get("connection")) is not None:
    _run(shared)
else:
    asyncio.run(_run_with_new_engine())
