"""Engine and session factory for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from mabapi.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys and a busy timeout on every connection; BEGIN IMMEDIATE.

    pysqlite/aiosqlite otherwise start transactions lazily, so two writers can both read
    and then fail to upgrade to a write lock (SQLITE_BUSY without waiting). Taking the
    write lock at BEGIN lets busy_timeout queue writers instead. This is SQLAlchemy's
    documented recipe ("Serializable isolation / Savepoints / Transactional DDL").
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL: a commit is on disk before we acknowledge it, even across a power cut.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A read-only transaction (db/transactions.read_only_transaction) takes no write
        # lock: in WAL mode it reads a snapshot while writers go on.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


# The execution option of a transaction that only reads (SQLite: no write lock).
READ_ONLY = "mabapi_read_only"


def make_engine(
    url: URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pooled: bool = True,
    transaction_pooler: bool = False,
) -> AsyncEngine:
    """`pooled=False`: every session opens and closes its own connection (NullPool).
    Bound parameters never appear in an error or log line (`hide_parameters`): they hold
    secrets (webhook secrets, key hashes) and users' data."""
    pool: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            hide_parameters=True,
            **pool,
        )
        _configure_sqlite(engine)
        return engine
    if pooled:
        pool = {"pool_size": pool_size, "max_overflow": max_overflow}
    # No pre-ping: it cost a round trip per checkout, i.e. per group commit, and under a
    # fixed load it was a third of a new unit's latency (benchmarks/README.md). A
    # connection that died with the server fails its first statement instead; SQLAlchemy
    # then drops every pooled connection older than the failure, the group commit runs the
    # batch again on a new one (nothing had committed), and a request that hit it outside
    # the group commit gets the documented 503 with Retry-After.
    if transaction_pooler:
        # Behind PgBouncer in transaction mode consecutive transactions may run on
        # different server connections: asyncpg's and SQLAlchemy's statement caches
        # (named statements prepared once per connection) would name statements the next
        # server connection never saw, or one it already has. No caches, and a fresh name
        # for every statement prepared (SQLAlchemy's documented recipe for PgBouncer).
        pool["connect_args"] = {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    return create_async_engine(url, hide_parameters=True, **pool)


def _unique_statement_name() -> str:
    return f"__mabapi_{uuid.uuid4().hex}__"


def engine_from_settings(settings: Settings, *, pooled: bool = True) -> AsyncEngine:
    return make_engine(
        settings.async_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pooled=pooled,
        transaction_pooler=settings.db_transaction_pooler,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def ping(engine: AsyncEngine, *, timeout_s: float) -> None:
    """Raise unless the database answers a trivial query within `timeout_s`."""
    async with asyncio.timeout(timeout_s), engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def is_unavailable(error: BaseException) -> bool:
    """True for failures to reach the database, as opposed to bugs or bad data."""
    if isinstance(error, sa_exc.TimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        # PostgreSQL's own words for "not now": 08xxx connection exceptions, 57P01-57P03
        # (shutting down, crashed, starting up: seen after a crash), 53xxx (too many
        # connections, out of memory or disk).
        sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
        if sqlstate.startswith(("08", "57P", "53")):
            return True
    return isinstance(error, OSError)
