"""All configuration, read once from the environment (prefix MABAPI_) and `.env`.

This is the only module that reads the environment (ARCHITECTURE.md, rule 7); everything
else receives a `Settings` instance.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///./mabapi.db"

# Drivers we run on: the async one for each supported database.
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def to_async_url(raw: str) -> URL:
    """Turn any accepted database URL into the async-driver URL the engine needs.

    Accepts `sqlite:///path`, `postgresql://...` and the `postgres://...` spelling that
    hosting platforms put in DATABASE_URL; an explicit sync driver is swapped for ours.
    libpq's `sslmode` is translated to asyncpg's `ssl`, which is what asyncpg reads.
    """
    text = raw.strip()
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError(
            "database URL could not be parsed: use sqlite:///path or postgresql://user@host/db"
        ) from None
    backend = url.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(
            f"unsupported database {backend!r}: use sqlite:///path or postgresql://user@host/db"
        )
    url = url.set(drivername=_ASYNC_DRIVERS[backend])
    if backend == "postgresql" and "sslmode" in url.query:
        query = dict(url.query)
        query["ssl"] = query.pop("sslmode")
        url = url.set(query=query)
    return url


class Settings(BaseSettings):
    """Every setting of the service; `.env.bandit` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix="MABAPI_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        validation_alias=AliasChoices("MABAPI_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="sqlite:///path or postgresql://user:pass@host:5432/db (postgres:// too).",
    )
    auto_create: bool = Field(
        default=True,
        description="Metrics for an unknown experiment or variant register it (false: 404).",
    )
    migrate_on_start: bool = Field(
        default=True, description="Apply database migrations when the server starts."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    max_batch_body_bytes: int = Field(
        default=8_388_608,
        ge=1024,
        description="Largest body for the batch endpoints (10,000 rows fit well inside).",
    )
    allocation_cache_seconds: float = Field(
        default=2.0,
        ge=0.0,
        le=3600.0,
        description="How long a process reuses an experiment's allocation for assignment.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        to_async_url(value.get_secret_value())  # raises a clear ValueError if unusable
        return value

    @property
    def async_database_url(self) -> URL:
        return to_async_url(self.database_url.get_secret_value())

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.get_backend_name() == "sqlite"
