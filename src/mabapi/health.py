"""Liveness and readiness probes (no key needed: load balancers call them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mabapi import __version__

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and serving; says nothing about the database."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    responses={503: {"description": "The database is not reachable."}},
)
async def ready(request: Request) -> JSONResponse:
    """Ready when the database answers a trivial query within two seconds."""
    engine: AsyncEngine = request.app.state.engine
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # any failure to reach the database means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable"},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    return JSONResponse({"status": "ready", "database": "ok"})
