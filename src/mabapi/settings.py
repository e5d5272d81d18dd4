"""All configuration, read once from the environment (prefix MABAPI_) and `.env`.

This is the only module that reads the environment (docs/ARCHITECTURE.md, import rule 6); everything
else receives a `Settings` instance.
"""

from __future__ import annotations

import re
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
    hot_paths: bool = Field(
        default=True,
        description="Serve assign, conversions, GET /allocations and POST /metrics/ without "
        "FastAPI's dependency solver (same answers, faster); false: FastAPI serves them.",
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's own OpenTelemetry spans, metrics and logs, for an "
        "OpenTelemetry SDK the process configures (e.g. `opentelemetry-instrument`). Off: "
        "FastAPI does not look for one on every request.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    max_batch_body_bytes: int = Field(
        default=8_388_608,
        ge=1024,
        description="Largest body for the batch endpoints (10,000 rows fit well inside).",
    )
    segments_max_per_experiment: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Segments one experiment may have: a write naming one more is a 409; an "
        "assign naming one more gets the split over all traffic (and says so).",
    )
    dashboard_summary_seconds: float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description="How long the dashboard reuses an experiment's summary (the list and "
        "its page show the same one); a write through the process drops it at once.",
    )
    segment_fit_seconds: float = Field(
        default=60.0,
        ge=0.0,
        le=86400.0,
        description="How long a process reuses an experiment's pooled segment model (fitted "
        "over every segment) for each segment's allocation and summary; a post of daily "
        "totals through the process refits it at once.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks reach loopback, link-local and private addresses (off: "
        "refused at creation and at every delivery, after DNS resolution and redirects).",
    )
    webhook_delivery: bool = Field(
        default=True,
        description="Run the webhook delivery loop in this process (one process of the "
        "deployment holds its lease at a time; the others stand by).",
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0.0, le=3600.0, description="How often the delivery loop looks for work."
    )
    webhook_watch_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=86400.0,
        description="How often running experiments are checked for events (recommendation "
        "changes, sample-ratio mismatches, guardrail breaches without traffic).",
    )
    webhook_watch_budget_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="A watch round starts no experiment after this long; the rest are "
        "watched first in the next round.",
    )
    webhook_change_hold_seconds: float = Field(
        default=120.0,
        ge=0.0,
        le=86400.0,
        description="A recommendation change is announced only once the watcher has seen "
        "it on watches at least this far apart, with nothing else seen in between.",
    )
    webhook_max_per_project: int = Field(
        default=10, ge=1, le=1000, description="Webhooks a project may have (409 beyond)."
    )
    public_url: str = Field(
        default="http://localhost:8000",
        description="Where the dashboard is reached: webhook payloads link to its pages.",
    )
    allocation_cache_seconds: float = Field(
        default=2.0,
        ge=0.0,
        le=3600.0,
        description="How long a process reuses an experiment's allocation for assignment.",
    )
    group_commit_max_batch: int = Field(
        default=500,
        ge=1,
        le=1000,
        description="Most assignments, conversions or daily rows one group commit writes "
        "(1: one transaction per request).",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_transaction_pooler: bool = Field(
        default=False,
        description="PostgreSQL is reached through a pooler in transaction mode (PgBouncer "
        "pool_mode=transaction): no statement is kept prepared across transactions.",
    )
    require_auth: bool = Field(
        default=False,
        description="Require an API key on every route but /health and /ready. Unset, an "
        "instance with no keys stays open (a warning is logged); once a key exists, keys "
        "are required anyway.",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        description="An admin key (32+ characters) for the default project, created or "
        "updated at start: how a deployment with MABAPI_REQUIRE_AUTH gets its first key.",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins (https://shop.example.com) whose web pages may "
        "call the client-scope routes (assign, conversions) from a browser. Empty: none. "
        "No cookies are ever allowed cross-origin; the client key goes in Authorization.",
    )
    key_cache_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=300.0,
        description="How long a process trusts what it read about a key: a key revoked "
        "through another process stops working within this time.",
    )
    rate_limit_per_second: float = Field(
        default=1000.0,
        ge=0.0,
        description="Requests per second allowed per API key (0: no limit); 429 beyond.",
    )
    rate_limit_burst: int = Field(
        default=2000, ge=1, description="Requests a key may make at once before the rate applies."
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://host:6379/0 to count rate limits across processes and replicas "
        "(default: each process counts alone).",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="json: one JSON object per line, with the request id; text: one "
        "readable line; auto: text when stderr is a terminal, json otherwise.",
    )
    metrics_max_experiments: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="Experiments that get per-variant allocation gauges on GET /metrics "
        "(caps label cardinality; the rest are counted in aggregate only).",
    )
    prometheus_multiproc_dir: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description="Set by `mabapi serve --workers N` (N > 1) so GET /metrics adds up "
        "every worker (prometheus-client multi-process mode).",
    )
    shutdown_timeout_seconds: float = Field(
        default=4.0,
        ge=0.0,
        le=60.0,
        description="On SIGTERM, in-flight requests get this long to finish.",
    )
    api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where the `mabapi experiments|metrics|allocations` commands send requests.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="The key those commands send (Authorization: Bearer)."
    )
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="Idle keep-alive; keep it above the load balancer's (nginx: 60 s).",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (part.strip() for part in value.split(",")):
            if not origin:
                continue
            if origin == "*" or not re.fullmatch(r"https?://[^/\s*]+", origin):
                raise ValueError(
                    f"MABAPI_CORS_ORIGINS: {origin!r} is not an origin: write each one as "
                    "scheme://host[:port], e.g. https://shop.example.com (no path, no *)"
                )
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        return [part.strip() for part in self.cors_origins.split(",") if part.strip()]

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        to_async_url(value.get_secret_value())  # raises a clear ValueError if unusable
        return value

    @field_validator(
        "bootstrap_admin_key", "redis_url", "prometheus_multiproc_dir", "api_key", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _check_bootstrap_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("bootstrap admin key must be at least 32 characters")
        return value

    @property
    def async_database_url(self) -> URL:
        return to_async_url(self.database_url.get_secret_value())

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.get_backend_name() == "sqlite"
