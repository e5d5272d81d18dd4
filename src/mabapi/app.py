"""Application factory: lifespan, error handling, middleware, every router."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi import __version__, observability
from mabapi.access import service as access
from mabapi.access.limits import LocalRateLimiter, RateLimiter, RedisRateLimiter
from mabapi.access.routes import router as access_router
from mabapi.access.service import KeyRing
from mabapi.allocations.cache import AnswerCache
from mabapi.allocations.routes import allocations_router
from mabapi.allocations.segments import SegmentFits
from mabapi.assignments import service as assignments
from mabapi.assignments.cache import AllocationCache, UnitMemo
from mabapi.assignments.routes import router as assignments_router
from mabapi.dashboard.routes import STATIC_DIR as DASHBOARD_STATIC
from mabapi.dashboard.routes import router as dashboard_router
from mabapi.dashboard.summaries import SummaryCache
from mabapi.db.engine import engine_from_settings, make_engine, make_sessionmaker
from mabapi.db.group_commit import GroupCommit
from mabapi.db.migrate import upgrade
from mabapi.db.transactions import background_transaction
from mabapi.deps import authorize
from mabapi.errors import AppError, Responses, documented_error
from mabapi.evaluation.routes import router as evaluation_router
from mabapi.experiments.owners import Owners
from mabapi.experiments.routes import experiments_router
from mabapi.guardrails.routes import router as guardrails_router
from mabapi.handlers import OUTAGE, install_error_handlers
from mabapi.health.routes import router as health_router
from mabapi.hot_paths import HotPaths
from mabapi.metrics import ingestion
from mabapi.metrics.routes import metrics_router
from mabapi.metrics.routes import reads_router as metric_reads_router
from mabapi.middleware import (
    BodySizeLimit,
    ClientCors,
    LazyStart,
    RequestContext,
    Utf8Json,
)
from mabapi.ofrep.routes import router as ofrep_router
from mabapi.reports.routes import router as reports_router
from mabapi.reports.watch import Watcher
from mabapi.runtime import Runtime, runtime_of
from mabapi.settings import Settings
from mabapi.webhooks.routes import router as webhooks_router
from mabapi.webhooks.runner import WatchThread, WebhookRunner
from mabapi.webhooks.service import DeliveryConfig

logger = logging.getLogger("mabapi")

# Answers any route can give (every status code is in the OpenAPI document).
COMMON_RESPONSES: Responses = {
    400: documented_error("A key was sent in the query string, or the request is malformed."),
    401: documented_error("No key, a malformed key, or an unknown or revoked key."),
    403: documented_error("The key's scope does not allow this route."),
    413: documented_error("The request body is larger than the configured limit."),
    415: documented_error("A JSON body that is not UTF-8 (UTF-16, UTF-32, another charset)."),
    429: documented_error("The key's rate limit is reached; retry after Retry-After seconds."),
    500: documented_error("A bug: the error is logged with the request id; never a trace."),
    503: documented_error("The database is unreachable; retry after Retry-After seconds."),
}

DESCRIPTION = """\
A self-hosted multi-armed bandit service for A/B tests. Post what each variant did
(`POST /metrics/`), ask how to split traffic next (`GET /allocations/{experiment_id}`),
and see how sure the model is (`GET /experiments/{id}/summary`).

Every error answers with one JSON shape:
`{"error": {"code": "...", "message": "...", "details": [...]}}`.
"""


_NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def create_app(settings: Settings) -> FastAPI:
    """Build the ASGI app for `settings`. Nothing here reads the environment."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_runtime(app, settings)
        _freeze_startup_objects()
        try:
            yield
        finally:
            await stop_runtime(app)

    app = FastAPI(
        title="mabapi",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(authorize)],
        responses=COMMON_RESPONSES,
        # Off unless asked for: otherwise FastAPI asks OpenTelemetry on every request
        # whether an SDK is configured (environment lookups; MABAPI_OPENTELEMETRY).
        telemetry=None if settings.opentelemetry else _NO_TELEMETRY,
    )
    app.state.settings = settings
    # The dashboard's summaries (dashboard/summaries.py): dropped by any write committed
    # through this process, as the allocation answers are.
    app.state.summaries = SummaryCache(
        settings.dashboard_summary_seconds, epoch=lambda: runtime_of(app).answers.epoch
    )
    install_error_handlers(app)
    # Innermost first: the hot paths see a size-checked body and are logged and counted.
    if settings.hot_paths:
        app.add_middleware(HotPaths)
    app.add_middleware(Utf8Json)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        max_batch_bytes=settings.max_batch_body_bytes,
    )
    app.add_middleware(
        RequestContext, on_finish=lambda: _observe_pool(app), on_status=OUTAGE.answered
    )
    if settings.cors_origin_list:
        app.add_middleware(ClientCors, origins=settings.cors_origin_list)
    # Outermost: a server or test client that never ran the lifespan still gets a runtime.
    app.add_middleware(LazyStart, start=lambda: start_runtime(app, settings, lazy=True))
    # Routes are matched in this order, one by one: the per-request hot paths first.
    app.include_router(assignments_router)
    app.include_router(ofrep_router)
    app.include_router(allocations_router)
    app.include_router(metrics_router)
    app.include_router(experiments_router)
    app.include_router(metric_reads_router)
    app.include_router(guardrails_router)
    app.include_router(reports_router)
    app.include_router(evaluation_router)
    app.include_router(health_router)
    app.include_router(access_router)
    app.include_router(webhooks_router)
    app.include_router(dashboard_router)
    app.mount("/ui/static", StaticFiles(directory=DASHBOARD_STATIC), name="dashboard-static")
    return app


_FROZEN = False


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, FastAPI's routes and models, scipy:
    about 190,000 objects) out of the cyclic garbage collector's reach, once per process.

    A full collection walks every tracked object; on a 2-core machine it took ~100 ms, and
    under load one came every few seconds: it was most of the p99 (measured with
    `gc.callbacks` while benchmarks/load.py offered a fixed rate). What start-up built
    lives as long as the process, so scanning it again and again finds nothing. Objects
    made later (caches, requests) are collected as before. Once per process, so a test
    process that starts many apps freezes only the first one's start-up.
    """
    global _FROZEN
    if not _FROZEN:
        gc.collect()
        gc.freeze()
        _FROZEN = True


async def start_runtime(app: FastAPI, settings: Settings, *, lazy: bool = False) -> None:
    """Open the `Runtime` requests use (engine, caches, writers, keys) on the running
    event loop, as `app.state.runtime`.

    Run by the lifespan; or, when the lifespan never ran (`TestClient(app)` without a
    `with` block, `uvicorn --lifespan off`), by `LazyStart` on the first request of each
    event loop. Lazily, connections are not pooled: nothing outlives a loop that a test
    client may close after one request, and migrations and the bootstrap key run once
    per process.
    """
    first = not lazy or not getattr(app.state, "started_once", False)
    engine = engine_from_settings(settings, pooled=not lazy)
    if settings.migrate_on_start and first:
        await upgrade(engine)
    sessionmaker = make_sessionmaker(engine)
    answers: AnswerCache[Any, Any] = AnswerCache(settings.allocation_cache_seconds)
    segment_fits = SegmentFits(settings.segment_fit_seconds, epoch=lambda: answers.epoch)
    assign_writer, convert_writer, ingest_writer = _writers(sessionmaker, answers, settings)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        answers=answers,
        allocation_cache=AllocationCache(
            sessionmaker,
            settings.allocation_cache_seconds,
            fits=segment_fits,
            max_segments=settings.segments_max_per_experiment,
        ),
        assignment_memo=UnitMemo(),
        conversion_memo=UnitMemo(),
        keyring=KeyRing(sessionmaker, settings.key_cache_seconds),
        owners=Owners(sessionmaker),
        rate_limiter=_rate_limiter(settings),
        assign_writer=assign_writer,
        convert_writer=convert_writer,
        ingest_writer=ingest_writer,
        segment_fits=segment_fits,
    )
    app.state.runtime = runtime
    if first:
        await _bootstrap_access(runtime)
    if settings.webhook_delivery and not lazy:
        # Not for a lazily started runtime: its event loop may end with the request.
        watcher = Watcher(
            hold_seconds=settings.webhook_change_hold_seconds,
            budget_seconds=settings.webhook_watch_budget_seconds,
        )
        runtime.webhooks = WebhookRunner(
            sessionmaker,
            DeliveryConfig(settings.public_url, settings.webhook_allow_private),
            poll_seconds=settings.webhook_poll_seconds,
            # Its own thread, event loop and two connections: its numbers never stall
            # delivery or requests.
            watcher=WatchThread(
                partial(
                    make_engine,
                    settings.async_database_url,
                    pool_size=2,
                    max_overflow=0,
                    transaction_pooler=settings.db_transaction_pooler,
                ),
                watcher.round,
                every_seconds=settings.webhook_watch_seconds,
            ),
        )
        runtime.webhooks.start()
    app.state.started_once = True
    app.state.runtime_loop = asyncio.get_running_loop()


async def stop_runtime(app: FastAPI) -> None:
    """Close what `start_runtime` opened (requests have drained: writers go last)."""
    runtime = runtime_of(app)
    if runtime.webhooks is not None:
        await runtime.webhooks.close()
    for writer in (runtime.assign_writer, runtime.convert_writer, runtime.ingest_writer):
        await writer.close()
    await runtime.allocation_cache.close()
    await runtime.answers.close()
    await runtime.rate_limiter.close()
    await runtime.engine.dispose()
    app.state.runtime_loop = None
    observability.process_exited(runtime.settings.prometheus_multiproc_dir)


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory` (used by `mabapi serve`)."""
    settings = Settings()
    observability.configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)


def _writers(
    sessionmaker: async_sessionmaker[AsyncSession],
    answers: AnswerCache[Any, Any],
    settings: Settings,
) -> tuple[GroupCommit[Any, Any], GroupCommit[Any, Any], GroupCommit[Any, Any]]:
    """The group-commit writers of the per-request writes (mabapi/db/group_commit.py):
    assignments, conversions and daily metrics."""
    common: dict[str, Any] = {
        "max_batch": settings.group_commit_max_batch,
    }
    if settings.is_sqlite:
        # One write transaction at a time in this process, queued here rather than in
        # SQLite's sleeping busy handler (mabapi/db/group_commit.py).
        write_lock = asyncio.Lock()
        common["one_writer"] = lambda: write_lock

    async def ingest(
        session: AsyncSession, reports: Sequence[ingestion.Report]
    ) -> list[AppError | None]:
        return await ingestion.ingest_many(
            session,
            reports,
            auto_create=settings.auto_create,
            max_segments=settings.segments_max_per_experiment,
        )

    assign_writer: GroupCommit[Any, Any] = GroupCommit(
        sessionmaker,
        assignments.assign_many,
        name="assign",
        observe_batch=observability.GROUP_COMMIT_BATCH.labels("assign").observe,
        **common,
    )
    convert_writer: GroupCommit[Any, Any] = GroupCommit(
        sessionmaker,
        assignments.convert_many,
        name="conversions",
        observe_batch=observability.GROUP_COMMIT_BATCH.labels("conversions").observe,
        **common,
    )
    # Posted daily totals show at once in this process's GET /allocations answers (a
    # client that posts then reads sees its post). Live exposures and conversions show
    # within MABAPI_ALLOCATION_CACHE_SECONDS: they arrive all the time, and dropping the
    # answers at each group commit would recompute every allocation on every request.
    ingest_writer: GroupCommit[Any, Any] = GroupCommit(
        sessionmaker,
        ingest,
        name="metrics",
        after_commit=answers.note_write,
        observe_batch=observability.GROUP_COMMIT_BATCH.labels("metrics").observe,
        # One transaction in flight per process: they all queue on the experiment's
        # ingestion lock anyway, and one at a time makes each batch larger.
        parallel=1,
        **common,
    )
    return assign_writer, convert_writer, ingest_writer


def _rate_limiter(settings: Settings) -> RateLimiter:
    if settings.redis_url is not None:
        return RedisRateLimiter(settings.redis_url.get_secret_value(), settings.rate_limit_burst)
    return LocalRateLimiter(settings.rate_limit_per_second or 1.0, settings.rate_limit_burst)


async def _bootstrap_access(runtime: Runtime) -> None:
    settings = runtime.settings
    if settings.bootstrap_admin_key is not None:
        async with background_transaction(runtime.sessionmaker) as session:
            await access.ensure_bootstrap_key(
                session, token=settings.bootstrap_admin_key.get_secret_value()
            )
    if not settings.require_auth:
        try:
            keys_exist = await runtime.keyring.any_keys()
        except Exception:  # the database may be down at start; requests will say so
            keys_exist = True
        if not keys_exist:
            logger.warning(
                "no API keys exist and MABAPI_REQUIRE_AUTH is off: this instance is OPEN to "
                "anyone who can reach it; create a key (`mabapi keys create --project "
                "default --scope admin`) or set MABAPI_REQUIRE_AUTH=true"
            )


def _observe_pool(app: FastAPI) -> None:
    engine = getattr(getattr(app.state, "runtime", None), "engine", None)
    pool = getattr(getattr(engine, "sync_engine", None), "pool", None)
    checked_out = getattr(pool, "checkedout", None)
    checked_in = getattr(pool, "checkedin", None)
    if callable(checked_out) and callable(checked_in):
        observability.observe_pool(checked_out(), checked_in())
