"""Error handlers: every AppError, validation error and unexpected exception as the API's
one error shape (code, message, details), never a stack trace; and the outage state
that answers 503 with Retry-After while the database is unreachable."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import sqlalchemy.exc as sa_exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mabapi.db.engine import is_unavailable
from mabapi.errors import AppError, RateLimitedError, error_body

logger = logging.getLogger("mabapi")


outage_logger = logging.getLogger("mabapi.outage")


RETRY_AFTER_S = "2"


# What a lost database raises (db/engine.py's is_unavailable sorts them from bugs).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class Outage:
    """One log line when the database becomes unreachable and one when it answers again,
    not one per request (an outage under load wrote hundreds of tracebacks a second)."""

    def __init__(self) -> None:
        self.since: float | None = None

    def down(self, error: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            outage_logger.warning(
                "database unreachable (%s): answering 503 with Retry-After until it is back",
                type(error).__name__,
            )

    def answered(self, status: int, template: str) -> None:
        """After any request that reached the database and did not fail for it."""
        if self.since is not None and status < 500 and template not in NO_DATABASE_ROUTES:
            outage_logger.warning(
                "database reachable again after %.1f s", time.monotonic() - self.since
            )
            self.since = None


NO_DATABASE_ROUTES = frozenset({"/health", "/metrics", "unmatched"})


OUTAGE = Outage()


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_response(error: RequestValidationError) -> JSONResponse:
    details = []
    for item in error.errors():
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        if item.get("type") == "json_invalid":
            message = "request body is not valid JSON: " + str(
                item.get("ctx", {}).get("error", message)
            )
        elif item.get("type") == "missing":
            message = "this field is required"
        elif item.get("type") == "extra_forbidden":
            message = "unknown field: remove it (see the schema at /docs)"
        details.append({"field": _location(tuple(item.get("loc", ()))), "message": message})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    if len(details) > 5:
        summary += f"; and {len(details) - 5} more"
    return JSONResponse(
        error_body("invalid_request", summary or "invalid request", details), status_code=422
    )


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every documented method of the route templates that match `path`."""
    patterns: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        app.state, "method_patterns", None
    )
    if patterns is None:
        patterns = []
        for template, operations in app.openapi()["paths"].items():
            regex = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
            patterns.append((re.compile(f"^{regex}$"), {m.upper() for m in operations}))
        app.state.method_patterns = patterns
    methods: set[str] = set()
    for pattern, operations in patterns:
        if pattern.match(path):
            methods |= operations
    return sorted(methods)


# OFREP's evaluation paths answer errors in the protocol's shape.
OFREP_EVALUATE = "/ofrep/v1/evaluate/flags"


def _ofrep_key(request: Request) -> str | None:
    path = request.url.path
    rest = path[len(OFREP_EVALUATE) + 1 :] if path.startswith(OFREP_EVALUATE + "/") else ""
    return rest or None


def _ofrep_error(request: Request, status: int, code: str, details: str) -> JSONResponse:
    body: dict[str, Any] = {"errorCode": code, "errorDetails": details}
    key = _ofrep_key(request)
    if key is not None:
        body = {"key": key, **body}
    return JSONResponse(body, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, error: AppError) -> Response:
        if request.url.path.startswith(OFREP_EVALUATE):
            code = getattr(error, "error_code", None)
            if code is not None:
                return _ofrep_error(request, error.status_code, code, error.message)
            if error.status_code == 404:
                return _ofrep_error(request, 404, "FLAG_NOT_FOUND", error.message)
            if error.status_code == 400:  # a malformed request (a key in the query string...)
                return _ofrep_error(request, 400, "GENERAL", error.message)
        if error.status_code == 401 and request.url.path.startswith("/ui"):
            return RedirectResponse("/ui/login", status_code=303)  # a browser: log in
        headers: dict[str, str] | None = None
        if error.status_code == 503:
            headers = {"Retry-After": RETRY_AFTER_S}
        elif isinstance(error, RateLimitedError):
            headers = {"Retry-After": str(error.retry_after)}
        elif error.status_code == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="mabapi"'}
        return JSONResponse(
            error_body(error.code, error.message, error.details),
            status_code=error.status_code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        if request.url.path.startswith(OFREP_EVALUATE):
            problems = error.errors()
            where = {str(p.get("loc", ("",))[0]) for p in problems}
            if "path" in where:  # a key no experiment can have
                return _ofrep_error(request, 404, "FLAG_NOT_FOUND", "no such flag")
            # Not JSON, or no JSON object at all: PARSE_ERROR; a context of the wrong shape:
            # INVALID_CONTEXT.
            parse = any(
                p.get("type") == "json_invalid" or tuple(p.get("loc", ())) == ("body",)
                for p in problems
            )
            unit_missing = any(
                p.get("type") == "missing"
                and tuple(p.get("loc", ()))
                in {("body", "context"), ("body", "context", "targetingKey")}
                for p in problems
            )
            detail = "; ".join(
                f"{_location(tuple(p.get('loc', ())))}: {p.get('msg')}" for p in problems
            )
            code = (
                "PARSE_ERROR"
                if parse
                else "TARGETING_KEY_MISSING"
                if unit_missing
                else "INVALID_CONTEXT"
            )
            return _ofrep_error(request, 400, code, detail)
        return _validation_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = str(error.detail)
        headers = getattr(error, "headers", None)
        if error.status_code == 400 and request.url.path.startswith(OFREP_EVALUATE):
            return _ofrep_error(request, 400, "PARSE_ERROR", message)
        if error.status_code == 404 and message == "Not Found":
            message = "no such route; see /docs for the API"
        if error.status_code == 405:
            # Starlette names only the first route that matched the path; list them all.
            allowed = _allowed_methods(request.app, request.url.path)
            headers = {"Allow": ", ".join(allowed)}
            message = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
        return JSONResponse(
            error_body(codes.get(error.status_code, "http_error"), message),
            status_code=error.status_code,
            headers=headers,
        )

    @app.exception_handler(sa_exc.IntegrityError)
    async def _integrity(_request: Request, error: sa_exc.IntegrityError) -> JSONResponse:
        # Reached only when a concurrent request won a race (e.g. two creates of one id).
        logger.info("integrity conflict: %s", type(error.orig).__name__)
        return JSONResponse(
            error_body("conflict", "the request conflicts with a concurrent change; retry it"),
            status_code=409,
        )

    async def _database_error(_request: Request, error: Exception) -> JSONResponse:
        # Registered per class, so Starlette's ExceptionMiddleware answers and the
        # connection is kept: the catch-all Exception handler answers from
        # ServerErrorMiddleware, which re-raises after sending, so uvicorn logged a
        # traceback per request and closed the socket (clients saw resets, not 503s).
        if is_unavailable(error):
            OUTAGE.down(error)
            return JSONResponse(
                error_body("service_unavailable", "the database is unreachable; retry shortly"),
                status_code=503,
                headers={"Retry-After": RETRY_AFTER_S},
            )
        logger.exception("unhandled error")
        return _internal_error()

    for database_error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(database_error, _database_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        if is_unavailable(error):
            return await _database_error(request, error)
        logger.exception("unhandled error")
        return _internal_error()


def _internal_error() -> JSONResponse:
    return JSONResponse(
        error_body("internal_error", "unexpected server error; it has been logged"),
        status_code=500,
    )
