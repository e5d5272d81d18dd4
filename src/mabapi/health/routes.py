"""Liveness and readiness probes (no key needed: load balancers call them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from mabapi import __version__
from mabapi.access.models import Scope
from mabapi.db.engine import ping
from mabapi.deps import needs
from mabapi.observability import exposition
from mabapi.runtime import runtime_of

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0


@router.get("/health", dependencies=[needs(None)])
async def health() -> dict[str, str]:
    """The process is up and serving; says nothing about the database."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    dependencies=[needs(None)],
    responses={503: {"description": "The database is not reachable."}},
)
async def ready(request: Request) -> JSONResponse:
    """Ready when the database answers a trivial query within two seconds."""
    try:
        await ping(runtime_of(request.app).engine, timeout_s=READY_TIMEOUT_S)
    except Exception:  # any failure to reach the database means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable"},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    return JSONResponse({"status": "ready", "database": "ok"})


@router.get(
    "/metrics",
    dependencies=[needs(Scope.ADMIN, operator=True)],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
    tags=["observability"],
)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus scrape endpoint (admin key when keys are on). `POST /metrics/` is the
    ingestion call; this GET is for monitoring."""
    body, content_type = exposition(request.app.state.settings.prometheus_multiproc_dir)
    return Response(body, media_type=content_type)
